"""``hydra.sweeper.*``: how a sweep runs, as one dataclass.

The Hydra config node (``hydra_plugins/shoplens_optuna_sweeper/config.py``) extends this class
with what only Hydra needs (``_target_``, the search space, output isolation), so a setting is
declared once and the sweep runner takes exactly what the command line set. Kept free of
Optuna and Hydra imports because Hydra imports the config node on every ``python train.py``.
"""

# No `from __future__ import annotations`: OmegaConf reads these annotations as types when
# Hydra registers the config node that extends this class.
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Settings:
    # The study: name and storage. Same name + same storage = the same study, resumed or
    # shared by several workers. storage None: $SHOPLENS_OPTUNA_STORAGE, else SQLite
    # <repository root>/optuna.db; many machines: postgresql+psycopg://user:pw@host/db
    study_name: str = "shoplens"
    storage: str | None = None
    n_trials: int = 20  # in total over all runs and workers, not per run
    direction: str = "maximize"  # the task returns validation Recall@1

    sampler: str = "tpe"  # tpe | random | cmaes | grid
    seed: int | None = 42  # trial n samples with seed + n
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. n_startup_trials
    pruner: str = "median"  # median | hyperband | percentile | threshold | none
    pruner_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. n_warmup_steps

    # Stop the sweep once more than this share of n_trials has failed (exception, NaN loss).
    max_failure_rate: float = 0.25
    # A worker that stops beating for grace_period (default 2 x interval) seconds, killed or
    # lost, has its trial failed and re-queued by the next worker. None: no heartbeat.
    heartbeat_interval: int | None = 60
    grace_period: int | None = None

    best_file: str | None = "reports/sweep/best.yaml"  # the winner's overrides
    mlflow: bool = True  # parent run per study, the trials' training runs nested under it
    # Parameter sets ({key: value}) the new study runs first, e.g. the default config, so
    # the sweep's best is compared with it under the same per-trial budget.
    enqueue: list[dict[str, Any]] = field(default_factory=list)
