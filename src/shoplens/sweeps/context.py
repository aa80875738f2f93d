"""The hand-over from the Optuna sweeper to the training loop running in the same process.

The sweeper launches each trial in-process (Hydra's basic launcher, as the BasicSweeper does),
so the live ``optuna.Trial`` never has to be serialised into the configuration: the sweeper
opens :func:`trial_scope`, and :func:`shoplens.pipeline.train.run` asks :func:`active_trial`
for the extra Lightning callbacks (pruning) and MLflow tags (nesting) of the current trial.

A :class:`contextvars.ContextVar` rather than a plain global: the value is scoped to the
``with`` block, so a trial that raises cannot leak its hook into the next trial, and nothing
changes for ``python train.py`` or ``dvc repro``, where :func:`active_trial` is ``None``.

This module stays import-light (no Optuna, no Lightning) because training imports it on every
run; the callback itself lives in :mod:`shoplens.sweeps.trial` and is imported on demand.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

MONITOR = "val/recall_at_1"  # = shoplens.training.module.MONITOR, without importing torch here


@dataclass
class TrialHook:
    """What one trial gives the training run, and what the training run gives back."""

    trial: Any  # optuna.trial.Trial (Any: keeps Optuna out of this module's imports)
    mlflow_tags: dict[str, str] = field(default_factory=dict)
    monitor: str = MONITOR
    # Filled in by the callback as soon as the training run's MLflow run exists, so the
    # sweeper can tag that run with the trial's final state (or knows that none was made).
    mlflow_run_id: str | None = None

    def callbacks(self) -> list[Any]:
        """Lightning callbacks for this trial: report each epoch, prune, record the run."""
        from shoplens.sweeps.trial import TrialCallback

        return [TrialCallback(self)]


_ACTIVE: ContextVar[TrialHook | None] = ContextVar("shoplens_optuna_trial", default=None)


def active_trial() -> TrialHook | None:
    """The trial the current training run belongs to, or ``None`` outside a sweep."""
    return _ACTIVE.get()


@contextmanager
def trial_scope(hook: TrialHook) -> Iterator[TrialHook]:
    """Make ``hook`` the active trial for the duration of the ``with`` block."""
    token = _ACTIVE.set(hook)
    try:
        yield hook
    finally:
        _ACTIVE.reset(token)
