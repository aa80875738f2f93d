"""The numbers in ``reports/metrics.json``: clean retrieval and classification.

Every metric comes from torchmetrics or pytorch-metric-learning (via :mod:`.retrieval`), so the
baseline and the fine-tuned model are measured by exactly the same, well-tested code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from shoplens.evaluation.retrieval import Prior, cosine_scores, map_at_r, recall_at_k

MODELS = ("baseline", "finetuned")


def retrieval_metrics(
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    ks: Sequence[int],
    prefix: str = "",
    with_map: bool = True,
) -> dict[str, float]:
    """``{prefix}recall@K`` for each K (and MAP@R): queries ranked against the gallery."""
    out = recall_at_k(queries, query_labels, gallery, gallery_labels, ks=ks)
    out = {f"{prefix}{name}": value for name, value in out.items()}
    if with_map:
        out[f"{prefix}map_at_r"] = map_at_r(queries, query_labels, gallery, gallery_labels)
    return out


def narrowed_recall(
    queries: torch.Tensor,
    query_logits: torch.Tensor,
    query_labels: torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    ks: Sequence[int],
    top_categories: int,
    prefix: str = "",
) -> dict[str, float]:
    """``{prefix}narrowed_recall@K``: Recall@K when each query searches only the gallery images
    of its ``top_categories`` predicted categories, as ``search.narrow_by_category`` does.

    It helps when the head is surer of the category than the embedding's nearest neighbours
    are, and hurts when the head's top categories miss the true one: measured, not assumed.
    """
    top = query_logits.topk(min(top_categories, query_logits.shape[1]), dim=1).indices
    allowed = (gallery_labels[None, None, :] == top[:, :, None]).any(dim=1)
    recalls = recall_at_k(queries, query_labels, gallery, gallery_labels, ks, allowed=allowed)
    return {f"{prefix}narrowed_{name}": value for name, value in recalls.items()}


def classification_metrics(
    predictions: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[dict[str, float], MulticlassConfusionMatrix]:
    """Accuracy and macro F1 of category predictions, plus the filled confusion-matrix metric
    (kept as a metric object so its own ``plot`` draws the figure).

    Macro F1 weighs every category equally: a shop's rare categories count as much as its
    best-sellers, which accuracy on an imbalanced catalog would hide.
    """
    accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")
    f1 = MulticlassF1Score(num_classes=num_classes, average="macro")
    confusion = MulticlassConfusionMatrix(num_classes=num_classes)
    for metric in (accuracy, f1, confusion):
        metric.update(predictions, labels)
    return {"accuracy": float(accuracy.compute()), "macro_f1": float(f1.compute())}, confusion


def per_category_recall(
    models: dict[str, tuple[torch.Tensor, torch.Tensor]],
    query_labels: torch.Tensor,
    gallery_labels: torch.Tensor,
    categories: Sequence[str],
) -> pd.DataFrame:
    """Recall@1 of each category's queries (against the whole gallery), per model.

    ``models`` maps a model name to its (query, gallery) embeddings. One row per
    (category, model); categories without test queries are left out.
    """
    rows = []
    for label, category in enumerate(categories):
        mask = query_labels == label
        if not mask.any():
            continue
        for model, (queries, gallery) in models.items():
            recall = recall_at_k(
                queries[mask], query_labels[mask], gallery, gallery_labels, ks=(1,)
            )
            rows.append(
                {
                    "category": category,
                    "model": model,
                    "recall_at_1": recall["recall@1"],
                    "queries": int(mask.sum()),
                    # One nominal axis label per bar: DVC's bar template has no colour field.
                    "bar": f"{category} ({model})",
                }
            )
    return pd.DataFrame(rows, columns=["category", "model", "recall_at_1", "queries", "bar"])


def mlflow_metrics(metrics: dict[str, dict[str, float]], prefix: str = "test") -> dict[str, float]:
    """``{"finetuned": {"recall@1": ...}}`` -> ``{"test/finetuned/recall_at_1": ...}``: MLflow
    rejects '@' in metric names."""
    return {
        f"{prefix}/{block}/{name.replace('@', '_at_')}": float(value)
        for block, values in metrics.items()
        for name, value in values.items()
    }


@dataclass
class Comparison:
    """Baseline vs fine-tuned on the test split: what evaluate writes and plots."""

    metrics: dict[str, dict[str, float]]  # {"baseline": {...}, "finetuned": {...}}
    actual: torch.Tensor  # category labels behind the confusion matrix
    predicted: torch.Tensor
    confusion: MulticlassConfusionMatrix
    per_category: pd.DataFrame  # per_category_recall's table

    def confusion_table(self, categories: Sequence[str]) -> pd.DataFrame:
        """One row per prediction, category names: DVC's ``confusion`` template reads it."""
        names = np.asarray(categories, dtype=object)
        return pd.DataFrame(
            {"actual": names[self.actual.numpy()], "predicted": names[self.predicted.numpy()]}
        )


def compare(
    clean: dict[str, torch.Tensor],
    categories: Sequence[str],
    ks: Sequence[int],
    narrow_top_categories: int = 2,
    category_prior: float = 0.0,
) -> Comparison:
    """Metrics of both models from their embeddings of the test split.

    ``clean``: every test image (``baseline``, ``finetuned``, optional ``logits``, ``labels``,
    ``is_query``); queries rank against the gallery. Category predictions come from the head
    where there is one, else from the nearest gallery image (what search would show). With a
    head, the fine-tuned block also holds Recall@K narrowed to the head's
    ``narrow_top_categories`` categories. With a head and ``category_prior`` > 0 the
    fine-tuned model's Recall@K ranks as search does, by cosine + the head's log prior
    (:mod:`shoplens.search.category_prior`), and ``cosine_recall@K`` keeps the plain cosine
    ranking beside it (MAP@R stays cosine). Shopper photos are measured apart, on the photo
    benchmark (:mod:`shoplens.evaluation.photo_benchmark`).
    """
    is_query, labels = clean["is_query"], clean["labels"]
    query_labels, gallery_labels = labels[is_query], labels[~is_query]
    metrics, pairs = {}, {}
    for name in MODELS:
        queries, gallery = clean[name][is_query], clean[name][~is_query]
        pairs[name] = (queries, gallery)
        metrics[name] = retrieval_metrics(queries, query_labels, gallery, gallery_labels, ks)
    if "logits" in clean:
        actual, predicted = labels, clean["logits"].argmax(1)
    else:
        queries, gallery = pairs["finetuned"]
        actual, predicted = query_labels, gallery_labels[cosine_scores(queries, gallery).argmax(1)]
    scores, confusion = classification_metrics(predicted, actual, len(categories))
    if "logits" in clean:
        metrics["finetuned"] |= scores
        queries, gallery = pairs["finetuned"]
        metrics["finetuned"] |= narrowed_recall(
            queries, clean["logits"][is_query], query_labels, gallery, gallery_labels, ks,
            top_categories=narrow_top_categories,
        )  # fmt: skip
        prior = Prior(category_prior, gallery_labels.numpy())
        if (bias := prior.bias(clean["logits"][is_query].numpy())) is not None:
            ranked = recall_at_k(queries, query_labels, gallery, gallery_labels, ks, bias=bias)
            metrics["finetuned"] |= {
                **{f"cosine_{n}": metrics["finetuned"][n] for n in ranked},
                **ranked,
            }
    per_category = per_category_recall(pairs, query_labels, gallery_labels, categories)
    return Comparison(metrics, actual, predicted, confusion, per_category)
