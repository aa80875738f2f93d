"""What super-resolution does to held-out photos, for a person to look at: each column one
test photo; rows: the degraded input (pixels as they are), bicubic upscaling, the network, and
the catalog photo it should have recovered, with each image's PSNR against that target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torchmetrics.functional.image import peak_signal_noise_ratio


@torch.no_grad()
def save_upscaling_samples(network, low: torch.Tensor, target: torch.Tensor, path: Path) -> Path:
    """``low``: ``(N, 3, h, w)`` inputs, ``target``: ``(N, 3, s*h, s*w)``, both in [0, 1]."""
    network.eval()
    side = target.shape[-2:]
    rows = {
        "input": F.interpolate(low, size=side, mode="nearest"),
        "bicubic": network.bicubic(low).clamp(0, 1),
        "super-resolved": network(low),
        "catalog photo": target,
    }
    n = len(target)
    figure = Figure(figsize=(1.3 * n, 1.45 * len(rows)), dpi=100)
    FigureCanvasAgg(figure)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(n):
            ax = figure.add_subplot(len(rows), n, r * n + c + 1)
            ax.imshow(np.clip(images[c].permute(1, 2, 0).numpy(), 0, 1))
            ax.set_xticks([]), ax.set_yticks([])
            if name in ("bicubic", "super-resolved"):
                psnr = float(peak_signal_noise_ratio(images[c], target[c], data_range=1.0))
                ax.set_title(f"{psnr:.1f} dB", fontsize=7)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    figure.suptitle(f"held-out test photos: x{network.scale} super-resolution vs bicubic",
                    fontsize=9)  # fmt: skip
    figure.tight_layout()
    figure.savefig(path)
    return path
