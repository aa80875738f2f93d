"""Builds the Lightning Trainer and its callbacks from the ``trainer`` config group."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from shoplens.training.module import MONITOR


def build_trainer(
    cfg: DictConfig,
    train_dir: Path,
    logger: Logger | bool,
    extra_callbacks=(),
    monitor: str = MONITOR,
    max_epochs: int | None = None,
) -> tuple[L.Trainer, ModelCheckpoint]:
    """The ``trainer`` group's Trainer; ``monitor`` (maximised) picks ``best.ckpt``."""
    t = cfg.trainer
    checkpoint = ModelCheckpoint(
        dirpath=train_dir,
        filename="best",
        monitor=monitor,
        mode="max",
        save_last=True,
        enable_version_counter=False,  # re-runs overwrite best.ckpt instead of best-v1.ckpt
    )
    callbacks = [checkpoint, *extra_callbacks]
    if t.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor, mode="max", patience=t.early_stopping_patience))
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        precision=t.precision,
        max_epochs=t.max_epochs if max_epochs is None else max_epochs,
        fast_dev_run=t.fast_dev_run,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        # "warn": deterministic where the hardware has deterministic kernels, not a crash.
        deterministic="warn" if t.deterministic else False,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.enable_progress_bar,
        num_sanity_val_steps=t.num_sanity_val_steps,
        logger=logger,
        callbacks=callbacks,
        default_root_dir=str(train_dir),
    )
    return trainer, checkpoint
