"""The ``evaluate`` stage: does fine-tuning beat the pretrained backbone it started from?

The test split's queries are ranked against its gallery by the fine-tuned embedder (the
checkpoint) and by the untuned backbone's pooled features, with the same preprocessing, then
again with simulated shopper photos of the queries. ``reports/metrics.json`` holds a
``baseline`` and a ``finetuned`` block (DVC metrics); plots go to ``reports/evaluate/`` and,
with the metrics, to the training run in MLflow.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from mlflow import MlflowClient
from mlflow.entities import Metric
from omegaconf import DictConfig

from shoplens.data.augment import PhotoSimulation, build_eval_transform
from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, QUERY, ROLE, SPLIT, CatalogError
from shoplens.evaluation import plots
from shoplens.evaluation.embed import PhotoQueries, embed
from shoplens.evaluation.report import Comparison, compare, mlflow_metrics
from shoplens.models import Embedder, build_embedder
from shoplens.tracking import configure_mlflow, data_version
from shoplens.tracking.runs import checkpoint_sha256, read_train_run, training_run_id
from shoplens.training.datamodule import CachedImages, read_catalog
from shoplens.training.module import EmbedderModule

log = logging.getLogger(__name__)


def build_baseline(train_cfg: DictConfig, num_classes: int, seed: int) -> Embedder:
    """The backbone the checkpoint was fine-tuned from, untuned: built from the checkpoint's own
    training config (so the comparison is like for like even when ``cfg.backbone`` has moved
    on) and seeded, because without pretrained weights it is random."""
    torch.manual_seed(seed)
    return build_embedder(train_cfg.backbone, train_cfg.model, num_classes).eval()


def run(cfg: DictConfig) -> dict[str, Any]:
    checkpoint = Path(cfg.evaluate.checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} not found: run `shoplens train` first")
    catalog_dir, out_dir = Path(cfg.paths.catalog_dir), Path(cfg.paths.reports_dir) / "evaluate"
    out_dir.mkdir(parents=True, exist_ok=True)
    # Until this run finishes, register must not pair the old metrics with a new checkpoint.
    (out_dir / "evaluated.json").unlink(missing_ok=True)
    manifest, categories = read_catalog(catalog_dir)
    test = manifest[manifest[SPLIT] == "test"].reset_index(drop=True)
    is_query = test[ROLE] == QUERY
    if is_query.all() or not is_query.any():
        raise CatalogError(f"the test split of {catalog_dir} needs both queries and a gallery")
    queries, gallery = (test[rows].reset_index(drop=True) for rows in (is_query, ~is_query))

    tuned = EmbedderModule.load_from_checkpoint(checkpoint, map_location="cpu", pretrained=False)
    embedder, size = tuned.embedder.eval(), int(cfg.data.image_size)
    baseline = build_baseline(tuned.cfg, len(categories), int(cfg.seed))
    if tuned.cfg.data.image_size != size:
        log.warning("evaluating at %d px a model trained at %d px", size, tuned.cfg.data.image_size)

    def forward(images: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding, logits = embedder.forward_with_logits(images)
        out = {"baseline": baseline.pooled_features(images), "finetuned": embedding}
        return out if logits is None else {**out, "logits": logits}

    spec, cache_path = embedder.preprocessing, catalog_dir / CACHE_FILE
    simulation = PhotoSimulation(size, spec.mean, spec.std, seed=int(cfg.evaluate.photo_seed))
    loader = {"batch_size": int(cfg.data.eval_batch_size), "num_workers": cfg.data.num_workers}
    transform = build_eval_transform(size, spec.mean, spec.std)
    clean = embed(CachedImages(test, cache_path, transform), forward, **loader, desc="test images")
    photos = embed(PhotoQueries(queries, cache_path, simulation), forward, **loader, desc="photos")
    ks, photo_ks, narrow = cfg.evaluate.ks, cfg.evaluate.photo_ks, cfg.search.narrow_top_categories
    result = compare(clean, photos, categories, ks, photo_ks, int(narrow))
    if "logits" in clean and not tuned.cfg.loss.classification_weight:
        log.warning(
            "loss.classification_weight is 0: the category head never trained, so accuracy, "
            "macro_f1 (and narrowing search by its logits) are at chance level"
        )

    metrics = result.metrics
    (Path(cfg.paths.reports_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _write_plots(result, categories, out_dir)
    cache = open_cache(cache_path)
    query_rows, gallery_rows = queries["cache_index"].to_numpy(), gallery["cache_index"].to_numpy()
    rows = plots.retrieval_rows(
        photos["finetuned"],
        photos["labels"],
        clean["finetuned"][~clean["is_query"]],
        clean["labels"][~clean["is_query"]],
        query_image=lambda i: simulation.simulate_uint8(cache[query_rows[i]], query_rows[i]),
        gallery_image=lambda i: cache[gallery_rows[i]],
        categories=categories,
        n=int(cfg.evaluate.gallery_queries),
    )
    title = (
        "fine-tuned model: simulated shopper photo -> top catalog results\n"
        "green frame: same category (hit), red: another category (miss)"
    )
    plots.save_retrieval_gallery(rows, out_dir / "retrieval_gallery.png", title)
    evaluated = {  # what register checks: these metrics belong to this checkpoint and data
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256(checkpoint),
        "data_version": data_version(catalog_dir),
        "image_size": size,
        "queries": len(queries),
        "gallery": len(gallery),
    }
    (out_dir / "evaluated.json").write_text(json.dumps(evaluated, indent=2) + "\n")
    _track(cfg, checkpoint, metrics, out_dir)
    base, tuned_recall = metrics["baseline"]["recall@1"], metrics["finetuned"]["recall@1"]
    log.info("test Recall@1: untuned backbone %.3f -> fine-tuned %.3f", base, tuned_recall)
    return metrics


def _write_plots(result: Comparison, categories: list[str], out_dir: Path) -> None:
    result.confusion_table(categories).to_csv(out_dir / "confusion.csv", index=False)
    plots.save_confusion(result.confusion, categories, out_dir / "confusion.png")
    result.per_category.to_csv(out_dir / "category_recall.csv", index=False)
    plots.save_category_recall(result.per_category, out_dir / "category_recall.png")


def _track(cfg: DictConfig, checkpoint: Path, metrics: dict, out_dir: Path) -> None:
    """Test metrics (``test/<model>/<metric>``) and plots onto the training run."""
    configure_mlflow(cfg.tracking.uri, cfg.tracking.experiment)
    client = MlflowClient()
    run_id = training_run_id(
        client, read_train_run(checkpoint), cfg.tracking.experiment, "evaluate"
    )
    now = int(time.time() * 1000)
    batch = [Metric(k, v, now, 0) for k, v in mlflow_metrics(metrics).items()]
    client.log_batch(run_id, metrics=batch)
    client.log_artifact(run_id, str(Path(cfg.paths.reports_dir) / "metrics.json"), "evaluation")
    for path in sorted(out_dir.iterdir()):
        client.log_artifact(run_id, str(path), "evaluation")
