"""The evaluate stage on a tiny trained model: both metric blocks, plots, MLflow, and a baseline
that really is the untuned backbone's pooled features."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from shoplens.config import compose_config
from shoplens.data.augment import build_eval_transform
from shoplens.data.catalog import read_catalog
from shoplens.data.dataset import CachedImages
from shoplens.evaluation.no_match import CALIBRATION_FILE, Calibration, calibrate
from shoplens.evaluation.retrieval import map_at_r, recall_at_k
from shoplens.models import build_embedder
from shoplens.pipeline import evaluate
from shoplens.registry.onnx_export import FILES
from shoplens.tracking.runs import checkpoint_sha256

RETRIEVAL = {"recall@1", "recall@5", "recall@10", "map_at_r"}
VARIANTS = {"baseline_frame", "finetuned_frame", "oracle_box", "oracle_mask"}
PHOTO_METRICS = {"category@1", "category@5", "product@1", "photos"}


@pytest.fixture(scope="module")
def evaluated(trained):
    cfg = compose_config(trained)
    return cfg, evaluate.run(cfg)


def _test_features(cfg, model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features of the test split through the plain eval transform, computed independently."""
    manifest, _ = read_catalog(cfg.paths.catalog_dir)
    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    spec = model.preprocessing
    transform = build_eval_transform(cfg.data.image_size, spec.mean, spec.std)
    dataset = CachedImages(test, Path(cfg.paths.catalog_dir) / "images.npy", transform)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.no_grad():
        return (
            model.pooled_features(images),
            torch.tensor(dataset.labels),
            torch.tensor(dataset.is_query),
        )


def test_metrics_have_both_blocks_with_every_key_in_unit_range(evaluated):
    cfg, metrics = evaluated
    assert json.loads((Path(cfg.paths.reports_dir) / "metrics.json").read_text()) == metrics
    assert set(metrics["baseline"]) == RETRIEVAL
    narrowed = {"narrowed_recall@1", "narrowed_recall@5", "narrowed_recall@10"}
    # Recall@K ranks as search does (with the category prior); cosine_recall@K without it.
    assert cfg.query.category_prior > 0
    cosine = {"cosine_recall@1", "cosine_recall@5", "cosine_recall@10"}
    assert set(metrics["finetuned"]) == RETRIEVAL | {"accuracy", "macro_f1"} | narrowed | cosine
    for name in ("baseline", "finetuned"):
        block = metrics[name]
        assert all(0.0 <= v <= 1.0 for v in block.values()), block
        assert block["recall@1"] <= block["recall@5"] <= block["recall@10"]
    # accuracy is the head's predictions that confusion.csv lists, so the two must agree.
    confusion = pd.read_csv(Path(cfg.paths.reports_dir) / "evaluate" / "confusion.csv")
    agree = (confusion["actual"] == confusion["predicted"]).mean()
    assert metrics["finetuned"]["accuracy"] == pytest.approx(agree)


def test_baseline_is_the_untuned_backbones_pooled_features(evaluated):
    cfg, metrics = evaluated
    torch.manual_seed(cfg.seed)  # the stage seeds the (here random) untuned backbone likewise
    untuned = build_embedder(cfg.backbone, cfg.model, num_classes=4).eval()
    features, labels, is_query = _test_features(cfg, untuned)
    assert features.shape[1] == untuned.backbone.num_features != cfg.model.embedding_dim
    q, ql, g, gl = features[is_query], labels[is_query], features[~is_query], labels[~is_query]
    expected = recall_at_k(q, ql, g, gl, ks=(1, 5, 10)) | {"map_at_r": map_at_r(q, ql, g, gl)}
    for name, value in expected.items():
        assert metrics["baseline"][name] == pytest.approx(value, abs=1e-6), name


