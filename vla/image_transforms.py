"""Image conventions shared by training and inference, done in torch (no torchvision ops).

Training uses a random resized crop at ~90% area plus a small colour jitter; evaluation uses
the matching centre crop. Both return float images (B, N, 3, size, size) in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, N, H, W, 3) -> float (B, N, 3, H, W) in [0, 1]."""
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8, got {images.dtype}")
    if images.ndim != 5 or images.shape[-1] != 3:
        raise ValueError(f"images must be (B, N, H, W, 3), got {tuple(images.shape)}")
    return images.permute(0, 1, 4, 2, 3).float() / 255.0


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    b, n, c, h, w = x.shape
    if (h, w) == (size, size):
        return x
    y = F.interpolate(
        x.reshape(b * n, c, h, w), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return y.reshape(b, n, c, size, size)


def center_crop(x: torch.Tensor, area: float, size: int) -> torch.Tensor:
    """Crop the central `area` fraction (square) and resize to size x size."""
    h, w = x.shape[-2:]
    side = math.sqrt(area)
    ch, cw = max(1, round(h * side)), max(1, round(w * side))
    top, left = (h - ch) // 2, (w - cw) // 2
    return _resize(x[..., top : top + ch, left : left + cw], size)


def random_crop(x: torch.Tensor, area: float, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Same crop size as `center_crop`, at a random offset per sample (all cameras independent)."""
    b, n, c, h, w = x.shape
    side = math.sqrt(area)
    ch, cw = max(1, round(h * side)), max(1, round(w * side))
    tops = torch.randint(0, h - ch + 1, (b, n), generator=generator)
    lefts = torch.randint(0, w - cw + 1, (b, n), generator=generator)
    out = torch.empty(b, n, c, ch, cw, dtype=x.dtype)
    for i in range(b):
        for j in range(n):
            t, lft = int(tops[i, j]), int(lefts[i, j])
            out[i, j] = x[i, j, :, t : t + ch, lft : lft + cw]
    return _resize(out, size)


def color_jitter(x: torch.Tensor, strength: float = 0.1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness and contrast per image, each within +-strength."""
    b, n = x.shape[:2]
    bright = 1.0 + (torch.rand(b, n, 1, 1, 1, generator=generator) * 2 - 1) * strength
    contrast = 1.0 + (torch.rand(b, n, 1, 1, 1, generator=generator) * 2 - 1) * strength
    mean = x.mean(dim=(2, 3, 4), keepdim=True)
    return ((x - mean) * contrast + mean * bright).clamp(0.0, 1.0)
