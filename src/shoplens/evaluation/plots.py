"""Figures a person looks at after evaluation: where categories get confused, which categories
fine-tuning helped, and what a shopper would actually see as results.

Drawn on Agg figures directly (no pyplot state), like the preprocess preview, so they work
headless and can be logged to MLflow as they are.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torchmetrics.classification import MulticlassConfusionMatrix

from shoplens.evaluation.retrieval import cosine_scores

HIT, MISS = "#1a9850", "#d73027"
LEGEND = {"baseline": "untuned backbone (baseline)", "finetuned": "fine-tuned"}


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def save_confusion(confusion: MulticlassConfusionMatrix, categories: Sequence[str], path: Path):
    """The confusion matrix drawn by torchmetrics' own ``plot`` onto our figure."""
    side = 2.5 + 0.7 * len(categories)
    figure = _figure(side, side)
    ax = figure.add_subplot()
    with warnings.catch_warnings():  # torchmetrics hands imshow a tensor; numpy 2 complains
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        confusion.plot(ax=ax, labels=list(categories), cmap="Blues")
    ax.set_title("test category predictions (rows: true, columns: predicted)", fontsize=11)
    figure.tight_layout()
    figure.savefig(path)
    return path


def save_category_recall(table: pd.DataFrame, path: Path) -> Path:
    """Grouped horizontal bars: Recall@1 per category, one bar per model."""
    wide = table.pivot(index="category", columns="model", values="recall_at_1")
    models = list(dict.fromkeys(table["model"]))  # first-seen order: baseline, fine-tuned
    figure = _figure(7.5, 1.2 + 0.45 * len(wide) * max(1, len(models)) / 2)
    ax = figure.add_subplot()
    y = np.arange(len(wide))
    height = 0.8 / max(1, len(models))
    for i, model in enumerate(models):
        values = wide[model].to_numpy()
        offset = (i - (len(models) - 1) / 2) * height
        bars = ax.barh(y + offset, values, height, label=LEGEND.get(model, model))
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8, padding=2)
    ax.set_yticks(y, wide.index)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("Recall@1 (test queries)")
    below = (0.5, -0.96 / figure.get_figheight())  # under the x label, whatever the height
    ax.legend(loc="upper center", bbox_to_anchor=below, ncol=len(models), frameon=False)
    ax.set_title("Recall@1 per category: untuned backbone vs fine-tuned", fontsize=11)
    figure.tight_layout()
    figure.savefig(path)
    return path


@dataclass(frozen=True)
class Result:
    image: np.ndarray  # HWC uint8
    category: str
    score: float
    hit: bool


def spread_over_categories(labels: torch.Tensor, n: int) -> list[int]:
    """Up to ``n`` row positions, taking each category's rows in turn, so the figure shows
    every category before it shows a second query of any."""
    queues = [torch.nonzero(labels == c).flatten().tolist() for c in labels.unique().tolist()]
    chosen: list[int] = []
    while len(chosen) < n and any(queues):
        chosen += [queue.pop(0) for queue in queues if queue][: n - len(chosen)]
    return chosen


def save_retrieval_gallery(
    rows: Sequence[tuple[np.ndarray, str, Sequence[Result]]], path: Path, title: str
) -> Path:
    """One row per query: the query photo, then its top results framed green (same category)
    or red (another category), each captioned with its category and cosine score."""
    columns = 1 + max((len(results) for _, _, results in rows), default=0)
    figure = _figure(1.5 * columns, 0.6 + 1.75 * max(1, len(rows)))
    axes = figure.subplots(max(1, len(rows)), columns, squeeze=False)
    for r, (query, category, results) in enumerate(rows):
        axes[r, 0].imshow(query, interpolation="nearest")
        axes[r, 0].set_title(f"query\n{category}", fontsize=8, fontweight="bold")
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
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path)
    return path


def retrieval_rows(
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    query_image: Callable[[int], np.ndarray],
    gallery_image: Callable[[int], np.ndarray],
    categories: Sequence[str],
    n: int,
    k: int = 5,
) -> list[tuple[np.ndarray, str, list[Result]]]:
    """Rows for :func:`save_retrieval_gallery`: ``n`` queries spread over the categories, each
    with its top ``k`` gallery results; images are fetched by row position only for those."""
    chosen = spread_over_categories(query_labels, n)
    top = cosine_scores(queries[chosen], gallery).topk(min(k, len(gallery)), dim=1)
    rows = []
    for i, position in enumerate(chosen):
        label = int(query_labels[position])
        results = [
            Result(
                gallery_image(g),
                categories[int(gallery_labels[g])],
                s,
                int(gallery_labels[g]) == label,
            )
            for s, g in zip(top.values[i].tolist(), top.indices[i].tolist(), strict=True)
        ]
        rows.append((query_image(position), categories[label], results))
    return rows


def save_no_match_curve(
    recall: np.ndarray, false_matches: np.ndarray, chosen: dict[str, float], path: Path
) -> Path:
    """In-catalog photos kept as matches vs out-of-catalog photos let through, over every
    threshold; the chosen threshold marked: what a team looks at to move ``target_recall``."""
    figure = _figure(5.5, 4.5)
    ax = figure.add_subplot()
    ax.plot(false_matches, recall, color="#4575b4")
    ax.scatter(
        [chosen["false_match_rate"]], [chosen["in_catalog_recall"]], color=MISS, zorder=3,
        label=f"threshold {chosen['match_threshold']:.3f} (AUROC {chosen['auroc']:.2f})",
    )  # fmt: skip
    ax.set_xlabel("false-match rate (out-of-catalog photos answered as matches)")
    ax.set_ylabel("in-catalog recall (shopper photos kept as matches)")
    ax.set_title("no confident match: top-1 score threshold")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    return path
