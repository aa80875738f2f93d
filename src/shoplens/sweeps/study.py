"""The Optuna study behind a sweep: where it is stored, how it samples and prunes, and how
many trials it still owes.

* Storage: an RDB (SQLite ``optuna.db`` at the repository root by default, absolute so every
  working directory shares it; PostgreSQL for many machines). Several workers on one storage
  share the study; ``study.ask()`` creates each trial in one transaction, so no two workers
  ever get the same trial.
* Budget: ``n_trials`` is the study's total, not "this many more": re-running the same command
  resumes. A trial counts when COMPLETE, PRUNED, FAIL or RUNNING (another worker has it),
  except a trial that was re-queued because its worker was interrupted or died: its retry
  counts instead. Two workers may ask at the same moment for the last slot; the trial with
  the higher number then yields (:func:`within_budget`).
* Sampling is seeded per trial (``seed + trial.number``): a single worker replays the same
  sweep, and concurrent workers, which share the seed, still sample different parameters.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning
from optuna.samplers import BaseSampler
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from shoplens.config import repo_root

RETRY_OF = "shoplens.retry_of"  # user attr of a re-queued trial: the number it replaces
SURPLUS = "shoplens.surplus"  # user attr of a trial asked after the budget was used up
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
ENV_STORAGE = "SHOPLENS_OPTUNA_STORAGE"


def storage_url(configured: str | None = None) -> str:
    """The configured URL, else ``$SHOPLENS_OPTUNA_STORAGE``, else ``<repo>/optuna.db``."""
    return configured or os.environ.get(ENV_STORAGE) or f"sqlite:///{repo_root() / 'optuna.db'}"


def requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Run an interrupted trial's parameters again, as a new trial that replaces it."""
    study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})


def make_storage(url: str, heartbeat_interval: int | None, grace_period: int | None):
    sqlite = url.startswith("sqlite")
    # SQLite: wait for the write lock instead of failing when two workers commit at once.
    engine = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    for attempt in range(3):  # workers starting together race to create a new DB's tables
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=engine,
                    heartbeat_interval=heartbeat_interval or None,
                    grace_period=grace_period or None,
                    heartbeat_stale_trial_callback=requeue,
                )
        except SQLAlchemyError:
            if attempt == 2:
                raise
            time.sleep(1 + attempt)


def make_sampler(name: str, seed: int | None, kwargs: dict[str, Any], grid=None) -> BaseSampler:
    """``tpe`` (default), ``random``, ``cmaes``: seeded per trial; ``grid`` over ``grid()``."""
    samplers = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
    }
    if name == "grid":  # its seed shuffles the grid itself: the same seed for every worker
        return _GridSampler(grid() if callable(grid) else grid, seed=seed, **kwargs)
    if name not in samplers:
        raise ValueError(f"unknown sampler {name!r}: choose from {[*samplers, 'grid']}")
    return _PerTrialSeed(lambda s: samplers[name](seed=s, **kwargs), seed)


class _PerTrialSeed(BaseSampler):
    """Delegates each trial to a fresh sampler seeded with ``seed + trial.number``.

    Optuna's samplers keep their random state in the process, so two workers with the same
    seed would propose the same parameters. Everything else they need (TPE's history,
    CMA-ES's state, the grid's visited points) they read from the storage, so a fresh instance
    per trial loses nothing.
    """

    def __init__(self, factory, seed: int | None):
        self._factory, self._seed = factory, seed
        self._inner = factory(seed)

    def before_trial(self, study, trial) -> None:
        if self._seed is not None:
            self._inner = self._factory(self._seed + trial.number)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._inner.after_trial(study, trial, state, values)

    def is_exhausted(self, study) -> bool:
        return bool(getattr(self._inner, "is_exhausted", lambda s: False)(study))


def make_pruner(name: str, kwargs: dict[str, Any]) -> optuna.pruners.BasePruner:
    """A pruner by name; ``kwargs`` go to its constructor, over shoplens' defaults.

    The defaults suit short fine-tuning runs: never prune in the first epoch (the heads are
    still random and recall is noise) nor before a few trials have set the bar.
    """
    pruners = {
        "median": (optuna.pruners.MedianPruner, {"n_startup_trials": 3, "n_warmup_steps": 1}),
        "percentile": (
            optuna.pruners.PercentilePruner,
            {"percentile": 25.0, "n_startup_trials": 3},
        ),
        "hyperband": (optuna.pruners.HyperbandPruner, {"min_resource": 1}),
        "threshold": (optuna.pruners.ThresholdPruner, {}),  # e.g. lower: 0.2, hopeless runs
        "none": (optuna.pruners.NopPruner, {}),
    }
    if name not in pruners:
        raise ValueError(f"unknown pruner {name!r}: choose from {list(pruners)}")
    cls, defaults = pruners[name]
    return cls(**{**defaults, **kwargs})


class _GridSampler(optuna.samplers.GridSampler):
    """GridSampler calls ``study.stop()`` when the grid is used up, which only works inside
    ``study.optimize``; our loop checks ``is_exhausted`` instead."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def open_study(name: str, storage, sampler, pruner, direction: str) -> tuple[optuna.Study, bool]:
    """Create the study, or join it; ``True`` when this worker created it."""
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, sampler=sampler, pruner=pruner, direction=direction
        )
        return study, True
    except DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    if study.direction.name.lower() != direction.lower():
        raise ValueError(f"study {name!r} exists with direction {study.direction.name}")
    return study, False


def counted(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that use up the budget (see the module docstring)."""
    replaced = {t.user_attrs.get(RETRY_OF) for t in trials} - {None}
    return [
        t
        for t in trials
        if t.state in COUNTED and t.number not in replaced and not t.user_attrs.get(SURPLUS)
    ]


def trials_used(study: optuna.Study) -> list[FrozenTrial]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # dead workers' trials: FAIL + re-queued
    return counted(study.get_trials(deepcopy=False))


def within_budget(study: optuna.Study, trial_number: int, n_trials: int) -> bool:
    """Whether a freshly asked trial fits: fewer than ``n_trials`` counted trials before it."""
    earlier = [t for t in trials_used(study) if t.number < trial_number]
    return len(earlier) < n_trials


def failures(study: optuna.Study) -> int:
    return sum(t.state == TrialState.FAIL for t in trials_used(study))
