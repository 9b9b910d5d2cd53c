"""Learning from feedback: the training set, the QLoRA worker, the gate and its report."""
