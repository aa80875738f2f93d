"""What the monitor's verdict looks like: the category mix and the top scores of the current
window beside each reference's (the HTML reports hold every test; this is the glance)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from shoplens.monitoring.drift import Window

COLOURS = ("#d73027", "#4575b4", "#91bfdb")


def save_drift_plot(current: Window, references: dict[str, Window], path: str | Path) -> Path:
    figure = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    mix, scores = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    windows = [current, *references.values()]
    categories = sorted(
        {str(c) for w in windows for c in w.table["category"].fillna("(none)").astype(str)}
    )
    width = 0.8 / len(windows)
    for i, (window, colour) in enumerate(zip(windows, COLOURS, strict=False)):
        shares = window.table["category"].fillna("(none)").astype(str).value_counts(normalize=True)
        x = np.arange(len(categories)) + (i - (len(windows) - 1) / 2) * width
        mix.bar(x, [shares.get(c, 0.0) for c in categories], width, color=colour,
                label=f"{window.label} ({len(window)})")  # fmt: skip
        top = window.table["top_score"].dropna().astype(float)
        if len(top):
            scores.hist(top, bins=30, density=True, histtype="step", color=colour, linewidth=1.5)
    mix.set_xticks(np.arange(len(categories)), categories, rotation=30, ha="right")
    mix.set_ylabel("share of searches")
    mix.set_title("best result's category")
    mix.legend(fontsize=8)
    scores.set_xlabel("top-1 cosine score")
    scores.set_title("how closely the catalog matched")
    figure.tight_layout()
    figure.savefig(path)
    return Path(path)
