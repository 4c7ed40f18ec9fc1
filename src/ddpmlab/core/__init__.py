"""ddpmlab.core: the science. Arrays and tensors in, arrays and tensors out.

Schedules, the U-Net, the samplers, the training objective, step and loop, the checkpoint format,
metrics from features and the residual check. Nothing here reads params.yaml or knows where the
pipeline keeps its files, and nothing here imports from outside `ddpmlab.core`
(tests/test_layers.py enforces it).
"""
