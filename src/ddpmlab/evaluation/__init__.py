"""ddpmlab.evaluation: FID/KID, precision/recall, the sampler sweep, memorization."""
