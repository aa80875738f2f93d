"""``shoplens summary``: what the last pipeline run produced, in a few lines."""

from __future__ import annotations

import json
from pathlib import Path

from shoplens.config import load_config, repo_root


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def print_summary() -> int:
    root = repo_root()
    cfg = load_config(params=root / "params.yaml")
    reports = root / cfg.paths.reports_dir
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
            f"train       val Recall@1 {train.get('val_recall@1', float('nan')):.3f} "
            f"(untrained projection {train.get('val_recall@1_initial') or float('nan'):.3f}) "
            f"after {train.get('epochs')} epochs"
        )
    if metrics := _read(reports / "metrics.json"):
        base, tuned = metrics.get("baseline", {}), metrics.get("finetuned", {})
        lines.append(
            f"evaluate    test Recall@1 baseline {base.get('recall@1', float('nan')):.3f} -> "
            f"fine-tuned {tuned.get('recall@1', float('nan')):.3f}"
        )
    if registry := _read(reports / "registry.json"):
        lines.append(f"register    {registry.get('decision')}: {registry.get('reason')}")
    if len(lines) == 3:
        lines.append("nothing yet: run `make demo` (or `dvc repro`)")
    lines.append(f"MLflow UI   mlflow ui --backend-store-uri sqlite:///{root / 'mlflow.db'}")
    print("\n".join(lines))
    return 0
