"""The ``evaluate`` stage: does fine-tuning beat the pretrained backbone it started from, on
catalog shots and on shoppers' photos?

1. Clean retrieval: the test split's queries ranked against its gallery by the fine-tuned
   embedder and by the untuned backbone's pooled features (``baseline`` / ``finetuned`` blocks).
2. The shopper-photo benchmark (``shopper_photos`` block): test products photographed onto
   evaluation backgrounds, answered through the query pipeline against the whole test split,
   per variant (untuned / fine-tuned on the whole frame, ground-truth crops) and scale bucket.

``reports/metrics.json`` holds all of it (DVC metrics); plots go to ``reports/evaluate/`` and,
with the metrics, to the training run in MLflow.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric
from omegaconf import DictConfig
from tqdm import tqdm

from shoplens.data.cache import open_cache
from shoplens.data.catalog import (
    CACHE_FILE,
    CACHE_INDEX,
    LABEL,
    QUERY,
    ROLE,
    SPLIT,
    CatalogError,
    read_catalog,
)
from shoplens.evaluation import plots
from shoplens.evaluation.no_match import (
    CALIBRATION_FILE,
    Calibration,
    calibrate,
    recall_and_false_matches,
)
from shoplens.evaluation.out_of_catalog import read_out_of_catalog, read_out_of_catalog_photo
from shoplens.evaluation.photo_benchmark import (
    Answers,
    Variant,
    answer,
    localization_metrics,
    prior_of,
    run_benchmark,
    search_metrics,
)
from shoplens.evaluation.photo_plots import save_search_gallery
from shoplens.evaluation.report import Comparison, compare, mlflow_metrics
from shoplens.evaluation.shopper_photos import MASKS_DIR, read_benchmark, read_photo
from shoplens.evaluation.small_photos import SMALL_DIR
from shoplens.evaluation.small_photos import TABLE_FILE as SMALL_TABLE
from shoplens.models import Embedder, build_embedder
from shoplens.pipeline.int8_localizer import serve_int8_localizer
from shoplens.pipeline.query_setup import (
    baseline_pipeline,
    embedder_spec,
    load_localizer,
    load_super_resolver,
    torch_pipeline,
)
from shoplens.query import Embedded, QueryPipeline
from shoplens.registry.export import query_code_sha256
from shoplens.registry.onnx_export import OnnxExportError, check, disagreement, export_pipeline
from shoplens.tracking import configure_mlflow, data_version
from shoplens.tracking.lineage import log_dataset
from shoplens.tracking.runs import checkpoint_sha256, read_train_run, training_run_id
from shoplens.training.module import EmbedderModule

log = logging.getLogger(__name__)
CHECK_SQUARES, CHECK_PHOTOS = 32, 8  # real inputs the ONNX graphs are checked on
INT8_CHECK_PHOTOS = 32  # photos an INT8 localizer's masks must agree with the float one's on


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
    (out_dir / CALIBRATION_FILE).unlink(missing_ok=True)
    manifest, categories = read_catalog(catalog_dir)
    test = manifest[manifest[SPLIT] == "test"].reset_index(drop=True)
    is_query = test[ROLE] == QUERY
    if is_query.all() or not is_query.any():
        raise CatalogError(f"the test split of {catalog_dir} needs both queries and a gallery")

    tuned = EmbedderModule.load_from_checkpoint(checkpoint, map_location="cpu", pretrained=False)
    embedder, size = tuned.embedder.eval(), int(cfg.data.image_size)
    baseline = build_baseline(tuned.cfg, len(categories), int(cfg.seed))
    if tuned.cfg.data.image_size != size:
        log.warning("evaluating at %d px a model trained at %d px", size, tuned.cfg.data.image_size)

    spec = embedder_spec(embedder, size, catalog_dir)
    localizer = load_localizer(cfg.localizer.checkpoint)
    if localizer is None:
        log.warning("no localizer at %s: photos are searched whole", cfg.localizer.checkpoint)
    super_resolver = load_super_resolver(cfg)
    cache = open_cache(catalog_dir / CACHE_FILE)
    tuned_torch = torch_pipeline(cfg, embedder, localizer, super_resolver)
    onnx, tuned_onnx = _export_onnx(
        cfg, tuned_torch, embedder, localizer, super_resolver, cache, test
    )
    runtime = str(cfg.query.runtime)
    if runtime == "onnx" and tuned_onnx is None:
        log.warning("measuring with torch: %s", onnx["reason"])
        runtime = "torch"
    pipelines = {
        "baseline": baseline_pipeline(cfg, baseline, spec),
        "finetuned": tuned_onnx if runtime == "onnx" else tuned_torch,
    }
    galleries = {name: _embed_test(p, cache, test, name) for name, p in pipelines.items()}
    # Ranked as the registered spec ranks (its category prior; 0 for a model without a head).
    prior = pipelines["finetuned"].spec.category_prior
    metrics = _clean(cfg, test, categories, galleries, prior, out_dir)
    metrics["shopper_photos"], answers = _photos(cfg, test, pipelines, galleries, cache, out_dir)
    metrics["no_match"] = _no_match(cfg, pipelines["finetuned"], galleries, answers, out_dir)
    if small := _small_photos(cfg, test, pipelines["finetuned"], galleries["finetuned"]):
        metrics["small_photos"] = small
    (Path(cfg.paths.reports_dir) / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    evaluated = {  # what register checks: these metrics belong to this checkpoint and data
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256(checkpoint),
        "localizer_sha256": (
            checkpoint_sha256(cfg.localizer.checkpoint) if localizer is not None else "none"
        ),
        "super_resolver_sha256": (
            checkpoint_sha256(cfg.super_resolution.checkpoint)
            if super_resolver is not None
            else "none"
        ),
        "data_version": data_version(catalog_dir),
        # The query pipeline measured (crop, masking, whole-photo rule, limits): part of what
        # register identifies a version by, with the two checkpoints.
        "query_spec": pipelines["finetuned"].spec.to_dict(),
        "query_code_sha256": query_code_sha256(),  # ... and the code that ran it
        # What ran the fine-tuned networks, and the ONNX export register ships (or why not).
        "runtime": runtime,
        "onnx": onnx,
        "image_size": size,
        "queries": int(is_query.sum()),
        "gallery": int((~is_query).sum()),
    }
    (out_dir / "evaluated.json").write_text(json.dumps(evaluated, indent=2) + "\n")
    _track(cfg, checkpoint, metrics, out_dir, test, evaluated["data_version"])
    base, tuned_recall = metrics["baseline"]["recall@1"], metrics["finetuned"]["recall@1"]
    log.info("test Recall@1: untuned backbone %.3f -> fine-tuned %.3f", base, tuned_recall)
    return metrics


def _export_onnx(
    cfg, tuned: QueryPipeline, embedder, localizer, super_resolver, cache, test: pd.DataFrame
):
    """Export the fine-tuned networks to ONNX and check them against torch on real inputs
    (test catalog squares, benchmark photos): ``({"status": "ok", ...}, pipeline)``, or
    ``({"status": "failed", "reason": ...}, None)``."""
    out = Path(cfg.paths.artifacts_dir) / "onnx"
    shutil.rmtree(out, ignore_errors=True)
    try:
        exported, files = export_pipeline(tuned, embedder, localizer, out, super_resolver)
        rows = np.sort(test[CACHE_INDEX].to_numpy()[:CHECK_SQUARES])
        names = read_benchmark(cfg.paths.shopper_photos_dir)["photo"].head(INT8_CHECK_PHOTOS)
        photos = [read_photo(cfg.paths.shopper_photos_dir, name) for name in names]
        differences = disagreement(
            tuned, exported, np.asarray(cache[rows]), photos[:CHECK_PHOTOS]
        )  # fmt: skip
        check(differences, float(cfg.query.onnx_tolerance))
        int8, exported = serve_int8_localizer(cfg, exported, files, photos)
    except OnnxExportError as err:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)  # the stage's output exists either way; it says why it is empty
        (out / "FAILED.txt").write_text(f"{err}\n")
        return {"status": "failed", "reason": str(err)}, None
    log.info("ONNX export agrees with torch: %s", differences)
    sha = {name: checkpoint_sha256(path) for name, path in files.items()}
    return {"status": "ok", "max_difference": differences, "sha256": sha, **int8}, exported


def _embed_test(pipeline: QueryPipeline, cache, test: pd.DataFrame, name: str):
    """Every test image through the pipeline's catalog path (what the index stage runs)."""
    rows, parts = test[CACHE_INDEX].to_numpy(), []
    for start in tqdm(range(0, len(rows), 256), desc=f"test images ({name})", unit="batch"):
        parts.append(pipeline.embed_squares(np.asarray(cache[rows[start : start + 256]])))
    logits = [p.logits for p in parts if p.logits is not None]
    return Embedded(
        np.concatenate([p.embeddings for p in parts]), np.concatenate(logits) if logits else None
    )


