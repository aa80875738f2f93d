"""The ``train_localizer`` stage: the product localizer on copy-paste scenes, tracked in MLflow.

Train-split products on *train* backgrounds (fresh scenes every step), validated on val-split
products (fixed scenes); the shopper-photo benchmark, made from test products on eval
backgrounds, measures it in ``evaluate``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from shoplens.tracking import configure_mlflow, data_version, git_commit
from shoplens.training.localizer_module import MONITOR
from shoplens.training.localizer_setup import build
from shoplens.training.trainer import build_trainer

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True)
    loc = cfg.localizer
    out_dir = Path(loc.checkpoint).parent
    reports = Path(cfg.paths.reports_dir) / "localizer"
    module, datamodule = build(cfg)
    uri = configure_mlflow(cfg.tracking.uri, cfg.tracking.experiment)
    version = data_version(cfg.paths.catalog_dir)
    logger = instantiate(
        cfg.tracking.logger,
        run_name="localizer",
        tracking_uri=uri,
        tags={
            "mlflow.source.git.commit": git_commit(),
            "shoplens.stage": "train_localizer",
            "shoplens.data_version": version,
            "shoplens.backbone": cfg.backbone.name,
        },
    )
    logger.log_hyperparams({"localizer": OmegaConf.to_container(loc, resolve=True)})
    trainer, checkpoint = build_trainer(
        cfg.trainer, loc.callbacks, logger, max_epochs=int(loc.epochs)
    )
    trainer.fit(module, datamodule=datamodule)
    best = checkpoint.best_model_score
    result = {
        "val_mask_iou": float(best) if best is not None else None,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "best_checkpoint": checkpoint.best_model_path,
        "mlflow_run_id": logger.run_id,
        "data_version": version,
    }
    reports.mkdir(parents=True, exist_ok=True)
    metrics = {k: v for k, v in result.items() if isinstance(v, int | float)}
    (reports / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out_dir / "run.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    log.info("localizer: best %s = %s; MLflow run %s", MONITOR, best, logger.run_id)
    return result
