"""Image array conventions and grids.

Arrays on disk are uint8 [N, H, W, 3] (exact, compact, what FID consumes); the model sees
float32 [N, 3, H, W] in [-1, 1]. These two functions are the only conversions between them.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_model(x_uint8: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(x_uint8)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [N, 3, H, W] in [-1, 1] (clipped) -> uint8 [N, H, W, 3], rounding to nearest."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid(images: np.ndarray, ncol: int | None = None, pad: int = 2, scale: int = 1, bg: int = 255) -> Image.Image:
    """Tile uint8 [N, H, W, 3] into one PIL image, `ncol` per row (default: near square)."""
    n, h, w, _ = images.shape
    ncol = ncol or int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), bg, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, ncol)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = im
    out = Image.fromarray(canvas)
    if scale > 1:
        out = out.resize((out.width * scale, out.height * scale), Image.NEAREST)
    return out
