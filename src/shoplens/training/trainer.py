"""The Lightning Trainer, its callbacks and its logger, built from config by
``hydra.utils.instantiate`` (``trainer``, ``callbacks`` and ``tracking.logger`` nodes)."""

from __future__ import annotations

from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig


def build_callbacks(callbacks_cfg: DictConfig | None) -> list[L.Callback]:
    """Every non-null ``_target_`` node of ``callbacks_cfg``, in order."""
    nodes = callbacks_cfg.values() if callbacks_cfg is not None else ()
    return [instantiate(node) for node in nodes if node is not None]


def build_trainer(
    trainer_cfg: DictConfig,
    callbacks_cfg: DictConfig | None,
    logger: Logger | bool,
    extra_callbacks=(),
    **overrides: Any,
) -> tuple[L.Trainer, ModelCheckpoint]:
    """The Trainer with the configured callbacks (plus ``extra_callbacks``); returns it and
    its ModelCheckpoint, whose ``best_model_path`` downstream stages read."""
    callbacks = [*build_callbacks(callbacks_cfg), *extra_callbacks]
    checkpoints = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    if len(checkpoints) != 1:
        raise ValueError(f"expected one ModelCheckpoint callback, found {len(checkpoints)}")
    trainer = instantiate(trainer_cfg, logger=logger, callbacks=callbacks, **overrides)
    return trainer, checkpoints[0]
