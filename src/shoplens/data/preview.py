"""A contact sheet of the decoded cache: the first thing to look at after preprocessing.

Wrong labels, upside-down photos, black padding or washed-out 16-bit scans are obvious at a
glance in a grid with one row per category, and invisible in any count or metric.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from shoplens.data.catalog import CACHE_INDEX, CATEGORY, GROUP_ID


def save_preview_grid(
    df: pd.DataFrame, cache: np.ndarray, path: str | Path, per_category: int = 8
) -> Path:
    """Write a PNG grid: one row per category (labelled), up to ``per_category`` images each.

    Shows one image per duplicate group where it can, so a row shows different products
    rather than several photos of the first one. Drawn on an Agg canvas directly (no pyplot),
    so it works headless and leaves matplotlib's global state alone.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    categories = sorted(df[CATEGORY].unique())
    columns = max(1, per_category)
    rows = max(1, len(categories))
    figure = Figure(figsize=(1.6 + 1.0 * columns, 0.3 + 1.0 * rows), dpi=100)
    FigureCanvasAgg(figure)
    axes = np.atleast_2d(figure.subplots(rows, columns, squeeze=False))
    for row, category in enumerate(categories):
        members = df[df[CATEGORY] == category].sort_values(CACHE_INDEX)
        distinct = members.drop_duplicates(GROUP_ID) if GROUP_ID in members else members
        chosen = pd.concat([distinct, members.drop(distinct.index)]).head(columns)
        counts = f"{category}\n({len(members)})"
        axes[row, 0].set_ylabel(counts, rotation=0, ha="right", va="center", fontsize=9)
        for column, cache_index in enumerate(chosen[CACHE_INDEX]):
            axes[row, column].imshow(cache[int(cache_index)], interpolation="nearest")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            for spine in ax.spines.values():
                spine.set_visible(False)
    figure.suptitle(f"{len(df)} images, {len(categories)} categories", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path)
    return path
