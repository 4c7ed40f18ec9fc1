"""Device choice: `auto` means CUDA when available, else CPU."""

import torch

from .config import DEVICES
from .errors import ParamError


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise ParamError("device", name, f"one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device = cuda but no CUDA device is available; use auto or cpu")
    return torch.device(name)
