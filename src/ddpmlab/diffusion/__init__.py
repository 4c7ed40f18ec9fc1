"""ddpmlab.diffusion: noise schedules, the forward process and the DDPM/DDIM samplers."""