def _clean(
    cfg, test: pd.DataFrame, categories, galleries, category_prior: float, out_dir: Path
) -> dict:
    """Catalog-shot retrieval (test queries against the test gallery), confusion matrix and
    per-category recall."""
    clean = {name: torch.from_numpy(g.embeddings) for name, g in galleries.items()}
    clean["labels"] = torch.from_numpy(test[LABEL].to_numpy())
    clean["is_query"] = torch.from_numpy((test[ROLE] == QUERY).to_numpy())
    if galleries["finetuned"].logits is not None:
        clean["logits"] = torch.from_numpy(galleries["finetuned"].logits)
    result = compare(clean, categories, cfg.evaluate.ks, int(cfg.search.narrow_top_categories),
                     category_prior)  # fmt: skip
    _write_plots(result, categories, out_dir)
    return result.metrics


def _photos(cfg, test: pd.DataFrame, pipelines, galleries, cache, out_dir: Path) -> dict:
    """The shopper-photo benchmark against the whole test split as the gallery."""
    photo_dir = Path(cfg.paths.shopper_photos_dir)
    table = read_benchmark(photo_dir)
    by_embedder = {id(pipelines[name].embedder): g.embeddings for name, g in galleries.items()}

    def gallery(pipeline: QueryPipeline) -> np.ndarray:
        return by_embedder[id(pipeline.embedder)]

    tuned = pipelines["finetuned"]
    unmasked = tuned.spec.with_options(mask_background=False)
    variants = [
        Variant("baseline_frame", pipelines["baseline"], "frame"),
        Variant("finetuned_frame", tuned, "frame"),
        Variant("oracle_box", tuned.with_spec(unmasked), "oracle_box"),
        Variant("oracle_mask", tuned, "oracle_mask"),
    ]
    if tuned.can_localize:
        variants.insert(2, Variant("pipeline", tuned, "localize"))
    products, cats = test["product_id"].astype(str).tolist(), test["category"].tolist()
    labels = test[LABEL].to_numpy()
    metrics, answers = run_benchmark(variants, table, photo_dir, gallery, cats, products, labels)
    _photo_gallery(cfg, table, answers, variants, gallery, test, cache, out_dir)
    pd.DataFrame(
        [
            {"variant": v, "bucket": b, "bar": f"{v} / {b}", **m}
            for v, buckets in metrics.items()
            for b, m in buckets.items()
            if b != "localization"
        ]
    ).to_csv(out_dir / "shopper_photos.csv", index=False)
    return metrics, answers


