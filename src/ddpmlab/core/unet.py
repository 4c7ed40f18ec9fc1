"""The DDPM U-Net (Ho et al. 2020, appendix B; the PixelCNN++-style backbone).

Residual blocks with GroupNorm and a sinusoidal time embedding added after the first conv,
self-attention at chosen resolutions, `num_res_blocks` blocks per resolution on the way down and
`num_res_blocks + 1` on the way up with skip connections. Predicts eps, shape [N, C, H, W].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    """The network's shape: all a checkpoint needs (besides weights) to rebuild it."""

    image_size: int                 # side of the square input, divisible by 2**(len(ch_mult)-1)
    in_channels: int = 3            # image channels (3 RGB, 1 greyscale); the output has as many
    ch: int = 32                    # base width
    ch_mult: tuple = (1, 2, 2, 2)   # width multiplier per resolution level
    num_res_blocks: int = 2         # residual blocks per level (num_res_blocks + 1 on the way up)
    attn_resolutions: tuple = (8,)  # feature-map sides with self-attention
    dropout: float = 0.0
    norm_groups: int = 8            # GroupNorm groups; divides every width ch * mult

    def __post_init__(self):
        # lists from JSON/YAML become tuples: hashable, and equal however the config was built
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))

    def to_dict(self) -> dict:
        """Plain data (lists, not tuples) for checkpoints loaded with weights_only=True."""
        d = asdict(self)
        d["ch_mult"], d["attn_resolutions"] = list(self.ch_mult), list(self.attn_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017 / DDPM) of timesteps t [N] -> [N, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (improved-diffusion's zero_module)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, via scaled_dot_product_attention."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, 1, c, h * w).transpose(-1, -2).unbind(1)  # each [N, 1, HW, C]
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch, g, drop = cfg.ch, cfg.norm_groups, cfg.dropout
        temb_dim = 4 * ch
        self.temb = nn.Sequential(nn.Linear(ch, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        # Encoder: remember the width of every skip connection
        self.down = nn.ModuleList()
        skips, cur, res = [ch], ch, cfg.image_size
        for level, mult in enumerate(cfg.ch_mult):
            for _ in range(cfg.num_res_blocks):
                block = nn.ModuleList([ResBlock(cur, ch * mult, temb_dim, drop, g)])
                cur = ch * mult
                if res in cfg.attn_resolutions:
                    block.append(AttnBlock(cur, g))
                self.down.append(block)
                skips.append(cur)
            if level != len(cfg.ch_mult) - 1:
                self.down.append(nn.ModuleList([Downsample(cur)]))
                skips.append(cur)
                res //= 2

        self.mid = nn.ModuleList([ResBlock(cur, cur, temb_dim, drop, g), AttnBlock(cur, g), ResBlock(cur, cur, temb_dim, drop, g)])

        # Decoder: num_res_blocks + 1 blocks per level, each eating one skip
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.ch_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(cur + skips.pop(), ch * mult, temb_dim, drop, g)])
                cur = ch * mult
                if res in cfg.attn_resolutions:
                    block.append(AttnBlock(cur, g))
                self.up.append(block)
            if level != 0:
                self.up.append(nn.ModuleList([Upsample(cur)]))
                res *= 2

        self.norm_out = nn.GroupNorm(g, cur)
        self.conv_out = nn.Conv2d(cur, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @staticmethod
    def _run(block: nn.ModuleList, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        for layer in block:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: [N, C, H, W] noisy images, t: [N] 0-based timesteps -> predicted eps [N, C, H, W]."""
        temb = self.temb(timestep_embedding(t, self.cfg.ch).to(x.dtype))  # a no-op unless the weights are bf16 (sampling)
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            h = self._run(block, h, temb)
            hs.append(h)
        h = self._run(self.mid, h, temb)
        for block in self.up:
            if isinstance(block[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(block, h, temb)
        return self.conv_out(F.silu(self.norm_out(h)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
