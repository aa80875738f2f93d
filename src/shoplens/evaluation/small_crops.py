"""Held-out low-resolution inputs for measuring the super-resolver: not its training code.

The super-resolver trains on inputs made by :func:`shoplens.training.super_resolution.degrade`
(torch: area / bilinear / bicubic downscaling, Gaussian blur, Gaussian noise, Pillow JPEG at
60-95). Measuring it on that generator's output would measure what it was fitted to, so the
test inputs come from here instead, code of its own with effects training never draws: Pillow's
Lanczos, box and Hamming kernels, a phone's sharpening (unsharp mask), noise that grows with
brightness as a sensor's shot noise does, and JPEG with 4:2:0 chroma subsampling at 40-85.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageFilter

KERNELS = (Image.Resampling.LANCZOS, Image.Resampling.BOX, Image.Resampling.HAMMING)


def shrink_like_a_phone(hr: torch.Tensor, scale: int, rng: np.random.Generator) -> torch.Tensor:
    """``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, H/scale, W/scale)``: each photo downscaled by a
    kernel drawn from :data:`KERNELS`, sharpened half the time, with shot noise, then JPEG."""
    return torch.stack([_one(image, scale, rng) for image in hr])


def shrink_cleanly(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The same downscale with Lanczos only: no sharpening, noise or JPEG."""
    return torch.stack([_resize(image, scale, Image.Resampling.LANCZOS)[1] for image in hr])


def _resize(image: torch.Tensor, scale: int, kernel) -> tuple[Image.Image, torch.Tensor]:
    pixels = (image.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    photo = Image.fromarray(pixels)
    small = photo.resize((photo.width // scale, photo.height // scale), kernel)
    return small, _tensor(small)


def _tensor(photo: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255).permute(2, 0, 1)


def _one(image: torch.Tensor, scale: int, rng: np.random.Generator) -> torch.Tensor:
    small, _ = _resize(image, scale, KERNELS[int(rng.integers(len(KERNELS)))])
    if rng.random() < 0.5:
        small = small.filter(
            ImageFilter.UnsharpMask(radius=1, percent=int(rng.integers(40, 120)), threshold=2)
        )
    x = np.asarray(small, dtype=np.float32) / 255
    x = x + rng.normal(0, 1, x.shape) * np.sqrt(x + 1e-3) * rng.uniform(0, 0.03)
    noisy = Image.fromarray((np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, "JPEG", quality=int(rng.integers(40, 86)), subsampling=2)
    return _tensor(Image.open(buffer).convert("RGB"))
