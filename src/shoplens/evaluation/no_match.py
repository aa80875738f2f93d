"""The "no confident match" threshold: below it, a photo's best catalog score says the shop
probably does not sell what was photographed.

A nearest-neighbour search always answers. The threshold is a top-1 cosine score chosen so that
``target_recall`` of in-catalog shopper photos stay matches; what it costs is the share of
out-of-catalog photos (:mod:`shoplens.evaluation.out_of_catalog`) that still pass, the
false-match rate. Both are measured on a different half of the photos than the threshold was
chosen on (seeded halves), so the reported rates are not the calibration's own.

A cosine threshold belongs to a model *and a gallery*: the more photos a catalog holds, the
closer the nearest one to any query (measured on the demo: a threshold chosen against the
3,749-photo test gallery kept 0.95 of in-catalog photos, not 0.90, against the 25,000-photo
index, and let 0.73 of out-of-catalog photos through, not 0.57). So evaluate measures it against
its test gallery and saves the calibration photos' *query embeddings* (:class:`Calibration`);
register ships them inside the model, and the index stage, which holds the served gallery,
chooses the threshold the service uses from the same photos in milliseconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc, binary_roc

CALIBRATION_FILE = "no_match_calibration.npz"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    """Query embeddings of the calibration photos, as the query pipeline made them."""

    in_catalog: np.ndarray  # (N, D) float32: shopper photos of catalog products
    out_of_catalog: np.ndarray  # (M, D) float32: photos of things the shop does not sell
    out_kinds: np.ndarray  # (M,) str: scene | face | shape
    target_recall: float
    seed: int

    def __post_init__(self) -> None:
        if not 0.0 < self.target_recall < 1.0:
            raise ValueError(f"target_recall must be between 0 and 1, got {self.target_recall}")

    def save(self, path: str | Path) -> None:
        np.savez_compressed(
            path,
            in_catalog=self.in_catalog.astype(np.float32),
            out_of_catalog=self.out_of_catalog.astype(np.float32),
            out_kinds=self.out_kinds.astype(str),
            target_recall=np.float64(self.target_recall),
            seed=np.int64(self.seed),
        )

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                data["in_catalog"],
                data["out_of_catalog"],
                data["out_kinds"],
                float(data["target_recall"]),
                int(data["seed"]),
            )


def _halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    return order[: n // 2], order[n // 2 :]


def calibrate(
    calibration: Calibration, top_score: Callable[[np.ndarray], np.ndarray], gallery: str = ""
) -> dict[str, float]:
    """Choose the threshold on one half of each set, measure it on the other (and log it,
    naming ``gallery``).

    ``top_score`` maps query embeddings ``(N, D)`` to their best gallery score ``(N,)`` (the
    gallery being calibrated for). Returns ``match_threshold``, ``in_catalog_recall`` and
    ``false_match_rate`` (report halves), ``false_match_rate/<kind>``, and ``auroc`` (all photos:
    how well the top score separates the two at all, whatever the threshold).
    """
    inside = top_score(calibration.in_catalog)
    outside = top_score(calibration.out_of_catalog)
    if len(inside) < 2 or len(outside) < 2:
        raise ValueError("calibrating needs at least two photos of each kind")
    rng = np.random.default_rng(calibration.seed)
    in_fit, in_report = _halves(len(inside), rng)
    _, out_report = _halves(len(outside), rng)
    # The highest score that keeps target_recall of the fitting half at or above it.
    threshold = float(np.quantile(inside[in_fit], 1 - calibration.target_recall, method="lower"))
    passed = outside >= threshold
    result = {
        "match_threshold": threshold,
        "target_recall": calibration.target_recall,
        "in_catalog_recall": float(np.mean(inside[in_report] >= threshold)),
        "false_match_rate": float(np.mean(passed[out_report])),
        "auroc": float(binary_auroc(*_scores_and_labels(inside, outside))),
        "in_catalog_photos": len(inside),
        "out_of_catalog_photos": len(outside),
    }
    report_kinds = calibration.out_kinds[out_report]
    for kind in sorted(set(report_kinds)):
        result[f"false_match_rate/{kind}"] = float(
            np.mean(passed[out_report][report_kinds == kind])
        )
    return result


def _scores_and_labels(inside: np.ndarray, outside: np.ndarray):
    scores = torch.from_numpy(np.concatenate([inside, outside]).astype(np.float32))
    labels = torch.cat([torch.ones(len(inside)), torch.zeros(len(outside))]).long()
    return scores, labels


def recall_and_false_matches(
    calibration: Calibration, top_score: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The whole trade-off (in-catalog recall, false-match rate) over every threshold, for the
    plot a team chooses ``target_recall`` from."""
    fmr, recall, _ = binary_roc(
        *_scores_and_labels(
            top_score(calibration.in_catalog), top_score(calibration.out_of_catalog)
        )
    )
    return recall.numpy(), fmr.numpy()
