"""Super-resolution vs bicubic on held-out catalog photos: PSNR and SSIM, side by side.

    python benchmarks/super_resolution.py [--scales 2 4] [--epochs 3] [--train 20000]

Trains :class:`~shoplens.models.super_resolution.SuperResolver` on the catalog's *train* split
(targets: catalog photos at ``--hr-size``, inputs degraded on the fly), then shrinks *test*
split photos once, with a fixed seed and held-out code (:mod:`shoplens.evaluation.small_crops`,
not the training degradation), and measures the network and bicubic upscaling on the same
inputs: phone-like (other kernels, sharpening, shot noise, subsampled JPEG) and a clean
Lanczos downscale. The issue's bar: +1.0 dB PSNR over bicubic at x2.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from shoplens.config import load_config
from shoplens.evaluation.small_crops import shrink_cleanly, shrink_like_a_phone
from shoplens.training.super_resolution import (
    SuperResolutionModule,
    catalog_photos,
    compare_with_bicubic,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=20000, help="training photos")
    parser.add_argument("--test", type=int, default=2000, help="held-out test photos")
    parser.add_argument("--hr-size", type=int, default=28, help="target side (FMNIST: native)")
    parser.add_argument(
        "--out", type=Path, default=Path("reports/benchmarks/super_resolution.json")
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    catalog = Path(load_config().paths.catalog_dir)
    train = catalog_photos(catalog, "train", args.train, args.hr_size)
    test = catalog_photos(catalog, "test", args.test, args.hr_size)
    report = {"train": len(train), "test": len(test), "hr_size": args.hr_size}
    for scale in args.scales:
        module = SuperResolutionModule(scale=scale, lr=2e-3)
        started = time.perf_counter()
        L.Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False,
                  enable_checkpointing=False, enable_progress_bar=False).fit(
            module, DataLoader(TensorDataset(train), batch_size=128, shuffle=True))  # fmt: skip
        seconds = time.perf_counter() - started
        # Held-out shrinking (not the training degradation): what the stage measures too.
        phone = shrink_like_a_phone(test, scale, np.random.default_rng(123))
        clean = shrink_cleanly(test, scale)
        report[f"x{scale}"] = {
            "train_seconds": seconds,
            "phone": compare_with_bicubic(module.network, phone, test),
            "clean": compare_with_bicubic(module.network, clean, test),
        }
        for kind in ("phone", "clean"):
            r = report[f"x{scale}"][kind]
            print(f"x{scale} {kind:>5}: PSNR {r['psnr']:.2f} dB vs bicubic {r['bicubic_psnr']:.2f} "
                  f"({r['psnr'] - r['bicubic_psnr']:+.2f}), SSIM {r['ssim']:.3f} vs "
                  f"{r['bicubic_ssim']:.3f}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