def _small_photos(cfg, test: pd.DataFrame, tuned: QueryPipeline, gallery: Embedded) -> dict:
    """The small-photo benchmark against the whole test split, through the query pipeline
    with its super-resolver and, when it has one, without: what super-resolution buys; and
    the same from the true product mask instead of the localizer's: how much of what is lost
    is localization ({} when the shopper_photos stage made no small photos)."""
    directory = Path(cfg.paths.shopper_photos_dir) / SMALL_DIR
    if not (directory / SMALL_TABLE).is_file():
        return {}
    table = pd.read_parquet(directory / SMALL_TABLE).assign(bucket=lambda t: t["kind"])
    mode = "localize" if tuned.can_localize else "frame"
    variants = [Variant("pipeline", tuned, mode)]
    # The pipeline with super-resolution switched the other way, when it carries a network.
    switchable = tuned.super_resolver is not None and tuned.spec.upscale is not None
    on = tuned.spec.super_resolve
    flipped = tuned.with_spec(tuned.spec.with_options(super_resolve=not on))
    suffix = "_no_sr" if on else "_sr"
    if switchable:
        variants.append(Variant(f"pipeline{suffix}", flipped, mode))
    if (directory / MASKS_DIR).is_dir():  # the ceiling: the crop a perfect localizer would make
        variants.append(Variant("oracle_mask", tuned, "oracle_mask"))
        if switchable:
            variants.append(Variant(f"oracle_mask{suffix}", flipped, "oracle_mask"))
    products, cats = test["product_id"].astype(str).tolist(), test["category"].tolist()
    metrics, labels = {}, test[LABEL].to_numpy()
    for variant in variants:
        found = answer(variant, table, directory)
        if variant.mode == "localize":
            found = found.closer_of_whole_and_crop(gallery.embeddings)
        metrics[variant.name] = search_metrics(found.embeddings, gallery.embeddings, table,
                                               cats, products, prior_of(tuned, labels),
                                               found.logits)  # fmt: skip
        # Whether the localizer found the small product says where photos are lost (the
        # pipeline's boxes once: super-resolution, switched the other way, acts after them).
        localized = variant.mode == "localize" and variant.name == "pipeline"
        if localized and (directory / MASKS_DIR).is_dir():
            side = tuned.spec.localizer.input_size
            metrics[variant.name]["localization"] = localization_metrics(
                found.results, table, directory, side
            )
    return metrics


