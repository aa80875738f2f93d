"""Super-resolution: a small image (a thumbnail, a product crop of a few pixels) to ``scale``
times its side, before the embedder sees it.

A dedicated small network rather than a decoder over the pretrained backbone: the backbone's
first feature map is already 1/2 of its input (1/32 at the end), which is what a 12-px crop
cannot afford to lose, and on 2 CPU cores an ESPCN-sized network (Shi et al. 2016, sub-pixel
convolution) costs well under a millisecond on such crops. It learns a *residual* over bicubic
upscaling (Kim et al. 2016, VDSR): at initialisation it is bicubic, so it can only add what the
catalog's photos teach it. Whether it beats simply training the embedder on small images is
what benchmarks/small_photos.py decides.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SCALES = (2, 3, 4)


class SuperResolver(nn.Module):
    """``(N, 3, h, w)`` RGB in [0, 1] -> ``(N, 3, scale*h, scale*w)`` in [0, 1]."""

    def __init__(self, scale: int = 2, features: int = 64, hidden: int = 32):
        super().__init__()
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale}")
        self.scale = scale
        self.body = nn.Sequential(
            nn.Conv2d(3, features, 5, padding=2), nn.Tanh(),
            nn.Conv2d(features, hidden, 3, padding=1), nn.Tanh(),
            nn.Conv2d(hidden, 3 * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )  # fmt: skip
        nn.init.zeros_(self.body[-2].weight)  # starts as plain bicubic
        nn.init.zeros_(self.body[-2].bias)

    def bicubic(self, x: torch.Tensor) -> torch.Tensor:
        # An explicit size, not scale_factor: torch.export cannot prove trunc(2.0 * h) == 2 * h
        # for a dynamic h, and the registered model exports this with any crop size.
        size = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.bicubic(x) + self.body(x)).clamp(0, 1)
