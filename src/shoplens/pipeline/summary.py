"""``shoplens summary``: what the last pipeline run produced, in a few lines.

Reads what the stages write: ``<reports>/preprocess/summary.json``, ``<reports>/train/
metrics.json``, ``<reports>/metrics.json`` (evaluate: ``baseline`` and ``finetuned`` blocks) and
``<reports>/registry.json`` (register: the gate's decision), where ``<reports>`` is
``paths.reports_dir`` of the project's ``params.yaml``.
"""

from __future__ import annotations

import json
from pathlib import Path

from shoplens.config import load_config, repo_root
from shoplens.tracking.store import redact, tracking_uri

NAN = float("nan")


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _num(value) -> float:
    return NAN if value is None else float(value)


def _mlflow_ui(configured: str | None, root: Path) -> str:
    """How to look at the runs: the store the stages used, without any password it carries."""
    uri = redact(tracking_uri(configured, root))
    if uri.startswith(("http://", "https://")):
        return f"open {uri} (MLflow tracking server)"
    return f"mlflow ui --backend-store-uri {uri}"


def summary_lines(root: Path) -> list[str]:
    params = root / "params.yaml"
    cfg = load_config(params=params) if params.is_file() else None
    reports = root / (cfg.paths.reports_dir if cfg else "reports")
    lines = ["", "shoplens pipeline summary", "========================="]
    if pre := _read(reports / "preprocess" / "summary.json"):
        lines.append(
            f"catalog     {pre.get('images_kept')} images kept of {pre.get('images_total')}, "
            f"{pre.get('images_quarantined')} quarantined, {pre.get('categories')} categories "
            f"(train {pre.get('train_images')} / val {pre.get('val_images')} / "
            f"test {pre.get('test_images')})"
        )
        lines.append(f"            preview: {reports / 'preprocess' / 'preview.png'}")
    if train := _read(reports / "train" / "metrics.json"):
        lines.append(
            f"train       val Recall@1 {_num(train.get('val_recall@1')):.3f} "
            f"(untrained projection {_num(train.get('val_recall@1_initial')):.3f}) "
            f"after {train.get('epochs')} epochs"
        )
    if metrics := _read(reports / "metrics.json"):
        base, tuned = metrics.get("baseline", {}), metrics.get("finetuned", {})
        line = (
            f"evaluate    test Recall@1 baseline {_num(base.get('recall@1')):.3f} -> "
            f"fine-tuned {_num(tuned.get('recall@1')):.3f}"
        )
        lines.append(line)
        photos = metrics.get("shopper_photos") or {}
        if photos:
            path = "pipeline" if "pipeline" in photos else "finetuned_frame"
            searched = "localize -> crop -> embed" if path == "pipeline" else "whole photo"
            lines.append(
                f"            shopper photos, category@1: untuned whole photo "
                f"{_num(photos['baseline_frame']['all']['category@1']):.3f} -> "
                f"{searched} {_num(photos[path]['all']['category@1']):.3f} (product@1 "
                f"{_num(photos[path]['all']['product@1']):.3f}); gallery: "
                f"{reports / 'evaluate' / 'retrieval_gallery.png'}"
            )
        if small := metrics.get("small_photos"):
            lines.append(
                "            small photos, category@1: "
                + ", ".join(f"{v} {_num(small[v]['all']['category@1']):.3f}" for v in small)
            )
    if registry := _read(reports / "registry.json"):
        model = f"{registry.get('model_name')} v{registry.get('version')}"
        if registry.get("promoted"):
            outcome = "promoted"
        else:
            outcome = f"champion: v{registry.get('champion_version')}"
        lines.append(
            f"register    {model} is {registry.get('decision')} ({outcome}): "
            f"{registry.get('reason')}"
        )
    if len(lines) == 3:
        lines.append("nothing yet: run `make demo` (or `dvc repro`)")
    lines.append(f"MLflow UI   {_mlflow_ui(cfg.tracking.uri if cfg else None, root)}")
    return lines


def print_summary(root: Path | None = None) -> int:
    print("\n".join(summary_lines(Path(root) if root else repo_root())))
    return 0
