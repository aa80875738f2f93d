"""The ``register`` stage: the evaluated checkpoint becomes a version of the registered model,
and the promotion gate decides whether alias ``champion`` moves to it.

Search loads ``models:/<registry.model_name>@champion``, so only a model that measurably beats
the current champion on the test set changes what shoppers get; anything else is kept as
``challenger`` for a person to inspect. Re-running with the same checkpoint reuses its version.
The decision and its reason go to ``reports/registry.json`` and onto the version's tags.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from omegaconf import DictConfig

from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, SPLIT, read_catalog
from shoplens.registry.export import log_embedder
from shoplens.registry.gate import CHAMPION, Standing, decide
from shoplens.registry.versions import (
    CHECKPOINT_TAG,
    DATA_TAG,
    aliases,
    apply_decision,
    champion_standing,
    find_version,
    metric_tags,
)
from shoplens.tracking import configure_mlflow, git_commit
from shoplens.tracking.runs import checkpoint_sha256, read_train_run, training_run_id
from shoplens.training.module import EmbedderModule

log = logging.getLogger(__name__)


class EvaluationMissing(FileNotFoundError):
    """No evaluation of this checkpoint: none in reports/, or one of another checkpoint."""


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise EvaluationMissing(f"{path} not found: run `shoplens evaluate` first")
    return json.loads(path.read_text())


def run(cfg: DictConfig) -> dict[str, Any]:
    checkpoint, reports = Path(cfg.evaluate.checkpoint), Path(cfg.paths.reports_dir)
    metrics = _read(reports / "metrics.json")
    evaluated = _read(reports / "evaluate" / "evaluated.json")
    sha = checkpoint_sha256(checkpoint)
    if evaluated["checkpoint_sha256"] != sha:
        raise EvaluationMissing(
            f"{reports / 'metrics.json'} was measured on another checkpoint than {checkpoint}: "
            "run `shoplens evaluate` again before registering"
        )
    configure_mlflow(cfg.tracking.uri, cfg.tracking.experiment)
    client, name = MlflowClient(), str(cfg.registry.model_name)
    # Metric tags always describe the latest evaluation of this exact model (and its data).
    measured = {DATA_TAG: evaluated["data_version"], **metric_tags(metrics)}
    existing = find_version(client, name, sha)
    if existing is None:
        version = _log_and_register(
            cfg, client, checkpoint, evaluated, {CHECKPOINT_TAG: sha, **measured}
        )
    else:
        version = int(existing.version)
        for key, value in measured.items():
            client.set_model_version_tag(name, str(version), key, value)
        log.info("checkpoint %s… is already %s v%d: reusing it", sha[:12], name, version)

    current = aliases(client, name)
    previous = current.get(CHAMPION)
    champion = None
    if previous is not None:
        champion = champion_standing(
            client, name, previous, evaluated["data_version"], Path(cfg.paths.catalog_dir)
        )
    recall = float(metrics["finetuned"]["recall@1"])
    candidate = Standing(version, recall, evaluated["data_version"])
    decision = decide(candidate, champion, float(cfg.registry.margin))

    apply_decision(client, name, version, decision, current)
    result = {
        "model_name": name,
        "version": version,
        "model_uri": f"models:/{name}/{version}",
        "decision": decision.alias,
        "promoted": int(decision.promote),
        "reused_version": int(existing is not None),
        "recall@1": recall,
        "margin": float(cfg.registry.margin),
        "champion_version": version if decision.promote else previous,
        "previous_champion_version": previous,
        "previous_champion_recall@1": champion.recall if champion else None,
        "champion_remeasured": int(bool(champion and champion.note)),
        "data_version": evaluated["data_version"],
        "reason": decision.reason,
    }
    (reports / "registry.json").write_text(json.dumps(result, indent=2) + "\n")
    log.info("%s v%d: %s", name, version, decision.reason)
    return result


def _log_and_register(cfg, client, checkpoint: Path, evaluated: dict, tags: dict) -> int:
    """Log the pyfunc model to the training run and register it as a new version."""
    module = EmbedderModule.load_from_checkpoint(checkpoint, map_location="cpu", pretrained=False)
    manifest, categories = read_catalog(cfg.paths.catalog_dir)
    rows = manifest.loc[manifest[SPLIT] == "test", "cache_index"].to_numpy()[:2]
    example = np.asarray(open_cache(Path(cfg.paths.catalog_dir) / CACHE_FILE)[rows])
    info = read_train_run(checkpoint)
    run_id = training_run_id(client, info, cfg.tracking.experiment, "register")
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id):
        model = log_embedder(
            module.embedder, int(evaluated["image_size"]), categories, example, Path(tmp)
        )
    # The code the model was trained with: the training run's commit, not today's.
    commit = client.get_run(run_id).data.tags.get("mlflow.source.git.commit") or git_commit()
    tags = {**tags, "shoplens.git_commit": commit, "shoplens.train_run_id": run_id}
    version = mlflow.register_model(model.model_uri, str(cfg.registry.model_name), tags=tags)
    return int(version.version)
