"""The registered version's description: a model card a person reads in the MLflow UI.

What it was trained on (DVC data version, training run, config), how it measured (catalog
shots, shoppers' photos, localization, no-match) and what it is known not to do well, from the
numbers of the evaluation it was registered with, never restated by hand.
"""

from __future__ import annotations

from typing import Any


def _get(values: dict, *path: str) -> Any:
    for key in path:
        values = values.get(key) if isinstance(values, dict) else None
    return values


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "n/a" if value is None else str(value)


def model_card(
    name: str, version: int, metrics: dict, evaluated: dict, training: dict[str, str]
) -> str:
    """Markdown: ``metrics`` is reports/metrics.json, ``evaluated`` evaluate's record,
    ``training`` a few facts of the training run (run id, backbone, loss, commit)."""
    pipeline = _get(metrics, "shopper_photos", "pipeline") or _get(
        metrics, "shopper_photos", "finetuned_frame"
    ) or {}  # fmt: skip
    buckets = "\n".join(
        f"| {bucket} | {_fmt(values.get('category@1'))} | {_fmt(values.get('product@1'))} |"
        for bucket, values in pipeline.items()
        if bucket != "localization"
    )
    localization = pipeline.get("localization") or {}
    no_match = metrics.get("no_match") or {}
    facts = "\n".join(f"- {key}: `{value}`" for key, value in training.items())
    small = metrics.get("small_photos") or {}
    small_line = ", ".join(
        f"{variant} category@1 {_fmt(_get(small, variant, 'all', 'category@1'))}"
        for variant in small
    )
    return f"""# {name} v{version}

A photo-search model: the whole query pipeline (validate -> localize -> crop -> embed) as one
MLflow pyfunc; runtime {evaluated.get("runtime", "torch")} by default.

## Data and training
- data version: `{evaluated.get("data_version")}` (DVC; the training run logs it as a dataset input)
- test split: {evaluated.get("queries")} queries, {evaluated.get("gallery")} gallery photos
{facts}

## Measured (evaluate, held-out test products and evaluation backgrounds)
- catalog shots, test Recall@1: {_fmt(_get(metrics, "finetuned", "recall@1"))} (untuned backbone {_fmt(_get(metrics, "baseline", "recall@1"))})
- localization: mask IoU {_fmt(localization.get("mask_iou"))}, box AP@0.5 {_fmt(localization.get("box_ap@0.5"))}

| shopper photos | category@1 | product@1 |
|---|---|---|
{buckets}

- small photos (products at 40-70% of catalog resolution): {small_line or "not measured"}
  (pipeline_no_sr / pipeline_sr: the same pipeline with super-resolution switched the other
  way; oracle_mask: the true
  product mask instead of the localizer's, what a perfect localizer would reach)

## Known limits
- no confident match: threshold {_fmt(no_match.get("match_threshold"))} on the test gallery keeps {_fmt(no_match.get("in_catalog_recall"))} of in-catalog photos and lets {_fmt(no_match.get("false_match_rate"))} of out-of-catalog photos through (AUROC {_fmt(no_match.get("auroc"))}); the index stage sets the served threshold on its own gallery.
- trained on catalog shots pasted on a small pool of real photographs: scenes unlike them (and objects it never saw, such as faces) are where it fails first.
"""
