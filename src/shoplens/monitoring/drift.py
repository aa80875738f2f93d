"""Has what shoppers search changed? Two windows of searches compared with Evidently.

A window is what the query log keeps per search (:mod:`shoplens.catalog_store.query_log`): the
query embedding, the category of the best result, the top score and whether the answer was a
confident match. Four questions, each a well-known test run by Evidently (we write none):

* **embeddings**: Evidently's embedding drift on the query vectors. Default ``ratio``: a
  two-sample Kolmogorov-Smirnov test per dimension (p-value < ``component_alpha``), drift when
  more than ``embedding_threshold`` of the dimensions drifted. ``mmd`` (kernel MMD), ``model``
  (domain-classifier ROC AUC) and ``distance`` are the other methods; benchmarks/drift.py
  measures each on simulated shifts and on no shift.
* **category mix**: the best results' categories, a permutation test on their total variation
  distance (p-value < ``alpha``). Not Evidently's chi-square: it takes the reference's shares
  as exact, so two windows of equal size raise false alarms (measured: 23 of 40 unshifted
  pairs of 200 searches at alpha 0.01; the permutation test 0 of 40);
* **top score**: Kolmogorov-Smirnov test (p-value < ``alpha``): the catalog matching worse;
* **no-match share**: the share of answers below the served threshold, Z-test for proportions.

The same report is rendered as Evidently's HTML, for a person to look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

EMBEDDING_METHODS = ("ratio", "mmd", "model", "distance")
EMBEDDINGS = "query_embedding"


@dataclass(frozen=True)
class Window:
    """Searches to compare: ``embeddings`` ``(N, D)`` and a table with the columns
    ``category`` (str), ``top_score`` (float) and ``match`` (bool, or None without threshold)."""

    embeddings: np.ndarray
    table: pd.DataFrame
    label: str

    def __post_init__(self) -> None:
        if len(self.embeddings) != len(self.table):
            raise ValueError(
                f"{self.label}: {len(self.embeddings)} embeddings for {len(self.table)} rows"
            )

    def __len__(self) -> int:
        return len(self.table)


@dataclass(frozen=True)
class DriftSettings:
    """``monitor.drift`` in the config."""

    method: str = "ratio"  # Evidently's embedding drift method (EMBEDDING_METHODS)
    embedding_threshold: float = 0.2  # ratio: share of drifted dims; mmd: MMD²; model: ROC AUC
    component_alpha: float = 0.05  # ratio: a dimension drifted below this p-value
    pca_components: int | None = None  # compare the first principal components only
    alpha: float = 0.01  # category mix, top score, no-match share: drifted below this p-value

    def __post_init__(self) -> None:
        if self.method not in EMBEDDING_METHODS:
            raise ValueError(
                f"drift method must be one of {EMBEDDING_METHODS}, got {self.method!r}"
            )
        for name in ("component_alpha", "alpha"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")

    def drift_method(self):
        from evidently.legacy.metrics.data_drift import embedding_drift_methods as methods

        if self.method == "ratio":
            return methods.ratio(
                component_stattest="ks",
                component_stattest_threshold=self.component_alpha,
                threshold=self.embedding_threshold,
                pca_components=self.pca_components,
            )
        make = getattr(methods, self.method)
        return make(threshold=self.embedding_threshold, pca_components=self.pca_components)


def _frame(window: Window) -> pd.DataFrame:
    dims = window.embeddings.shape[1]
    frame = pd.DataFrame(
        window.embeddings.astype(np.float64), columns=[f"e{i}" for i in range(dims)]
    )
    frame["category"] = window.table["category"].fillna("(none)").astype(str).to_numpy()
    frame["top_score"] = window.table["top_score"].astype(float).to_numpy()
    # A search without a served threshold counts as matched: it was never marked "no match".
    frame["no_match"] = [
        int(m is not None and not pd.isna(m) and not m) for m in window.table["match"]
    ]
    return frame


def _report(now: pd.DataFrame, before: pd.DataFrame, dims: list[str], settings: DriftSettings):
    """Evidently's report of the same tests, for the HTML a person reads."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift, ValueDrift

    definition = DataDefinition(
        numerical_columns=["top_score"],
        categorical_columns=["category", "no_match"],
        embeddings={EMBEDDINGS: dims},
    )
    report = Report(
        [
            EmbeddingsDrift(embeddings_name=EMBEDDINGS, drift_method=settings.drift_method()),
            ValueDrift(column="category", method="TVD", threshold=settings.alpha),
            ValueDrift(column="top_score", method="ks", threshold=settings.alpha),
            ValueDrift(column="no_match", method="z", threshold=settings.alpha),
        ]
    )
    return report.run(
        Dataset.from_pandas(now, data_definition=definition),
        Dataset.from_pandas(before, data_definition=definition),
    )


