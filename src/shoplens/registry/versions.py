"""Model versions in the MLflow registry: what identifies them, what they record, and the
champion's standing on *this* test set.

A version carries tags: the checkpoints', the query spec's and the query code's sha256 (its
identity: registering the same pipeline again reuses the version instead of adding a
duplicate), the git commit and data version it was made from, its test metrics, and the
gate's decision. A champion measured on another data version is re-measured here, through
its own registered pyfunc model, on the current test split: Recall@1 on two different test
sets is not a comparison.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, QUERY, ROLE, SPLIT, read_catalog
from shoplens.evaluation.photo_benchmark import (
    Variant,
    answer,
    prior_of,
    run_benchmark,
    search_metrics,
)
from shoplens.evaluation.retrieval import recall_at_k, split_query_gallery
from shoplens.evaluation.shopper_photos import read_benchmark
from shoplens.evaluation.small_photos import SMALL_DIR
from shoplens.evaluation.small_photos import TABLE_FILE as SMALL_TABLE
from shoplens.registry.gate import CHALLENGER, Decision, Standing

log = logging.getLogger(__name__)

CHECKPOINT_TAG = "shoplens.checkpoint_sha256"
SHA_TAG = CHECKPOINT_TAG  # a task head's own registered model: its checkpoint
DATA_TAG = "shoplens.data_version"
RECALL_TAG = "test.recall_at_1"
PHOTO_TAG = "photos.category_at_1"
SMALL_TAG = "small_photos.category_at_1"  # the gate's small-photo number
LOCALIZER_TAG = "shoplens.localizer_sha256"
SUPER_RESOLVER_TAG = "shoplens.super_resolver_sha256"  # "none": small crops only letterboxed
SPEC_TAG = "shoplens.query_spec_sha256"  # same checkpoints, another pipeline: another version
CODE_TAG = "shoplens.query_code_sha256"  # ... and the same for another pipeline code
# What the version carries besides its networks' torch programs (e.g. "calibration,onnx"):
# a version packaged with less is not reused for the same checkpoints (the index stage could
# not set a no-match threshold from it, serving could not run ONNX).
PACKAGING_TAG = "shoplens.packaging"
# The served ONNX graphs' sha256 (one hash over all): the INT8 localizer's graph depends on its
# calibration and on whether it passed the agreement check, not on the checkpoints alone.
ONNX_TAG = "shoplens.onnx_sha256"
NETWORK_TAGS = (CHECKPOINT_TAG, LOCALIZER_TAG, SUPER_RESOLVER_TAG, SPEC_TAG, CODE_TAG, ONNX_TAG)
CHUNK = 512  # images per predict call when re-measuring


def _tag(name: str) -> str:
    return name.replace("@", "_at_")


def photo_score(metrics: dict) -> float | None:
    """The gate's photo number: category@1 of the query pipeline as registered (localizing
    when it has a localizer), None when evaluate measured no shopper photos."""
    photos = metrics.get("shopper_photos") or {}
    block = photos.get("pipeline") or photos.get("finetuned_frame")
    return None if block is None else float(block["all"]["category@1"])


def small_score(metrics: dict) -> float | None:
    """The gate's small-photo number: category@1 of the query pipeline as registered."""
    block = (metrics.get("small_photos") or {}).get("pipeline")
    return None if block is None else float(block["all"]["category@1"])


def metric_tags(metrics: dict) -> dict[str, str]:
    """``test.<metric>`` for the fine-tuned model, ``test.baseline.<metric>`` for the backbone,
    ``photos.<variant>.<metric>`` (every bucket for the registered pipeline, the whole
    benchmark for the others, localization too) and the gate's ``photos.category_at_1``."""
    tags = {}
    for block, values in metrics.items():
        if block in ("shopper_photos", "small_photos"):
            continue
        prefix = "test." if block == "finetuned" else f"test.{block}."
        tags |= {prefix + _tag(k): f"{v:.6g}" for k, v in values.items()}
    for variant, buckets in (metrics.get("shopper_photos") or {}).items():
        for bucket, values in buckets.items():
            if bucket != "all" and bucket != "localization" and variant != "pipeline":
                continue
            name = f"photos.{variant}." + ("" if bucket == "all" else f"{bucket}.")
            tags |= {name + _tag(k): f"{v:.6g}" for k, v in values.items() if k != "photos"}
    for variant, buckets in (metrics.get("small_photos") or {}).items():
        for bucket, values in buckets.items():
            name = f"small_photos.{variant}." + ("" if bucket == "all" else f"{bucket}.")
            tags |= {name + _tag(k): f"{v:.6g}" for k, v in values.items() if k != "photos"}
    if (score := photo_score(metrics)) is not None:
        tags[PHOTO_TAG] = f"{score:.6g}"
    if (score := small_score(metrics)) is not None:
        tags[SMALL_TAG] = f"{score:.6g}"
    return tags


