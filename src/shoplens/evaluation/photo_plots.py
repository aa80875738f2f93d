"""Figures of shopper photos: boxes drawn on the photo, and what search answered.

Drawn on Agg figures directly (no pyplot state), like the other evaluation figures.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from shoplens.evaluation.plots import HIT, MISS, Result

Box = tuple[float, float, float, float]  # x0, y0, x1, y1
BOX_COLOURS = ("#ffd92f", "#1f78b4", "#e7298a")  # ground truth, searched box, other boxes


def _pixels(photo: bytes | np.ndarray) -> np.ndarray:
    if isinstance(photo, bytes | bytearray):
        return np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
    return np.asarray(photo)


def _draw_boxes(ax, boxes: Sequence[Box], colours: Sequence[str], styles: Sequence[str]) -> None:
    for box, colour, style in zip(boxes, colours, styles, strict=True):
        x0, y0, x1, y1 = box
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2, ec=colour, ls=style))


def save_photo_grid(
    photos: Sequence[bytes | np.ndarray],
    boxes: Sequence[Sequence[Box]],
    captions: Sequence[str],
    path: Path,
    title: str,
    columns: int = 4,
) -> Path:
    """Photos in a grid, each with its boxes (first: ground truth, dashed yellow)."""
    rows = max(1, -(-len(photos) // columns))
    figure = Figure(figsize=(2.6 * columns, 0.5 + 2.7 * rows), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax, photo, photo_boxes, caption in zip(axes.flat, photos, boxes, captions, strict=False):
        ax.imshow(_pixels(photo))
        _draw_boxes(ax, photo_boxes, [BOX_COLOURS[0]] * len(photo_boxes), ["--"] * len(photo_boxes))
        ax.set_title(caption, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.set_axis_off()
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path)
    return path


def save_search_gallery(
    rows: Sequence[tuple[bytes, Box, Sequence[Box], int, str, Sequence[Result]]],
    path: Path,
    title: str,
) -> Path:
    """One row per photo: the photo with its ground-truth box (dashed yellow), the boxes the
    localizer found (blue: the one searched, pink: others), then the top results framed green
    (right category) or red; a bold caption marks the photographed product itself."""
    columns = 1 + max((len(r[5]) for r in rows), default=0)
    figure = Figure(figsize=(1.7 * columns + 1.2, 0.6 + 1.9 * max(1, len(rows))), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(max(1, len(rows)), columns, squeeze=False)
    for r, (photo, truth, found, searched, caption, results) in enumerate(rows):
        ax = axes[r, 0]
        ax.imshow(_pixels(photo))
        colours = [BOX_COLOURS[0]] + [
            BOX_COLOURS[1 if i == searched else 2] for i in range(len(found))
        ]
        _draw_boxes(ax, [truth, *found], colours, ["--"] + ["-"] * len(found))
        ax.set_title(caption, fontsize=8, fontweight="bold")
        for c, result in enumerate(results, start=1):
            ax = axes[r, c]
            ax.imshow(result.image, interpolation="nearest")
            ax.set_title(f"#{c} {result.category}\n{result.score:.2f}", fontsize=7)
            for spine in ax.spines.values():
                spine.set_edgecolor(HIT if result.hit else MISS)
                spine.set_linewidth(4)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.set_axis_off()
    figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.96))
    figure.savefig(path)
    return path