def _shares(table: pd.DataFrame) -> dict[str, float]:
    counts = table["category"].fillna("(none)").astype(str).value_counts(normalize=True)
    return {str(k): round(float(v), 4) for k, v in counts.sort_index().items()}


def _value_test(
    reference: pd.Series, current: pd.Series, categorical: bool, test: str, alpha: float
):
    """(p-value, drifted) of one column, by Evidently's registered statistical test."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    kind = ColumnType.Categorical if categorical else ColumnType.Numerical
    # Searches of an empty index have no top score: compare the scores there are.
    reference, current = reference.dropna(), current.dropna()
    if len(reference) < 2 or len(current) < 2:
        return 1.0, False
    result = get_stattest(reference, current, kind, test)(reference, current, kind, alpha)
    p_value = float(result.drift_score)
    # Evidently's z-test is undefined (nan) when both windows hold one value only: no drift.
    return (1.0, False) if np.isnan(p_value) else (p_value, bool(result.drifted))


def compare(
    current: Window, reference: Window, settings: DriftSettings, html: str | Path | None = None
) -> dict[str, Any]:
    """Drift of ``current`` against ``reference``: each test's statistic, p-value and verdict,
    and ``drifted`` when any test says so. ``html``: also save Evidently's report there (the
    same tests, rendered; building it takes seconds, the verdicts alone milliseconds)."""
    if len(current) < 2 or len(reference) < 2:
        raise ValueError(
            f"too few searches to compare: {len(current)} in {current.label}, "
            f"{len(reference)} in {reference.label}"
        )
    if current.embeddings.shape[1] != reference.embeddings.shape[1]:
        raise ValueError(
            f"{current.label} has {current.embeddings.shape[1]}-d embeddings, {reference.label} "
            f"{reference.embeddings.shape[1]}-d: windows from different models cannot be compared"
        )
    now, before = _frame(current), _frame(reference)
    dims = [c for c in now.columns if c.startswith("e")]
    score, _, _ = settings.drift_method()(now[dims], before[dims])
    tests = {
        name: _value_test(before[name], now[name], categorical, test, settings.alpha)
        for name, categorical, test in (
            ("category", True, "TVD"), ("top_score", False, "ks"), ("no_match", True, "z"),
        )
    }  # fmt: skip
    result = {
        "current": current.label,
        "reference": reference.label,
        "queries": len(current),
        "reference_queries": len(reference),
        "embeddings": {
            "method": settings.method,
            "score": float(score),
            "threshold": settings.embedding_threshold,
            "drifted": bool(score > settings.embedding_threshold),
        },
        "category_mix": {
            "p_value": tests["category"][0], "drifted": tests["category"][1],
            "current": _shares(current.table), "reference": _shares(reference.table),
        },
        "top_score": {
            "p_value": tests["top_score"][0], "drifted": tests["top_score"][1],
            "current_median": float(now["top_score"].median()),
            "reference_median": float(before["top_score"].median()),
        },
        "no_match_share": {
            "p_value": tests["no_match"][0], "drifted": tests["no_match"][1],
            "current": float(now["no_match"].mean()), "reference": float(before["no_match"].mean()),
        },
    }  # fmt: skip
    result["drifted"] = any(
        result[k]["drifted"] for k in ("embeddings", "category_mix", "top_score", "no_match_share")
    )
    if html is not None:
        Path(html).parent.mkdir(parents=True, exist_ok=True)
        _report(now, before, dims, settings).save_html(str(html))
    return result
