"""Model versions in the MLflow registry: what identifies them, what they record, and the
champion's standing on *this* test set.

A version carries tags: the checkpoint's sha256 (its identity: registering the same checkpoint
again reuses the version instead of adding a duplicate), the git commit and data version it was
made from, its test metrics, and the gate's decision. A champion measured on another data
version is re-measured here, through its own registered pyfunc model, on the current test
split: Recall@1 on two different test sets is not a comparison.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, QUERY, ROLE, SPLIT, read_catalog
from shoplens.evaluation.retrieval import recall_at_k, split_query_gallery
from shoplens.registry.gate import CHALLENGER, Decision, Standing

log = logging.getLogger(__name__)

CHECKPOINT_TAG = "shoplens.checkpoint_sha256"
DATA_TAG = "shoplens.data_version"
RECALL_TAG = "test.recall_at_1"
CHUNK = 512  # images per predict call when re-measuring


def metric_tags(metrics: dict[str, dict[str, float]]) -> dict[str, str]:
    """``test.<metric>`` for the fine-tuned model, ``test.baseline.<metric>`` for the backbone."""
    tags = {}
    for block, values in metrics.items():
        prefix = "test." if block == "finetuned" else f"test.{block}."
        tags |= {prefix + k.replace("@", "_at_"): f"{v:.6g}" for k, v in values.items()}
    return tags


def aliases(client: MlflowClient, name: str) -> dict[str, int]:
    """alias -> version of the registered model (empty if it does not exist yet)."""
    found = client.search_registered_models(filter_string=f"name = '{name}'")
    return {alias: int(v) for alias, v in found[0].aliases.items()} if found else {}


def find_version(client: MlflowClient, name: str, checkpoint_sha256: str) -> ModelVersion | None:
    """The version registered from this exact checkpoint, if any (the oldest, should there be
    several from before this rule)."""
    query = f"name = '{name}' and tags.`{CHECKPOINT_TAG}` = '{checkpoint_sha256}'"
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


def champion_standing(
    client: MlflowClient, name: str, version: int, data_version: str, catalog_dir: Path
) -> Standing:
    """The champion's test Recall@1, re-measured when its data version is not ``data_version``."""
    tags = client.get_model_version(name, str(version)).tags
    recorded, measured_on = float(tags.get(RECALL_TAG, "nan")), tags.get(DATA_TAG, "unknown")
    if measured_on == data_version:
        return Standing(version, recorded, measured_on)
    try:
        recall = remeasure(f"models:/{name}/{version}", catalog_dir)
    except Exception as err:  # an old champion may not load with today's code: say so, go on
        log.warning("could not re-measure champion v%s: %s", version, err)
        note = (
            f"(Champion's recall@1 comes from data version {measured_on}, this model's from "
            f"{data_version}; re-measuring it failed: {err}.)"
        )
        return Standing(version, recorded, measured_on, note)
    note = (
        f"(Champion v{version} was measured on data version {measured_on}, this model on "
        f"{data_version}: champion re-measured on this test set, recall@1 {recall:.4f}, "
        f"recorded {recorded:.4f}.)"
    )
    return Standing(version, recall, data_version, note)


def remeasure(model_uri: str, catalog_dir: Path) -> float:
    """Test Recall@1 of a registered model on the catalog's test split, via its pyfunc."""
    manifest, _ = read_catalog(catalog_dir)
    test = manifest[manifest[SPLIT] == "test"]
    cache = open_cache(Path(catalog_dir) / CACHE_FILE)
    model = mlflow.pyfunc.load_model(model_uri)
    rows = test["cache_index"].to_numpy()
    embeddings = torch.from_numpy(
        np.concatenate(
            [
                model.predict(np.asarray(cache[rows[i : i + CHUNK]]))
                for i in range(0, len(rows), CHUNK)
            ]
        )
    )
    labels = torch.tensor(test["label"].to_numpy())
    is_query = torch.tensor((test[ROLE] == QUERY).to_numpy())
    q, query_labels, g, gallery_labels = split_query_gallery(embeddings, labels, is_query)
    return recall_at_k(q, query_labels, g, gallery_labels, ks=(1,))["recall@1"]
