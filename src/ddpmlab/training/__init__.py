"""ddpmlab.training: the training loop, its state, checkpoints and runtime."""
