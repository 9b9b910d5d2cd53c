"""Models, the feedback store and adapters (built by the learning-loop issue)."""
