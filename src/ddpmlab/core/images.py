"""Image array conventions, grids and animations.

Arrays on disk are uint8 [N, H, W, C] (exact, compact, what FID consumes), C = 3 for colour and
C = 1 for grey data (MNIST, Fashion-MNIST: one channel stays one channel end to end); the model
sees float32 [N, C, H, W] in [-1, 1]. `to_model` and `to_uint8` are the only conversions between them.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ddpmlab.core.files import atomic_path


def to_model(x_uint8: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, C] -> float32 [N, C, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(x_uint8)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [N, C, H, W] in [-1, 1] (clipped) -> uint8 [N, H, W, C], rounding to nearest."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid(images: np.ndarray, ncol: int | None = None, pad: int = 2, scale: int = 1, bg: int = 255) -> Image.Image:
    """Tile uint8 [N, H, W, C] (C = 3: RGB, C = 1: grey, mode L) into one PIL image, `ncol` per row (default: near square)."""
    n, h, w, channels = images.shape
    if channels not in (1, 3):
        raise ValueError(f"grid expects uint8 [N, H, W, 1 or 3], got {images.shape}")
    ncol = ncol or int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, channels), bg, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, ncol)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = im
    out = Image.fromarray(canvas[..., 0] if channels == 1 else canvas)
    if scale > 1:
        out = out.resize((out.width * scale, out.height * scale), Image.NEAREST)
    return out


def save_gif(frames: list[Image.Image], path, frame_ms: int = 100, last_ms: int = 1500) -> None:
    """An animated GIF that loops forever, holding the last frame for `last_ms`.

    The bytes depend only on the frames (Pillow's GIF writer stores no time stamp, and its palette
    choice is deterministic), so equal trajectories give equal files and DVC sees no change.
    """
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    durations = [frame_ms] * (len(frames) - 1) + [last_ms]
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
