"""Training: every loss x freezing strategy runs, resume keeps the step, the model learns and
the run lands in MLflow. All on the tiny generated catalog of conftest.py with timm's
test_efficientnet."""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning as L
import mlflow
import pytest
import torch

from shoplens.config import compose_config
from shoplens.pipeline import train as train_stage

ROOT = Path(__file__).resolve().parents[1]
LOSSES = sorted(p.stem for p in (ROOT / "conf" / "loss").glob("*.yaml") if p.stem != "base")
FREEZES = sorted(p.stem for p in (ROOT / "conf" / "freeze").glob("*.yaml") if p.stem != "base")


@pytest.mark.parametrize("loss,freeze", list(itertools.product(LOSSES, FREEZES)))
def test_every_loss_and_freeze_strategy_runs(workspace, overrides, loss, freeze):
    cfg = compose_config(
        overrides(
            workspace,
            f"loss={loss}",
            f"freeze={freeze}",
            "trainer.fast_dev_run=true",
            "freeze.trainable_stages=1",
            "tracking.log_checkpoint=false",
        )
    )
    result = train_stage.run(cfg)
    assert result["global_step"] == 1


def test_model_learns_and_run_is_tracked(workspace, overrides):
    cfg = compose_config(
        overrides(
            workspace,
            "trainer.max_epochs=4",
            "optimizer.lr=0.003",
            "tracking.run_name=learns",
            "augmentation=none",
        )
    )
    result = train_stage.run(cfg)
    assert result["val_recall@1"] > result["val_recall@1_initial"]

    mlflow.set_tracking_uri(cfg.tracking.uri)
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.params["loss/name"] == cfg.loss.name
    assert run.data.params["optimizer/lr"] == "0.003"
    assert run.data.tags["shoplens.data_version"].startswith(("dvc:", "unversioned:"))
    assert "mlflow.source.git.commit" in run.data.tags
    assert run.data.metrics["val/recall_at_1"] > 0
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"config.yaml", "checkpoints", "samples"} <= artifacts
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val/recall_at_1")
    assert len(history) >= 2


def test_resume_continues_from_last_checkpoint_at_the_same_step(workspace, overrides):
    base = overrides(
        workspace,
        "tracking.log_checkpoint=false",
        "callbacks.early_stopping=null",
        f"paths.artifacts_dir={workspace / 'resume'}",
    )
    first = train_stage.run(compose_config([*base, "trainer.max_epochs=1"]))
    last = workspace / "resume" / "train" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == first["global_step"] > 0
    assert state["optimizer_states"], "optimizer state must be saved for resume"

    class StartStep(L.Callback):
        def on_train_start(self, trainer, pl_module):
            self.step, self.epoch = trainer.global_step, trainer.current_epoch

    start = StartStep()
    second = train_stage.run(
        compose_config([*base, "trainer.max_epochs=2", "ckpt_path=last"]), extra_callbacks=[start]
    )
    assert (start.step, start.epoch) == (first["global_step"], 1)
    assert second["global_step"] == 2 * first["global_step"]


def test_samples_per_class_grows_until_batches_can_be_filled():
    from shoplens.training.datamodule import samples_per_class

    assert samples_per_class(4, 16, 4) == 4
    assert samples_per_class(4, 64, 10) == 8  # 4 x 10 classes cannot fill 64
    assert samples_per_class(3, 64, 100) == 4  # M must divide the batch
