"""ddpmlab.model: the U-Net."""
