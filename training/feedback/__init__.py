"""The feedback store: every answer given, its ratings and corrections, curated answers."""
