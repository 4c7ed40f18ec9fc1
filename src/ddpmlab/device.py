"""Device choice (`auto` means CUDA when available, else CPU) and the CUDA fast path for sampling."""

import torch

DEVICES = ("auto", "cpu", "cuda")  # schema.DEVICES (train.device) and the stages' --device flag must agree


class DeviceError(RuntimeError):
    """The requested device cannot be used here; str(e) is one line saying what to use instead."""


def resolve_device(name: str) -> torch.device:
    """'auto' | 'cpu' | 'cuda' -> a torch.device; DeviceError (one line) when it is unknown or absent."""
    if name not in DEVICES:
        raise DeviceError(f"device {name!r} is unknown; allowed: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        raise DeviceError(f"device 'cuda' asked for, but no CUDA device is visible (torch {torch.__version__}, {built}); use auto or cpu")
    return torch.device(name)


class FastDenoiser(torch.nn.Module):
    """Wraps a trained U-Net for sampling on CUDA: bf16 autocast, channels_last, optional torch.compile.

    Outputs are returned in fp32, so the sampler's update arithmetic stays fp32. On the CPU it is
    a plain pass-through (fp32): CPU results stay bit-reproducible.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, compile: bool = False):
        super().__init__()
        self.cuda = device.type == "cuda"
        self.model = model.to(memory_format=torch.channels_last) if self.cuda else model
        # "reduce-overhead" uses CUDA graphs: removes the per-step launch cost of 1000-step sampling
        self.net = torch.compile(self.model, mode="reduce-overhead") if compile and self.cuda else self.model

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not self.cuda:
            return self.net(x, t)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return self.net(x.contiguous(memory_format=torch.channels_last), t).float()
