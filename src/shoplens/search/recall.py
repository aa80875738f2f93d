"""How much an approximate index loses against exact search, measured rather than assumed.

The index stage reports these for the index it ships (queries: held-out embeddings), and the
benchmark uses them to tune defaults. Both are agreement with exact search, not relevance:
relevance is what ``shoplens.evaluation.retrieval`` measures on labelled queries.
"""

from __future__ import annotations

import numpy as np

from shoplens.search.index import VectorIndex

TIE_TOLERANCE = 1e-5  # a different id with the same cosine as exact's top-1 is not a miss


def agreement(
    approx: tuple[np.ndarray, np.ndarray], exact: tuple[np.ndarray, np.ndarray], k: int = 10
) -> dict[str, float]:
    """hit@1 and recall@k of precomputed ``(scores, ids)`` results against exact ones."""
    (a_scores, a_ids), (e_scores, e_ids) = approx, exact
    first_same = a_ids[:, 0] == e_ids[:, 0]
    first_tied = np.abs(a_scores[:, 0] - e_scores[:, 0]) <= TIE_TOLERANCE
    hit1 = (first_same | (first_tied & (a_ids[:, 0] >= 0))) & (e_ids[:, 0] >= 0)
    recalls = []
    for a_row, e_row in zip(a_ids[:, :k], e_ids[:, :k], strict=True):
        truth = e_row[e_row >= 0]
        if len(truth):
            recalls.append(np.isin(truth, a_row).mean())
    return {"hit@1": float(hit1.mean()), f"recall@{k}": float(np.mean(recalls))}


def recall_against_exact(
    approx_index: VectorIndex, exact_index: VectorIndex, queries: np.ndarray, k: int = 10
) -> dict[str, float]:
    """Search both indexes with ``queries``: how often the approximate top-1 is exact's, and
    which share of exact's top-``k`` the approximate top-``k`` contains."""
    return agreement(approx_index.search(queries, k), exact_index.search(queries, k), k)
