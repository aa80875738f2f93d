"""Super-resolving a small crop before the embedder sees it (the small-photo work).

A crop whose longer side is under ``below`` pixels goes through the super-resolution network
once (``scale`` times its side); anything larger is never upscaled by it. Letterboxing then
brings either to the embedder's side as before. The network is any callable on ``(N, 3, h, w)``
tensors in [0, 1] (:class:`shoplens.models.super_resolution.SuperResolver`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image


class Upscaler:
    def __init__(self, network: Callable[[torch.Tensor], torch.Tensor], scale: int, below: int):
        if below < 1:
            raise ValueError(f"below must be a positive number of pixels, got {below}")
        self.network, self.scale, self.below = network, int(scale), int(below)

    def needed(self, image: Image.Image) -> bool:
        return max(image.size) < self.below

    def __call__(self, image: Image.Image) -> Image.Image:
        """``image`` super-resolved if it is small, else ``image`` itself (never twice)."""
        if not self.needed(image):
            return image
        x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255)
        with torch.inference_mode():
            y = self.network(x.permute(2, 0, 1)[None])[0]
        pixels = (y.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        return Image.fromarray(pixels)
