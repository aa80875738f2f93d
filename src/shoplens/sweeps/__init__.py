"""Sweeps: ``python train.py -m hparams_search=finetune`` runs an Optuna study (the sweeper
in ``hydra_plugins``) whose trials run in-process: ``train.py`` asks :func:`active_trial` for
their callbacks and MLflow tags. Light to import: ``train.py`` imports it on every run."""

# No `from __future__ import annotations`: OmegaConf reads Settings' annotations as types.
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Settings:
    """``hydra.sweeper.*`` (the Hydra config node adds ``_target_``)."""

    study_name: str = "shoplens"  # + storage: the study, resumed or shared by several workers
    storage: str | None = None  # $SHOPLENS_OPTUNA_STORAGE, else <repo>/optuna.db; or PostgreSQL
    n_trials: int = 20  # in total over all runs and workers, not per run
    direction: str = "maximize"  # the task returns validation Recall@1
    sampler: str = "tpe"  # tpe | random | cmaes | grid
    seed: int | None = 42  # trial n samples with seed + n
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. n_startup_trials
    pruner: str = "median"  # median | hyperband | percentile | threshold | none
    pruner_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. n_warmup_steps
    max_failure_rate: float = 0.25  # share of n_trials that may fail (exception, NaN loss)
    # Storage heartbeat (seconds; None: off): the trial of a worker silent for grace_period
    # (None: 2 x heartbeat_interval) is failed and run again by the next worker.
    heartbeat_interval: int | None = 60
    grace_period: int | None = None
    best_file: str | None = "reports/sweep/best.yaml"  # the winner's overrides
    mlflow: bool = True  # parent run per study, the trials' training runs nested under it
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # {key: value}s run first
    params: dict[str, Any] | None = None  # key: override grammar (choice, interval...) or value
    # "key=value": {key: override grammar}; only sampled when key took that value.
    conditional: dict[str, dict[str, Any]] | None = None
    isolate_outputs: bool = True  # trials write in their Hydra job folders, not DVC's


@dataclass
class TrialHook:
    """What a trial gives its training run, and what the run gives back to the sweeper."""

    trial: Any  # optuna.trial.Trial
    mlflow_tags: dict[str, str] = field(default_factory=dict)  # nest the run in the study's
    mlflow_run_id: str | None = None  # the training run's, once it exists
    pruned: BaseException | None = None  # the TrialPruned that stopped training

    def callbacks(self) -> list[Any]:
        """Lightning callbacks: report each epoch to the trial, prune, record the run id."""
        from shoplens.sweeps.pruning import TrialCallback

        return [TrialCallback(self)]


# The trial that the current training run belongs to (set by the sweep); None outside one.
ACTIVE: ContextVar[TrialHook | None] = ContextVar("shoplens_optuna_trial", default=None)
active_trial = ACTIVE.get
