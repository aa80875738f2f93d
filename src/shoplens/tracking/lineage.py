"""Where a run's data came from, in MLflow's own terms, so the UI answers "trained on what?".

DVC versions the bytes; MLflow records which version a run used: each stage logs the rows it
trained or measured on as an MLflow dataset input (name, the DVC data version as its digest, the
folder as its source, the table's schema; the rows stay in DVC), and a run made by
``dvc exp run`` carries the experiment's name (``DVC_EXP_NAME``, set by DVC) as a tag.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient

DVC_EXPERIMENT_TAG = "dvc.experiment"
DIGEST_CHARS = 36  # MLflow stores a dataset digest in 36 characters


def dvc_experiment_tags() -> dict[str, str]:
    """``{"dvc.experiment": name}`` inside ``dvc exp run``, else nothing."""
    name = os.environ.get("DVC_EXP_NAME")
    return {DVC_EXPERIMENT_TAG: name} if name else {}


def log_dataset(
    client: MlflowClient,
    run_id: str,
    table: pd.DataFrame,
    name: str,
    source: str | Path,
    data_version: str,
    context: str,
) -> None:
    """Log ``table``'s schema and profile as a dataset input of ``run_id``: ``context`` is
    training / evaluation; the digest is the DVC version (``dvc:<md5>``'s md5)."""
    digest = data_version.split(":")[-1][:DIGEST_CHARS]
    dataset = mlflow.data.from_pandas(table, source=str(source), name=name, digest=digest)
    status = client.get_run(run_id).info.status
    with mlflow.start_run(run_id=run_id):  # reopens the finished run, closes it as it was
        mlflow.log_input(dataset, context=context)
    if status != "RUNNING":
        client.set_terminated(run_id, status)