def _no_match(cfg, tuned: QueryPipeline, galleries, answers, out_dir: Path) -> dict:
    """The "no confident match" threshold against the test gallery, and the calibration
    photos' query embeddings for the index stage to choose the served gallery's threshold
    (:mod:`shoplens.evaluation.no_match` says why both)."""
    photo_dir = Path(cfg.paths.shopper_photos_dir)
    table = read_out_of_catalog(photo_dir)
    if table is None:
        raise FileNotFoundError(
            f"no out-of-catalog photos in {photo_dir}: run `shoplens shopper_photos` again"
        )
    gallery = galleries["finetuned"].embeddings
    searched = answers["pipeline" if tuned.can_localize else "finetuned_frame"]
    results = []
    for start in tqdm(range(0, len(table), 32), desc="out-of-catalog photos", unit="batch"):
        names = table["photo"].iloc[start : start + 32]
        results += tuned.query_batch([read_out_of_catalog_photo(photo_dir, n) for n in names])
    foreign = Answers(np.stack([r.embeddings[0] for r in results]), results)
    calibration = Calibration(
        searched.embeddings,
        foreign.closer_of_whole_and_crop(gallery).embeddings,
        table["kind"].to_numpy(str),
        float(cfg.evaluate.no_match_recall),
        int(cfg.seed),
    )
    calibration.save(out_dir / CALIBRATION_FILE)

    def top_score(queries: np.ndarray) -> np.ndarray:
        return (queries @ gallery.T).max(axis=1)

    result = calibrate(calibration, top_score, "the test gallery")
    recall, false_matches = recall_and_false_matches(calibration, top_score)
    plots.save_no_match_curve(recall, false_matches, result, out_dir / "no_match.png")
    return result