def test_plots_are_written_and_readable(evaluated):
    cfg, _ = evaluated
    out = Path(cfg.paths.reports_dir) / "evaluate"
    manifest, categories = read_catalog(cfg.paths.catalog_dir)
    confusion = pd.read_csv(out / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"]
    assert len(confusion) == (manifest["split"] == "test").sum()
    assert set(confusion["actual"]) | set(confusion["predicted"]) <= set(categories)
    per_category = pd.read_csv(out / "category_recall.csv")
    assert set(per_category["model"]) == {"baseline", "finetuned"}
    assert per_category["recall_at_1"].between(0, 1).all()
    for name in ("confusion.png", "category_recall.png", "retrieval_gallery.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and min(image.size) > 200, name
    assert json.loads((out / "evaluated.json").read_text())["image_size"] == cfg.data.image_size


def test_metrics_and_plots_land_on_the_training_run(evaluated):
    cfg, metrics = evaluated
    run_id = json.loads((Path(cfg.paths.artifacts_dir) / "train" / "run.json").read_text())[
        "mlflow_run_id"
    ]
    mlflow.set_tracking_uri(cfg.tracking.uri)
    logged = mlflow.get_run(run_id).data.metrics
    assert logged["test/finetuned/recall_at_1"] == pytest.approx(metrics["finetuned"]["recall@1"])
    photos = metrics["shopper_photos"]["finetuned_frame"]["all"]
    assert logged["test/photos/finetuned_frame/all/category_at_5"] == pytest.approx(
        photos["category@5"]
    )
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/retrieval_gallery.png"} <= artifacts


def test_narrowing_searches_only_the_heads_top_categories():
    """Query 0 (category 0) has a nearer look-alike from category 1 than its own category's
    image. Narrowed to a head that is right, the look-alike is out of the way; narrowed to a head
    that is wrong, the query cannot find its category at all."""
    from shoplens.evaluation.report import narrowed_recall

    gallery = torch.tensor([[1.0, 0.0], [0.8, 0.6]])  # category 1 look-alike, category 0 item
    gallery_labels = torch.tensor([1, 0])
    queries, query_labels = torch.tensor([[0.99, 0.14]]), torch.tensor([0])
    assert recall_at_k(queries, query_labels, gallery, gallery_labels, ks=(1,))["recall@1"] == 0

    def narrowed(logits):
        args = (queries, torch.tensor([logits]), query_labels, gallery, gallery_labels, (1, 2))
        return narrowed_recall(*args, top_categories=1)

    assert narrowed([2.0, 0.0]) == {"narrowed_recall@1": 1.0, "narrowed_recall@2": 1.0}
    assert narrowed([0.0, 2.0]) == {"narrowed_recall@1": 0.0, "narrowed_recall@2": 0.0}


def test_recall_stays_small_in_deterministic_mode():
    """Regression: torchmetrics' deterministic bincount made a 1,100 x 1,100 val set take
    ~20 GB; training runs with deterministic algorithms on."""
    import resource

    import torch

    from shoplens.evaluation.retrieval import recall_at_k

    generator = torch.Generator().manual_seed(0)
    q, g = torch.randn(700, 16, generator=generator), torch.randn(700, 16, generator=generator)
    labels = torch.arange(700) % 10
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        recalls = recall_at_k(q, labels, g, labels, ks=(1, 5))
        assert torch.are_deterministic_algorithms_enabled()  # restored afterwards
    finally:
        torch.use_deterministic_algorithms(False)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 1000, f"recall_at_k grew peak memory by {grown_mb:.0f} MB"
    assert 0.0 <= recalls["recall@1"] <= recalls["recall@5"] <= 1.0


def test_shopper_photo_block_has_every_variant_and_bucket_with_consistent_metrics(evaluated):
    """A product hit is a category hit (its own catalog photo has its category), and a hit in
    the top 1 is a hit in the top 5; buckets partition the photos."""
    cfg, metrics = evaluated
    photos = metrics["shopper_photos"]
    assert set(photos) == VARIANTS  # no localizer trained here: no "pipeline" variant
    for variant, buckets in photos.items():
        assert set(buckets["all"]) == PHOTO_METRICS
        assert buckets["all"]["photos"] == cfg.evaluate.photos.photos
        assert (
            sum(b["photos"] for name, b in buckets.items() if name != "all")
            == (buckets["all"]["photos"])
        ), variant
        for values in buckets.values():
            assert 0 <= values["product@1"] <= values["category@1"] <= values["category@5"] <= 1
    table = pd.read_csv(Path(cfg.paths.reports_dir) / "evaluate" / "shopper_photos.csv")
    assert set(table["variant"]) == VARIANTS


def test_the_benchmark_answers_with_the_closer_of_whole_photo_and_crop():
    """What the service does with a catalog-like shot, evaluate measures: per photo, the
    whole photo's embedding replaces the crop's only where it finds a closer gallery match."""
    from shoplens.evaluation.photo_benchmark import Answers
    from shoplens.query import QueryResult

    gallery = np.eye(3, dtype=np.float32)
    crop = np.array([[0.6, 0.8, 0.0], [0.0, 0.6, 0.8]], np.float32)
    whole = [np.array([1.0, 0.0, 0.0], np.float32), np.array([0.0, 0.0, 0.7], np.float32)]

    def result(i):
        return QueryResult(10, 10, [], crop[i : i + 1], None, [-1], whole_embedding=whole[i])

    chosen = Answers(crop, [result(0), result(1)]).closer_of_whole_and_crop(gallery)
    np.testing.assert_array_equal(chosen.embeddings[0], whole[0])  # 1.0 > 0.8: the whole photo
    np.testing.assert_array_equal(chosen.embeddings[1], crop[1])  # 0.7 < 0.8: the crop
    np.testing.assert_allclose(crop[0], [0.6, 0.8, 0.0])  # the input is left as it was


def test_localization_tells_a_missed_product_from_a_searched_distractor(tmp_path):
    """Three photos with a product (box A) and a distractor (box B): the pipeline searched A;
    found both and searched B; found only B. One searched the right product, two found it,
    and the distractor was searched in two of the three."""
    from shoplens.evaluation.photo_benchmark import localization_metrics
    from shoplens.evaluation.shopper_photos import MASKS_DIR
    from shoplens.query import Detection, QueryResult

    a, b = (4, 4, 20, 20), (26, 26, 36, 36)
    (tmp_path / MASKS_DIR).mkdir()
    mask = np.zeros((40, 40), np.uint8)
    mask[4:20, 4:20], mask[26:36, 26:36] = 1, 2
    for name in ("0", "1", "2"):
        Image.fromarray(mask).save(tmp_path / MASKS_DIR / f"{name}.png")
    table = pd.DataFrame(
        {"photo": ["0", "1", "2"], "x0": 4, "y0": 4, "x1": 20, "y1": 20,
         "distractor_box": [np.array(b)] * 3}
    )  # fmt: skip

    def result(boxes, searched):
        found = [Detection(box, 0.9, 0.1, i + 1) for i, box in enumerate(boxes)]
        return QueryResult(40, 40, found, np.zeros((1, 2), np.float32), None, [searched])

    results = [result([a, b], 0), result([a, b], 1), result([b], 0)]
    numbers = localization_metrics(results, table, tmp_path, input_size=40)
    assert numbers["searched_right_product"] == pytest.approx(1 / 3)
    assert numbers["product_detected@0.5"] == pytest.approx(2 / 3)
    assert numbers["searched_distractor"] == pytest.approx(2 / 3)
    assert numbers["product_found"] == 1.0
    # The small-photo benchmark's table has no distractor column: nothing to be distracted by.
    small = localization_metrics(results, table.drop(columns="distractor_box"), tmp_path, 40)
    assert "searched_distractor" not in small
    assert small["product_detected@0.5"] == pytest.approx(2 / 3)


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_no_match_threshold_keeps_the_target_share_and_reports_on_the_other_half():
    """Query embeddings whose top score against a one-vector gallery is known exactly: the
    in-catalog photos score 0.50..0.99, the out-of-catalog ones 0.30..0.79."""
    rng = np.random.default_rng(0)
    inside, outside = np.linspace(0.5, 0.99, 200), np.linspace(0.3, 0.79, 90)

    def at_score(scores):  # unit vectors with cosine `scores` to the gallery's e0
        return np.stack([scores, np.sqrt(1 - scores**2), np.zeros_like(scores)], axis=1)

    calibration = Calibration(
        at_score(rng.permutation(inside)), at_score(outside),
        np.array(["scene", "face", "shape"] * 30), target_recall=0.9, seed=3,
    )  # fmt: skip
    gallery = np.array([[1.0, 0.0, 0.0]], np.float32)
    result = calibrate(calibration, lambda q: (q @ gallery.T).max(axis=1))
    threshold = result["match_threshold"]
    assert 0.5 + 0.1 * 0.49 - 0.02 < threshold < 0.5 + 0.1 * 0.49 + 0.02  # the 10% quantile
    assert result["in_catalog_recall"] == pytest.approx(0.9, abs=0.05)
    assert result["false_match_rate"] == pytest.approx(np.mean(outside >= threshold), abs=0.1)
    assert {"false_match_rate/scene", "false_match_rate/face", "false_match_rate/shape"} <= set(
        result
    )
    assert 0.8 < result["auroc"] < 1.0  # overlapping scores: separable, not perfectly
    apart = Calibration(at_score(inside), at_score(outside - 0.29), calibration.out_kinds, 0.9, 3)
    assert calibrate(apart, lambda q: (q @ gallery.T).max(axis=1))["false_match_rate"] == 0.0
    with pytest.raises(ValueError, match="target_recall"):
        Calibration(calibration.in_catalog, calibration.out_of_catalog, apart.out_kinds, 1.5, 3)


def test_evaluate_calibrates_no_match_and_saves_the_photos_it_used(evaluated):
    cfg, metrics = evaluated
    block = metrics["no_match"]
    assert block["target_recall"] == cfg.evaluate.no_match_recall
    assert block["out_of_catalog_photos"] == cfg.evaluate.photos.out_of_catalog
    assert block["in_catalog_photos"] == cfg.evaluate.photos.photos
    assert all(0.0 <= block[k] <= 1.0 for k in ("in_catalog_recall", "false_match_rate", "auroc"))
    out = Path(cfg.paths.reports_dir) / "evaluate"
    saved = Calibration.load(out / CALIBRATION_FILE)
    assert saved.in_catalog.shape == (cfg.evaluate.photos.photos, cfg.model.embedding_dim)
    assert np.allclose(np.linalg.norm(saved.out_of_catalog, axis=1), 1.0, atol=1e-4)
    with Image.open(out / "no_match.png") as image:
        assert image.format == "PNG"


def test_evaluate_measures_the_onnx_graphs_it_checked_against_torch(evaluated):
    cfg, _ = evaluated
    record = json.loads((Path(cfg.paths.reports_dir) / "evaluate" / "evaluated.json").read_text())
    assert record["runtime"] == "onnx" and record["onnx"]["status"] == "ok"
    differences = record["onnx"]["max_difference"]
    assert "embedding" in differences and max(differences.values()) <= cfg.query.onnx_tolerance
    for name, sha in record["onnx"]["sha256"].items():
        path = Path(cfg.paths.artifacts_dir) / "onnx" / FILES[name]
        assert checkpoint_sha256(path) == sha


def test_the_training_run_names_the_data_it_trained_and_was_measured_on(evaluated):
    """Lineage in MLflow: dataset inputs whose digest is the DVC data version."""
    cfg, _ = evaluated
    info = json.loads((Path(cfg.paths.artifacts_dir) / "train" / "run.json").read_text())
    mlflow.set_tracking_uri(cfg.tracking.uri)
    inputs = mlflow.get_run(info["mlflow_run_id"]).inputs.dataset_inputs
    by_context = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in inputs
    }
    assert set(by_context) == {"training", "evaluation"}
    digest = info["data_version"].split(":")[-1][:36]
    assert {d.digest for d in by_context.values()} == {digest}
    assert "train + val" in by_context["training"].name and "test" in by_context["evaluation"].name
    assert mlflow.get_run(info["mlflow_run_id"]).info.status == "FINISHED"