def register_network(
    client: MlflowClient,
    name: str,
    network: torch.nn.Module,
    tags: dict[str, str],
    run_id: str,
    artifact: str,
    example: np.ndarray,
) -> int:
    """A version of a task head's own registered model (the localizer, the super-resolver):
    the one already registered from this checkpoint (``tags[SHA_TAG]``), its tags refreshed,
    or the network logged (MLflow's pytorch flavour) to ``run_id`` as ``artifact`` and
    registered."""
    sha = tags[SHA_TAG]
    found = client.search_model_versions(f"name = '{name}' and tags.`{SHA_TAG}` = '{sha}'")
    if found:
        version = min(int(mv.version) for mv in found)
        for key, value in tags.items():
            client.set_model_version_tag(name, str(version), key, value)
        return version
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(network.eval(), name=artifact, input_example=example)
    return int(mlflow.register_model(info.model_uri, name, tags=tags).version)


def aliases(client: MlflowClient, name: str) -> dict[str, int]:
    """alias -> version of the registered model (empty if it does not exist yet)."""
    found = client.search_registered_models(filter_string=f"name = '{name}'")
    return {alias: int(v) for alias, v in found[0].aliases.items()} if found else {}


def find_version(client: MlflowClient, name: str, identity: dict[str, str]) -> ModelVersion | None:
    """The version registered from these exact checkpoints (``identity``: tag -> sha256), if
    any (the oldest, should there be several from before this rule)."""
    query = " and ".join(
        [f"name = '{name}'", *(f"tags.`{k}` = '{v}'" for k, v in identity.items())]
    )
    found = client.search_model_versions(query)
    return min(found, key=lambda mv: int(mv.version)) if found else None


def apply_decision(
    client: MlflowClient, name: str, version: int, decision: Decision, current: dict[str, int]
) -> None:
    """Point the decision's alias at ``version`` (a promoted challenger stops being one) and
    record the decision and its reason on the version."""
    client.set_registered_model_alias(name, decision.alias, str(version))
    if decision.promote and current.get(CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, str(version), "shoplens.gate.decision", decision.alias)
    client.set_model_version_tag(name, str(version), "shoplens.gate.reason", decision.reason)


def tag_number(tags: dict[str, str], key: str) -> float | None:
    """A number a version was tagged with; None where it has none (the gate does not compare
    a number one side lacks)."""
    return float(tags[key]) if key in tags else None


def champion_standing(
    client: MlflowClient,
    name: str,
    version: int,
    data_version: str,
    catalog_dir: Path,
    photos_dir: Path | None = None,
) -> Standing:
    """The champion's test numbers, re-measured when its data version is not ``data_version``
    (its small-photo number also when it was registered without one)."""
    tags = client.get_model_version(name, str(version)).tags
    recorded, measured_on = tag_number(tags, RECALL_TAG), tags.get(DATA_TAG, "unknown")
    photo = tag_number(tags, PHOTO_TAG)
    if measured_on == data_version:
        small = tag_number(tags, SMALL_TAG)
        if small is None and photos_dir is not None:
            small = _remeasure_small(f"models:/{name}/{version}", catalog_dir, photos_dir)
        return Standing(version, recorded, measured_on, photo=photo, small=small)
    try:
        recall, photo = remeasure(f"models:/{name}/{version}", catalog_dir, photos_dir)
    except Exception as err:  # an old champion may not load with today's code: say so, go on
        log.warning("could not re-measure champion v%s: %s", version, err)
        note = (
            f"(Champion's recall@1 comes from data version {measured_on}, this model's from "
            f"{data_version}; re-measuring it failed: {err}.)"
        )
        return Standing(version, recorded, measured_on, note, photo)
    small = _remeasure_small(f"models:/{name}/{version}", catalog_dir, photos_dir)
    was = f"recorded {recorded:.4f}" if recorded is not None else "none recorded"
    note = (
        f"(Champion v{version} was measured on data version {measured_on}, this model on "
        f"{data_version}: champion re-measured on this test set, recall@1 {recall:.4f}, "
        f"{was}.)"
    )
    return Standing(version, recall, data_version, note, photo, small)


