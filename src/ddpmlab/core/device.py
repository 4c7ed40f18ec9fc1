"""Device choice (`auto` means CUDA when available, else CPU) and the CUDA fast path for sampling."""

import copy
import os

import torch

from ddpmlab.core.errors import UserError
from ddpmlab.core.names import DEVICES, PRECISIONS


class DeviceError(UserError):
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


# the CUDA devices (torch indices) given to this run by an allocator, one per local process: "2" or "2,3"
CUDA_DEVICES = "DDPMLAB_CUDA_DEVICES"


def cuda_index(local_rank: int = 0) -> int:
    """The torch index of this process's GPU: the local_rank-th of CUDA_DEVICES when an allocator set it, else
    local_rank (one GPU per local process, in order)."""
    given = [int(i) for i in os.environ.get(CUDA_DEVICES, "").split(",") if i.strip()]
    if not given:
        return local_rank
    if local_rank >= len(given):
        raise DeviceError(f"{CUDA_DEVICES}={os.environ[CUDA_DEVICES]} gives {len(given)} GPU(s) but local process {local_rank} needs one")
    return given[local_rank]


class FastDenoiser(torch.nn.Module):
    """Wraps a trained U-Net for sampling on CUDA: bf16, channels_last, optional torch.compile.

    precision "autocast" runs bf16 autocast over the fp32 weights (GroupNorm and softmax in fp32, a cast
    before every conv); "bf16" runs a bf16 copy of the weights with no casts. Outputs are returned in
    fp32, so the sampler's update arithmetic stays fp32. On the CPU it is a plain pass-through (fp32):
    CPU results stay bit-reproducible.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, compile: bool = False, precision: str = "bf16",
                 channels_last: bool = True):
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is unknown; allowed: {', '.join(PRECISIONS)}")
        self.cuda = device.type == "cuda"
        self.bf16_weights = self.cuda and precision == "bf16"
        self.channels_last = self.cuda and channels_last
        if self.bf16_weights:
            model = copy.deepcopy(model).to(torch.bfloat16)
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model
        # "reduce-overhead" uses CUDA graphs: removes the per-step launch cost of 1000-step sampling
        self.net = torch.compile(self.model, mode="reduce-overhead") if compile and self.cuda else self.model

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not self.cuda:
            return self.net(x, t)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.bf16_weights:
            return self.net(x.to(torch.bfloat16), t).float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return self.net(x, t).float()
