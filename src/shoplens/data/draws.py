"""Small random draws and codecs shared by the training augmentations.

Draws use torch's RNG (or a given generator), so Lightning's per-worker seeding applies.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def uniform(g: torch.Generator | None, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def randint(g: torch.Generator | None, lo: int, hi: int) -> int:
    """An integer in [lo, hi], both ends included."""
    return int(torch.randint(lo, hi + 1, (), generator=g))


def chance(g: torch.Generator | None, p: float) -> bool:
    return float(torch.rand((), generator=g)) < p


def jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip of a uint8 CHW tensor via Pillow, not v2's ``jpeg``: its torchvision.io
    codecs are deprecated since 0.29 (removal announced) and absent before 0.20; same pixels
    here, ~0.1 ms slower at 96 px."""
    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=quality)
    return torch.from_numpy(np.array(Image.open(buf).convert("RGB"))).permute(2, 0, 1)