def _remeasure_small(model_uri: str, catalog_dir: Path, photos_dir: Path | None) -> float | None:
    """Small-photo category@1 of a registered query pipeline (None where there is no such
    benchmark, or the version cannot be loaded with today's code)."""
    directory = Path(photos_dir) / SMALL_DIR if photos_dir is not None else None
    if directory is None or not (directory / SMALL_TABLE).is_file():
        return None
    try:
        model = mlflow.pyfunc.load_model(model_uri)
        pipeline = model.unwrap_python_model().pipeline
        test, gallery, _ = _test_gallery(pipeline.embed_squares, catalog_dir)
        table = pd.read_parquet(directory / SMALL_TABLE).assign(bucket=lambda t: t["kind"])
        mode = "localize" if pipeline.can_localize else "frame"
        found = answer(Variant("registered", pipeline, mode), table, directory)
        if mode == "localize":
            found = found.closer_of_whole_and_crop(gallery)
        metrics = search_metrics(found.embeddings, gallery, table, test["category"].tolist(),
                                 test["product_id"].astype(str).tolist(),
                                 prior_of(pipeline, test["label"].to_numpy()),
                                 found.logits)  # fmt: skip
    except Exception as err:  # an old champion may not load with today's code: say so, go on
        log.warning("could not measure %s on the small photos: %s", model_uri, err)
        return None
    log.info("%s re-measured on the small photos: category@1 %.4f", model_uri,
             metrics["all"]["category@1"])  # fmt: skip
    return float(metrics["all"]["category@1"])


def _test_gallery(embed, catalog_dir: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """The test split, its photos embedded through ``embed`` (the catalog squares path), and
    the category head's logits (None: no head, or an old pyfunc that returns arrays)."""
    manifest, _ = read_catalog(catalog_dir)
    test = manifest[manifest[SPLIT] == "test"].reset_index(drop=True)
    cache = open_cache(Path(catalog_dir) / CACHE_FILE)
    rows = test["cache_index"].to_numpy()
    embedded = [embed(np.asarray(cache[rows[i : i + CHUNK]])) for i in range(0, len(rows), CHUNK)]
    logits = [getattr(e, "logits", None) for e in embedded]
    return (
        test,
        np.concatenate([getattr(e, "embeddings", e) for e in embedded]),
        None if any(part is None for part in logits) else np.concatenate(logits),
    )


def remeasure(
    model_uri: str, catalog_dir: Path, photos_dir: Path | None = None
) -> tuple[float, float | None]:
    """Test Recall@1 of a registered model on the catalog's test split via its pyfunc, and
    category@1 of its query pipeline on the shopper-photo benchmark (None for a version
    registered before it had one, or without a benchmark)."""
    model = mlflow.pyfunc.load_model(model_uri)
    pipeline = getattr(model.unwrap_python_model(), "pipeline", None)
    # Catalog squares through the pipeline's catalog path (the pyfunc's public input is photo
    # files); a version from before the query pipeline takes uint8 arrays in predict.
    test, gallery, logits = _test_gallery(pipeline.embed_squares if pipeline else model.predict,
                                          catalog_dir)  # fmt: skip
    embeddings = torch.from_numpy(gallery)
    labels = torch.tensor(test["label"].to_numpy())
    is_query = torch.tensor((test[ROLE] == QUERY).to_numpy())
    q, query_labels, g, gallery_labels = split_query_gallery(embeddings, labels, is_query)
    prior = None if pipeline is None else prior_of(pipeline, gallery_labels.numpy())
    bias = None  # ranked as search ranks with this version's spec (its category prior)
    if prior is not None and logits is not None:
        bias = prior.bias(logits[is_query.numpy()])
    recall = recall_at_k(q, query_labels, g, gallery_labels, ks=(1,), bias=bias)["recall@1"]
    if pipeline is None or photos_dir is None or not Path(photos_dir).is_dir():
        return recall, None
    mode = "localize" if pipeline.can_localize else "frame"
    metrics, _ = run_benchmark(
        [Variant("registered", pipeline, mode)],
        read_benchmark(photos_dir),
        Path(photos_dir),
        lambda _: gallery,
        test["category"].tolist(),
        test["product_id"].astype(str).tolist(),
        test["label"].to_numpy(),
    )
    return recall, float(metrics["registered"]["all"]["category@1"])