def _photo_gallery(cfg, table, answers, variants, gallery, test, cache, out_dir: Path) -> None:
    """What a shopper would see for a few benchmark photos, boxes drawn (the variant that
    localizes if there is one, else the fine-tuned model on the whole frame)."""
    chosen = next((v for v in variants if v.mode == "localize"), variants[1])
    found = answers[chosen.name]
    g = gallery(chosen.pipeline)
    picks = table.groupby("bucket", sort=False).head(2).index[: int(cfg.evaluate.gallery_queries)]
    prior, rows = prior_of(chosen.pipeline, test[LABEL].to_numpy()), []
    logits = None if found.logits is None else found.logits[np.asarray(picks)]
    bias = None if prior is None else prior.bias(logits)  # ranked as search ranks them
    for n, i in enumerate(picks):
        record = table.loc[i]
        scores = g @ found.embeddings[i]
        ranked = scores if bias is None else scores + bias[n].numpy()
        top = np.argsort(-ranked)[:5]
        results = [
            plots.Result(
                np.asarray(cache[int(test.iloc[j][CACHE_INDEX])]),
                str(test.iloc[j]["category"]),
                float(scores[j]),
                str(test.iloc[j]["category"]) == record["category"],
            )
            for j in top
        ]
        result = found.results[i]
        boxes = [d.box for d in result.detections] if result else []
        searched = result.searched[0] if result and result.localized else -1
        exact = (
            "  [own product #1]"
            if str(test.iloc[top[0]]["product_id"]) == record["product_id"]
            else ""
        )
        caption = f"{record['bucket']}\n{record['category']}{exact}"
        truth = (record["x0"], record["y0"], record["x1"], record["y1"])
        rows.append(
            (
                read_photo(cfg.paths.shopper_photos_dir, record["photo"]),
                truth,
                boxes,
                searched,
                caption,
                results,
            )
        )
    title = (
        f"{chosen.name}: shopper photo (dashed: true box, blue: searched box) -> top catalog results\n"
        "green frame: right category, red: another category"
    )
    save_search_gallery(rows, out_dir / "retrieval_gallery.png", title)


def _write_plots(result: Comparison, categories: list[str], out_dir: Path) -> None:
    result.confusion_table(categories).to_csv(out_dir / "confusion.csv", index=False)
    plots.save_confusion(result.confusion, categories, out_dir / "confusion.png")
    result.per_category.to_csv(out_dir / "category_recall.csv", index=False)
    plots.save_category_recall(result.per_category, out_dir / "category_recall.png")


def _flat(metrics: dict) -> dict[str, dict[str, float]]:
    """Nested benchmark blocks -> MLflow-sized ``{block: {metric: value}}``."""
    nested = {"shopper_photos": "photos", "small_photos": "small_photos"}
    flat = {k: v for k, v in metrics.items() if k not in nested}
    for block, short in nested.items():
        for variant, buckets in metrics.get(block, {}).items():
            flat[f"{short}/{variant}"] = {
                f"{bucket}/{name}": value
                for bucket, values in buckets.items()
                for name, value in values.items()
                if name != "photos"
            }
    return flat


def _track(cfg: DictConfig, checkpoint: Path, metrics: dict, out_dir: Path, test, version) -> None:
    """Test metrics (``test/<block>/<metric>``), plots and the test split (as an evaluation
    dataset input) onto the training run."""
    configure_mlflow(cfg.tracking.uri, cfg.tracking.experiment)
    client = MlflowClient()
    run_id = training_run_id(
        client, read_train_run(checkpoint), cfg.tracking.experiment, "evaluate"
    )
    log_dataset(client, run_id, test, "catalog (test)", cfg.paths.catalog_dir, version,
                "evaluation")  # fmt: skip
    now = int(time.time() * 1000)
    batch = [Metric(k, v, now, 0) for k, v in mlflow_metrics(_flat(metrics)).items()]
    for start in range(0, len(batch), 1000):  # MLflow takes at most 1,000 metrics per batch
        client.log_batch(run_id, metrics=batch[start : start + 1000])
    client.log_artifact(run_id, str(Path(cfg.paths.reports_dir) / "metrics.json"), "evaluation")
    for path in sorted(out_dir.iterdir()):
        client.log_artifact(run_id, str(path), "evaluation")
