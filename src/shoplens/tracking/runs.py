"""The training run that downstream stages (evaluate, register) attach their results to.

One MLflow run then tells the whole story of a model: its hyperparameters and curves (train),
its test metrics and plots (evaluate) and the logged model (register). ``train`` records the
run id in ``artifacts/train/run.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from shoplens.tracking.provenance import git_commit

log = logging.getLogger(__name__)


def read_train_run(checkpoint: str | Path) -> dict[str, Any]:
    """``run.json`` written by train beside the checkpoint (empty if there is none)."""
    path = Path(checkpoint).parent / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def training_run_id(client: MlflowClient, info: dict[str, Any], experiment: str, stage: str) -> str:
    """The training run's id if this store has it; else a new run for ``stage``.

    The fallback covers a checkpoint trained against another store (another machine, or a
    different ``MLFLOW_TRACKING_URI``): results are still tracked, in a run of their own.
    """
    run_id = info.get("mlflow_run_id")
    if run_id:
        try:
            return client.get_run(run_id).info.run_id
        except MlflowException:
            log.warning("training run %s is not in %s", run_id, mlflow.get_tracking_uri())
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    run = client.create_run(
        experiment_id,
        run_name=f"{stage}-without-training-run",
        tags={
            "shoplens.stage": stage,
            "mlflow.source.git.commit": git_commit(),
            "shoplens.data_version": str(info.get("data_version", "unknown")),
        },
    )
    client.set_terminated(run.info.run_id)
    log.warning("logging %s results to a new run %s instead", stage, run.info.run_id)
    return run.info.run_id


def checkpoint_sha256(path: str | Path) -> str:
    """Identity of a trained model: evaluate records it, register refuses metrics measured on
    another checkpoint and reuses the registered version that carries the same hash."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
