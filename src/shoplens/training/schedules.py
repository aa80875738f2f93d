"""Learning-rate schedules, stepped per optimizer step (warm-up needs that resolution)."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig
from torch.optim.lr_scheduler import LambdaLR, StepLR


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: DictConfig, steps_per_epoch: int, max_epochs: int
) -> dict | None:
    """A Lightning ``lr_scheduler`` config dict, or None for a constant rate."""
    if cfg.name == "none":
        return None
    if cfg.name == "step":
        scheduler = StepLR(optimizer, step_size=max(1, cfg.step_size), gamma=cfg.gamma)
        return {"scheduler": scheduler, "interval": "epoch"}
    if cfg.name != "cosine":
        raise ValueError(f"unknown scheduler '{cfg.name}': use cosine, step or none")
    total = max(1, steps_per_epoch * max_epochs)
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)

    # torch has no single warm-up + cosine scheduler; SequentialLR warns under Lightning's
    # stepping, so one LambdaLR keeps it a pure function of the step.
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return {"scheduler": LambdaLR(optimizer, factor), "interval": "step"}
