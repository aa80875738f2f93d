"""Turn catalog shots into what a shopper's phone photo of the same product looks like.

Each op models one gap between a catalog shot and a shopper photo: framing (crop, rotation,
flip), a real scene behind the product (clutter), lighting (jitter, white-balance tint), focus
(blur), chat-app compression (JPEG). Ops run on one small tensor at the output size, as CPU time
per image bounds training speed (benchmarks/augment_throughput.py). Draws use torch's RNG (or a
given generator), so Lightning's and per-worker seeding apply.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as nnf
from torchvision.transforms.v2 import functional as F

from shoplens.data.draws import jpeg, uniform
from shoplens.data.photo_crops import CropSettings

Stats = Sequence[float]  # per-channel mean or std
BG_TOLERANCE = 0.12  # |pixel - backdrop| per channel (0..1) still counted as backdrop
UNIFORM_SPREAD = 10 / 255  # border MAD above this: not a studio backdrop, leave it alone


def _to_chw(image: np.ndarray) -> torch.Tensor:
    """HWC uint8 array (a read-only memmap row is fine: we copy) -> CHW uint8 tensor."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HWC image with 3 channels, got shape {image.shape}")
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def _backdrop(img: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Median border colour in [0, 1] and whether the border is a near-uniform backdrop."""
    border = torch.cat([img[:, 0], img[:, -1], img[:, :, 0], img[:, :, -1]], dim=1).float() / 255
    colour = border.median(dim=1).values
    spread = (border - colour[:, None]).abs().median(dim=1).values.max()
    return colour[:, None, None], bool(spread <= UNIFORM_SPREAD)


def _backdrop_alpha(near: torch.Tensor) -> torch.Tensor:
    """1 on backdrop pixels reachable straight from an edge (cumprods, not a flood fill: enclosed
    white stays product), 0.5 on the 1-px ring around them (no old-backdrop halo), else 0."""
    m = near.float()
    bg = m.cumprod(1) + m.flip(1).cumprod(1).flip(1) + m.cumprod(0) + m.flip(0).cumprod(0).flip(0)
    p = nnf.pad(bg.clamp_(max=1), (1, 1, 1, 1))  # 4-neighbour dilation: 1/4 of max_pool2d's cost
    ring = torch.stack([p[1:-1, :-2], p[1:-1, 2:], p[:-2, 1:-1], p[2:, 1:-1]]).amax(0)
    return (bg + ring) / 2


def _clutter(size: int, g: torch.Generator | None) -> torch.Tensor:
    """A random scene (torchvision has no such op): upsampled low-res noise gives walls and
    tables, rectangles give hard edges (shelves), grain gives sensor noise; all cheap."""
    k = int(torch.randint(2, 9, (), generator=g))
    low = torch.rand(1, 3, k, k, generator=g)
    low = torch.lerp(low.mean(1, keepdim=True), low, uniform(g, 0.2, 0.8))  # rooms are greyish
    tex = nnf.interpolate(low, (size, size), mode="bilinear")[0]
    for _ in range(int(torch.randint(0, 4, (), generator=g))):
        y0, y1 = sorted(torch.randint(0, size + 1, (2,), generator=g).tolist())
        x0, x1 = sorted(torch.randint(0, size + 1, (2,), generator=g).tolist())
        tex[:, y0:y1, x0:x1] = torch.rand(3, 1, 1, generator=g)
    return tex.add_((torch.rand(1, size, size, generator=g) - 0.5) * 0.1).clamp_(0, 1)


@dataclass
class AugmentationConfig:
    """How a shopper's photo differs from a catalog shot (the ``augmentation`` config group).
    The defaults switch every effect off, as ``conf/augmentation/base.yaml`` does."""

    enabled: bool = False
    scale: tuple[float, float] = (1.0, 1.0)  # random resized crop area
    rotation: float = 0.0  # degrees
    hflip: bool = False
    color_jitter: float = 0.0  # brightness/contrast/saturation strength
    tint: float = 0.0  # white-balance cast strength
    background_clutter_p: float = 0.0  # paste onto a noisy, textured background
    blur_p: float = 0.0
    jpeg_p: float = 0.0
    jpeg_quality: tuple[int, int] = (90, 90)
    # Copy-paste onto real train backgrounds, cropped as the query pipeline crops (see
    # data/photo_crops.py); probability 0 keeps only the catalog-shot effects above.
    copy_paste: CropSettings = field(default_factory=CropSettings)


class ShopperPhoto:
    """Catalog shot (HWC uint8) -> shopper photo (float CHW in [0, 1]), strengths from ``cfg``."""

    def __init__(self, cfg: AugmentationConfig, image_size: int):
        self.scale, self.quality = tuple(map(float, cfg.scale)), tuple(map(int, cfg.jpeg_quality))
        self.rotation, self.hflip = float(cfg.rotation), bool(cfg.hflip)
        self.jitter, self.tint = float(cfg.color_jitter), float(cfg.tint)
        self.clutter_p, self.blur_p = float(cfg.background_clutter_p), float(cfg.blur_p)
        self.jpeg_p, self.size = float(cfg.jpeg_p), int(image_size)

    def __call__(self, image: np.ndarray, g: torch.Generator | None = None) -> torch.Tensor:
        # One intra-op thread: on tensors this small OpenMP wake-ups cost more than they save (2
        # threads: 7-17 ms/img vs 1.4). Covers num_workers=0 and main-process evaluation.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._apply(image, g)
        finally:
            torch.set_num_threads(threads)

    def _apply(self, image: np.ndarray, g: torch.Generator | None) -> torch.Tensor:
        u8 = _to_chw(image)
        c, plain = _backdrop(u8)  # backdrop colour (3, 1, 1) in [0, 1]
        _, h, w = u8.shape  # random resized crop = distance and framing
        area = h * w * uniform(g, *self.scale)
        ratio = math.exp(uniform(g, math.log(3 / 4), math.log(4 / 3)))
        ratio = min(max(ratio, area / h**2), w**2 / area)  # fit the crop, keep its area
        ch = min(h, max(1, round(math.sqrt(area / ratio))))
        cw = min(w, max(1, round(math.sqrt(area * ratio))))
        top, left = (int(torch.randint(0, n + 1, (), generator=g)) for n in (h - ch, w - cw))
        u8 = F.resized_crop(u8, top, left, ch, cw, [self.size, self.size], antialias=True)
        img = u8.float().div_(255)
        if self.rotation > 0:
            # Corners take the backdrop colour (clutter may replace it). Rotating the offset from
            # it with zero padding keeps the seam smooth; v2's fill= leaves a dark dashed seam.
            angle = uniform(g, -self.rotation, self.rotation)
            img = F.rotate(img - c, angle, interpolation=F.InterpolationMode.BILINEAR).add_(c)
        if self.hflip and float(torch.rand((), generator=g)) < 0.5:
            img = F.horizontal_flip(img)
        if plain and float(torch.rand((), generator=g)) < self.clutter_p:
            near = (img - c).abs().amax(0) <= BG_TOLERANCE
            img = torch.lerp(img, _clutter(self.size, g), _backdrop_alpha(near))
        if self.jitter > 0:  # lighting; v2's ColorJitter kernels with our own draws
            lo, hi = max(0.0, 1 - self.jitter), 1 + self.jitter
            img = F.adjust_brightness(img, uniform(g, lo, hi))
            img = F.adjust_contrast(img, uniform(g, lo, hi))
            img = F.adjust_saturation(img, uniform(g, lo, hi))
        if self.tint > 0:
            # A white-balance cast, not v2's hue rotation: phone cameras do this under warm/cool
            # light, a red dress stays red, and it costs ~1/50 of adjust_hue (0.8 ms at 96 px).
            gains = 1 + self.tint * (2 * torch.rand(3, generator=g) - 1)
            img = (img * (gains / gains.mean())[:, None, None]).clamp_(0, 1)
        if float(torch.rand((), generator=g)) < self.blur_p:  # focus/motion blur
            sigma = uniform(g, 0.3, 1.5) * self.size / 96
            img = F.gaussian_blur(img, [2 * math.ceil(2 * sigma) + 1] * 2, [sigma, sigma])
        if float(torch.rand((), generator=g)) < self.jpeg_p:  # chat-app recompression
            quality = int(torch.randint(self.quality[0], self.quality[1] + 1, (), generator=g))
            img = jpeg(img.mul(255).round_().to(torch.uint8), quality).float().div_(255)
        return img


class _Normalised:
    """Picklable (for DataLoader workers) pairing of an image source with mean/std."""

    def __init__(self, photo: ShopperPhoto | None, size: int, mean: Stats, std: Stats):
        self.photo, self.size = photo, int(size)
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if self.photo is not None:
            return F.normalize(self.photo(image), self.mean, self.std)
        img = _to_chw(image)
        if img.shape[1:] != (self.size, self.size):
            img = F.resize(img, [self.size, self.size], antialias=True)
        return F.normalize(img.float().div_(255), self.mean, self.std)


def build_train_transform(aug_cfg: AugmentationConfig, image_size: int, mean: Stats, std: Stats):
    """Random shopper-photo transform for training; ``enabled=False`` is the eval transform."""
    if not aug_cfg.enabled:
        return build_eval_transform(image_size, mean, std)
    return _Normalised(ShopperPhoto(aug_cfg, image_size), image_size, mean, std)


def build_eval_transform(image_size: int, mean: Stats, std: Stats):
    """Deterministic resize + normalise, for validation, the index and clean queries."""
    return _Normalised(None, image_size, mean, std)


def denormalize(t: torch.Tensor, mean: Stats, std: Stats) -> torch.Tensor:
    """Normalised (..., 3, H, W) float -> uint8 in [0, 255], for logging sample batches."""
    m, s = (torch.as_tensor(v, dtype=t.dtype, device=t.device).view(-1, 1, 1) for v in (mean, std))
    return (t * s + m).mul(255).round().clamp(0, 255).to(torch.uint8)
