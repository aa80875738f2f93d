"""Training the super-resolver on the catalog's own photos, degraded the way phones degrade.

High-resolution targets are catalog photos at ``hr_size``; their inputs are made on the fly
by :func:`degrade`: a downscale by ``scale`` with a kernel drawn from several (area, bilinear,
bicubic: what browsers, phones and screenshot tools use), focus blur, sensor noise and JPEG.
Validation reports PSNR and SSIM (torchmetrics) of the network and of bicubic upscaling on the
same degraded inputs: the gate compares the two.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)
from torchvision.transforms.v2.functional import gaussian_blur

from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, CACHE_INDEX, PATH, SPLIT, read_manifest
from shoplens.models.super_resolution import SuperResolver

KERNELS = ("area", "bilinear", "bicubic")


def native_side(catalog_dir: str | Path, sample: int = 200) -> int:
    """The catalog's photos' longer side as their files hold it (median of a train sample;
    headers only), capped at the cache side: targets sharper than the source would teach the
    network to invent detail. Fashion-MNIST: 28 px, cached at 64."""
    catalog = Path(catalog_dir)
    manifest = read_manifest(catalog)
    paths = manifest[manifest[SPLIT] == "train"][PATH].head(sample)
    cache_side = int(open_cache(catalog / CACHE_FILE).shape[1])
    sides = [max(Image.open(p).size) for p in paths]
    return min(cache_side, int(np.median(sides))) if sides else cache_side


def catalog_photos(catalog_dir: str | Path, split: str, n: int, side: int, seed: int = 0):
    """Up to ``n`` of ``split``'s cached photos (a seeded sample), area-resized to ``side``:
    ``(N, 3, side, side)`` float in [0, 1]."""
    catalog = Path(catalog_dir)
    manifest = read_manifest(catalog)
    rows = manifest[manifest[SPLIT] == split][CACHE_INDEX].to_numpy()
    if len(rows) > n:
        rows = np.random.default_rng(seed).choice(rows, n, replace=False)
    x = torch.from_numpy(np.asarray(open_cache(catalog / CACHE_FILE)[np.sort(rows)]))
    return F.interpolate(x.permute(0, 3, 1, 2).float() / 255, size=(side, side), mode="area")


@dataclass(frozen=True)
class Degradation:
    blur: float = 0.8  # largest Gaussian sigma, in low-resolution pixels
    noise: float = 0.02  # largest noise sigma, in [0, 1] units
    jpeg: tuple[int, int] = (60, 95)  # quality range; (100, 100): none


def degrade(
    hr: torch.Tensor, scale: int, rng: np.random.Generator, how: Degradation
) -> torch.Tensor:
    """``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, H/scale, W/scale)``, each image its own draw."""
    size = (hr.shape[-2] // scale, hr.shape[-1] // scale)
    out = []
    for image in hr:
        kernel = KERNELS[int(rng.integers(len(KERNELS)))]
        antialias = kernel != "area"
        x = F.interpolate(image[None], size=size, mode=kernel, antialias=antialias)
        sigma = rng.uniform(0, how.blur)
        if sigma > 0.1:
            x = gaussian_blur(x, kernel_size=[3, 3], sigma=[sigma, sigma])
        noise = rng.normal(0, rng.uniform(0, how.noise), tuple(x.shape)).astype(np.float32)
        x = (x + torch.from_numpy(noise)).clamp(0, 1)
        low, high = how.jpeg
        if low < 100:
            quality = int(rng.integers(low, high + 1))
            x = _jpeg(x[0], quality)[None]
        out.append(x[0])
    return torch.stack(out)


def _jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """Through a JPEG of that quality and back (Pillow: torchvision's codecs are deprecated)."""
    pixels = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    decoded = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(decoded).permute(2, 0, 1)


class SuperResolutionModule(L.LightningModule):
    def __init__(self, scale: int = 2, features: int = 64, hidden: int = 32, lr: float = 1e-3,
                 degradation: Degradation | None = None, seed: int = 0):  # fmt: skip
        super().__init__()
        self.save_hyperparameters(ignore=["degradation"])
        self.network = SuperResolver(scale, features, hidden)
        self.degradation = degradation or Degradation()
        self.rng = np.random.default_rng(seed)
        self._val: list[dict[str, float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)

    def training_step(self, batch, batch_idx):
        hr = batch[0] if isinstance(batch, list | tuple) else batch
        lr_images = degrade(hr, self.network.scale, self.rng, self.degradation)
        loss = F.l1_loss(self.network(lr_images), hr)
        self.log("train/l1", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        hr = batch[0] if isinstance(batch, list | tuple) else batch
        # The same inputs every epoch: a fixed draw per batch.
        lr_images = degrade(
            hr, self.network.scale, np.random.default_rng(batch_idx), self.degradation
        )
        self._val.append(compare_with_bicubic(self.network, lr_images, hr) | {"n": len(hr)})

    def on_validation_epoch_end(self):
        if not self._val:
            return
        n = sum(v["n"] for v in self._val)
        for key in ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim"):
            self.log(f"val/{key}", sum(v[key] * v["n"] for v in self._val) / n)
        self._val.clear()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


@torch.no_grad()
def compare_with_bicubic(network: SuperResolver, lr_images: torch.Tensor, hr: torch.Tensor) -> dict:
    """PSNR (dB) and SSIM of the network and of bicubic upscaling against the targets."""
    was_training = network.training
    network.eval()
    ours = network(lr_images)
    bicubic = network.bicubic(lr_images).clamp(0, 1)
    network.train(was_training)

    def psnr(x):  # the mean of per-image PSNR, as super-resolution papers report it
        return float(peak_signal_noise_ratio(x, hr, data_range=1.0, reduction="none",
                                             dim=(1, 2, 3)).mean())  # fmt: skip

    def ssim(x):
        return float(structural_similarity_index_measure(x, hr, data_range=1.0))

    return {"psnr": psnr(ours), "ssim": ssim(ours),
            "bicubic_psnr": psnr(bicubic), "bicubic_ssim": ssim(bicubic)}  # fmt: skip
