"""Retrieval metrics of query embeddings against a gallery, from well-kept libraries.

Recall@K is the metric-learning sense (a hit if any of the top K shares the query's label),
which torchmetrics calls the hit rate; MAP@R is pytorch-metric-learning's, as defined in
"A Metric Learning Reality Check" (Musgrave et al., 2020).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from scipy.special import log_softmax
from torchmetrics.retrieval import RetrievalHitRate


def prior_bias(logits: np.ndarray, gallery_labels: np.ndarray, weight: float) -> np.ndarray:
    """``[queries, gallery]`` term search adds to cosine scores when it ranks with the category
    head's prior: ``weight * log p(label_g | query)``, the head's classes in label order
    (:mod:`shoplens.search.category_prior`, which ranks the served index by the same term)."""
    logp = log_softmax(np.asarray(logits, np.float64), axis=1)
    return (weight * logp[:, np.asarray(gallery_labels, np.int64)]).astype(np.float32)


@dataclass(frozen=True)
class Prior:
    """Search's category prior (:mod:`shoplens.search.category_prior`): its weight, and the
    gallery's labels in the category head's class order."""

    weight: float
    gallery_labels: np.ndarray

    def bias(self, query_logits: np.ndarray | None) -> torch.Tensor | None:
        """:func:`prior_bias` for these queries (None: no logits, or weight 0: cosine)."""
        if query_logits is None or self.weight <= 0:
            return None
        return torch.from_numpy(prior_bias(query_logits, self.gallery_labels, self.weight))


def cosine_scores(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    return F.normalize(queries.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T


@contextmanager
def _native_bincount():
    """torchmetrics' retrieval metrics group scores by query with ``bincount``; under
    ``torch.use_deterministic_algorithms`` (our ``trainer.deterministic``) it falls back to a
    one-hot ``[N, queries]`` tensor: about 11 GB for 1,100 queries x 1,100 gallery images.
    ``bincount`` is exact on CPU either way, so deterministic mode is lifted just here."""
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


def recall_at_k(
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    gallery: torch.Tensor,
    gallery_labels: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    allowed: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> dict[str, float]:
    """``allowed``: optional ``[queries, gallery]`` mask of what each query's search may
    return; the rest rank below every allowed image and never count as hits, as if search
    had never looked at them. ``bias``: optional ``[queries, gallery]``
    term added to the cosine scores before ranking (the category prior search ranks by,
    :class:`Prior`, :func:`prior_bias`)."""
    scores = cosine_scores(queries, gallery)
    if bias is not None:
        scores = scores + bias.to(scores.dtype)
    relevant = query_labels[:, None] == gallery_labels[None, :]
    if allowed is not None:  # below any allowed score, the category prior's bias included
        scores = scores.masked_fill(~allowed.bool(), torch.finfo(scores.dtype).min)
        relevant = relevant & allowed.bool()
    indexes = torch.arange(len(queries))[:, None].expand_as(scores)
    out = {}
    with _native_bincount():
        for k in ks:
            metric = RetrievalHitRate(top_k=min(k, scores.shape[1]))
            hits = metric(scores.flatten(), relevant.flatten(), indexes.flatten())
            out[f"recall@{k}"] = float(hits)
    return out


def map_at_r(queries, query_labels, gallery, gallery_labels) -> float:
    calculator = AccuracyCalculator(
        include=("mean_average_precision_at_r",), k="max_bin_count", device=torch.device("cpu")
    )
    result = calculator.get_accuracy(
        F.normalize(queries.float(), dim=1),
        query_labels,
        F.normalize(gallery.float(), dim=1),
        gallery_labels,
        ref_includes_query=False,
    )
    return float(result["mean_average_precision_at_r"])


def split_query_gallery(embeddings, labels, is_query):
    """Split one evaluated set into its query and gallery parts (the preprocess roles)."""
    is_query = is_query.bool()
    return embeddings[is_query], labels[is_query], embeddings[~is_query], labels[~is_query]
