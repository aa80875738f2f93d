"""Learning-rate schedules as Lightning ``lr_scheduler`` dicts, built from the ``scheduler``
config group: ``instantiate(cfg.scheduler)(optimizer, steps_per_epoch, max_epochs)``.

torch has no single warm-up + cosine scheduler (SequentialLR warns under Lightning's
stepping), so :func:`warmup_cosine` is one LambdaLR: a pure function of the step.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, StepLR


def warmup_cosine(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, max_epochs: int, warmup_epochs: float
) -> dict:
    """Linear warm-up over ``warmup_epochs``, then cosine decay to zero, stepped per batch."""
    total = max(1, steps_per_epoch * max_epochs)
    warmup = min(int(warmup_epochs * steps_per_epoch), total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return {"scheduler": LambdaLR(optimizer, factor), "interval": "step"}


def step_decay(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, max_epochs: int,
    step_size: int, gamma: float,
) -> dict:  # fmt: skip
    """torch's StepLR, stepped per epoch."""
    scheduler = StepLR(optimizer, step_size=max(1, step_size), gamma=gamma)
    return {"scheduler": scheduler, "interval": "epoch"}


def constant(optimizer: torch.optim.Optimizer, steps_per_epoch: int, max_epochs: int) -> None:
    """No schedule: Lightning keeps the optimizer's rate."""
    return None


def one_cycle(optimizer: torch.optim.Optimizer, total_steps: int, max_lr: float,
              pct_start: float = 0.1) -> OneCycleLR:  # fmt: skip
    """torch's OneCycleLR (the localizer's schedule), whose warm-up is kept at two steps at
    least: with fewer it divides by zero (a smoke run of a few steps)."""
    pct = min(0.5, max(pct_start, 2.0 / max(1, total_steps)))
    return OneCycleLR(optimizer, max_lr=max_lr, total_steps=max(total_steps, 4), pct_start=pct)
