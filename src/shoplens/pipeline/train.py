"""The ``train`` stage: fine-tune the backbone on the catalog, tracked in MLflow.

Returns the best validation Recall@1, the objective a sweep maximises.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from shoplens.data.augment import build_eval_transform, build_train_transform
from shoplens.data.backgrounds import TRAIN, read_pool
from shoplens.data.cache import open_cache
from shoplens.data.catalog import (
    CACHE_FILE,
    SPLIT,
    read_categories,
    read_framing,
    read_manifest,
)
from shoplens.data.photo_crops import build_photo_transform
from shoplens.tracking import configure_mlflow, data_version, git_commit
from shoplens.tracking.lineage import dvc_experiment_tags, log_dataset
from shoplens.training.callbacks import HistoryWriter, SampleBatchLogger
from shoplens.training.datamodule import CatalogDataModule
from shoplens.training.module import MONITOR, EmbedderModule
from shoplens.training.trainer import build_trainer

log = logging.getLogger(__name__)
_GREY = np.full((8, 8, 3), 128, np.uint8)  # no backgrounds needed when nothing is pasted


def _flat_params(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True)
    return json.loads(json.dumps(container, default=str))


def _resume_path(cfg: DictConfig, train_dir: Path) -> str | None:
    if cfg.ckpt_path in (None, ""):
        return None
    path = train_dir / "last.ckpt" if cfg.ckpt_path == "last" else Path(cfg.ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: checkpoint {path} does not exist")
    return str(path)


def _train_transform(cfg: DictConfig, spec, views: bool):
    """The shopper-photo augmentation, with copy-paste onto the *train* backgrounds when it
    is on (and a second, clean view of each shot for an instance loss). Returns the transform
    and whether it takes product masks."""
    size, aug = int(cfg.data.image_size), cfg.augmentation
    shopper = build_train_transform(aug, size, spec.mean, spec.std)
    clean = build_eval_transform(size, spec.mean, spec.std)
    if not (aug.enabled and aug.copy_paste.probability > 0) and not views:
        return shopper, False
    catalog_dir = Path(cfg.paths.catalog_dir)
    pasting = aug.enabled and aug.copy_paste.probability > 0
    backgrounds = read_pool(cfg.paths.backgrounds_dir, TRAIN) if pasting else {"none": _GREY}
    side = int(open_cache(catalog_dir / CACHE_FILE).shape[1])
    transform = build_photo_transform(
        aug, shopper, clean, backgrounds, read_framing(catalog_dir), side, size,
        spec.mean, spec.std, views=2 if views else 1,
    )  # fmt: skip
    return transform, True


def run(cfg: DictConfig, extra_callbacks=(), extra_tags=None) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    train_dir = Path(cfg.paths.artifacts_dir) / "train"
    reports_dir = Path(cfg.paths.reports_dir) / "train"
    categories = read_categories(cfg.paths.catalog_dir)  # the data module reads the manifest
    resume = _resume_path(cfg, train_dir)

    module = EmbedderModule(OmegaConf.to_container(cfg, resolve=True), len(categories))
    spec = module.embedder.preprocessing
    train_transform, masks = _train_transform(cfg, spec, module.loss.needs_views)
    datamodule = CatalogDataModule(
        cfg.paths.catalog_dir,
        train_transform=train_transform,
        eval_transform=build_eval_transform(cfg.data.image_size, spec.mean, spec.std),
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        samples_per_class=cfg.loss.samples_per_class,
        train_masks=masks,
    )

    uri = configure_mlflow(cfg.tracking.uri, cfg.tracking.experiment)
    version = data_version(cfg.paths.catalog_dir)
    logger = instantiate(
        cfg.tracking.logger,
        tracking_uri=uri,
        tags={
            "mlflow.source.git.commit": git_commit(),
            "shoplens.stage": "train",
            "shoplens.data_version": version,
            "shoplens.backbone": cfg.backbone.name,
            "shoplens.loss": cfg.loss.name,
            "shoplens.freeze": cfg.freeze.strategy,
            **dvc_experiment_tags(),
            **(extra_tags or {}),
        },
    )
    logger.log_hyperparams(_flat_params(cfg))
    callbacks = [
        HistoryWriter(reports_dir / "history.csv", fresh=resume is None),
        SampleBatchLogger(cfg.tracking.sample_batches, spec.mean, spec.std),
        *extra_callbacks,
    ]
    trainer, checkpoint = build_trainer(cfg.trainer, cfg.callbacks, logger, callbacks)

    initial = None
    if resume is None and not cfg.trainer.fast_dev_run:
        # Recall@1 of the untrained projection: the "epoch 0" every epoch must beat.
        initial = trainer.validate(module, datamodule=datamodule, verbose=False)[0][MONITOR]
        logger.log_metrics({"val/recall_at_1_initial": initial}, step=0)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)

    best = checkpoint.best_model_score
    result = {
        "val_recall@1": float(best) if best is not None else None,
        "val_recall@1_initial": initial,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "best_checkpoint": checkpoint.best_model_path,
        "mlflow_run_id": logger.run_id,
        "data_version": version,
    }
    reports_dir.mkdir(parents=True, exist_ok=True)
    metrics = {k: v for k, v in result.items() if isinstance(v, int | float)}
    (reports_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (train_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    # Downstream stages (evaluate, register) attach to this run and read the checkpoint.
    (train_dir / "run.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    client, run_id = logger.experiment, logger.run_id
    manifest = read_manifest(cfg.paths.catalog_dir)
    trained_on = manifest[manifest[SPLIT].isin(["train", "val"])]
    log_dataset(client, run_id, trained_on, "catalog (train + val)", cfg.paths.catalog_dir,
                version, "training")  # fmt: skip
    client.log_artifact(run_id, str(train_dir / "config.yaml"))
    if cfg.tracking.log_checkpoint and checkpoint.best_model_path:
        client.log_artifact(run_id, checkpoint.best_model_path, artifact_path="checkpoints")
    if (reports_dir / "history.csv").exists():
        client.log_artifact(run_id, str(reports_dir / "history.csv"))
    log.info("best %s = %s (initial %s); MLflow run %s", MONITOR, best, initial, run_id)
    return result
