"""Models and what they learn from: serving (generators, prompts, citations), the feedback
store, the training set, QLoRA fine-tuning, the eval gate and the adapter registry."""
