"""The names the library accepts, defined once.

The params schema builds its choices from these tuples and the functions check their arguments
against them, so adding a schedule or a sampler is one edit here plus its implementation.
This module imports nothing, so the schema can use it without pulling torch into a stage's deps.
"""

SCHEDULES = ("linear", "cosine")                 # schedule.make_betas
SAMPLERS = ("ddpm", "ddim")                      # sampling.SamplerSpec.sampler
VARIANCES = ("small", "large")                   # DDPM reverse variance: beta_tilde_t | beta_t
SPACINGS = ("linspace", "leading", "trailing")   # DDIM timestep spacings (sampling.ddim_timesteps)
PREDICTIONS = ("eps", "v")                       # what the network outputs
T_SAMPLINGS = ("uniform", "stratified")          # a training batch's t: independent | one per stratum
LR_DECAYS = ("none", "cosine")                   # after the warm-up: constant | half cosine to 0
DEVICES = ("auto", "cpu", "cuda")                # device.resolve_device
PRECISIONS = ("bf16", "autocast")                # device.FastDenoiser on CUDA (first = default)
