"""Training: every loss x freezing strategy runs, resume keeps the step, the model learns and
the run lands in MLflow. All on a tiny generated catalog with timm's test_efficientnet."""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning as L
import mlflow
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from shoplens.config import compose_config
from shoplens.pipeline import preprocess
from shoplens.pipeline import train as train_stage

ROOT = Path(__file__).resolve().parents[1]
LOSSES = sorted(p.stem for p in (ROOT / "conf" / "loss").glob("*.yaml"))
FREEZES = sorted(p.stem for p in (ROOT / "conf" / "freeze").glob("*.yaml"))
COLOURS = {
    "red": (200, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 60, 200),
    "gold": (220, 180, 30),
}
SHAPES = ("ellipse", "rectangle", "triangle", "cross")


def _product_photo(category_index: int, variant: int, rng: np.random.Generator) -> Image.Image:
    """A light background with a coloured shape: category = (colour, shape), with jitter."""
    colour = np.array(list(COLOURS.values())[category_index])
    image = Image.new("RGB", (40, 40), tuple(int(v) for v in rng.integers(215, 255, 3)))
    draw = ImageDraw.Draw(image)
    c = tuple(int(v) for v in np.clip(colour + rng.integers(-25, 25, 3), 0, 255))
    o = int(rng.integers(4, 10))
    shape = SHAPES[category_index]
    if shape == "ellipse":
        draw.ellipse((o, o, 40 - o, 40 - o), fill=c)
    elif shape == "rectangle":
        draw.rectangle((o, o + 4, 40 - o, 36 - o), fill=c)
    elif shape == "triangle":
        draw.polygon([(20, o), (o, 40 - o), (40 - o, 40 - o)], fill=c)
    else:
        draw.rectangle((16, o, 24, 40 - o), fill=c)
        draw.rectangle((o, 16, 40 - o, 24), fill=c)
    draw.point([tuple(int(v) for v in rng.integers(0, 40, 2)) for _ in range(variant % 7)], fill=c)
    return image


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A preprocessed tiny catalog: 4 categories x 16 products, 40 px photos."""
    tmp = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    for ci, category in enumerate(COLOURS):
        (tmp / "images" / category).mkdir(parents=True)
        for i in range(16):
            _product_photo(ci, i, rng).save(tmp / "images" / category / f"{category}_{i:02d}.png")
    cfg = compose_config(_overrides(tmp))
    preprocess.run(cfg)
    return tmp


def _overrides(tmp: Path, *extra: str) -> list[str]:
    return [
        "data=folder",
        f"data.root={tmp / 'images'}",
        "data.image_size=32",
        "data.batch_size=16",
        "data.num_workers=0",
        f"paths.catalog_dir={tmp / 'catalog'}",
        f"paths.reports_dir={tmp / 'reports'}",
        f"paths.artifacts_dir={tmp / 'artifacts'}",
        "preprocess.cache_size=32",
        "preprocess.near_duplicate_distance=0",
        "backbone.name=test_efficientnet",
        "backbone.pretrained=false",
        "model.embedding_dim=16",
        "trainer.enable_progress_bar=false",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
        "tracking.sample_batches=1",
        *extra,
    ]


@pytest.mark.parametrize("loss,freeze", list(itertools.product(LOSSES, FREEZES)))
def test_every_loss_and_freeze_strategy_runs(workspace, loss, freeze):
    cfg = compose_config(
        _overrides(
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


def test_model_learns_and_run_is_tracked(workspace):
    cfg = compose_config(
        _overrides(
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


def test_resume_continues_from_last_checkpoint_at_the_same_step(workspace):
    base = _overrides(
        workspace,
        "tracking.log_checkpoint=false",
        "trainer.early_stopping_patience=0",
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
