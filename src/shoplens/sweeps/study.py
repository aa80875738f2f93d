"""The Optuna study behind a sweep, run by Optuna's ``study.optimize``.

* Storage: SQLite ``optuna.db`` at the repository root, or PostgreSQL, shared by workers. The
  heartbeat of a dead worker stops; the next worker to ask fails its trial and queues it again
  (``RetryHeartbeatStaleTrialCallback``), as Ctrl-C does at once.
* Budget: ``n_trials`` is the study's total: re-running the command resumes. A trial counts when
  COMPLETE, PRUNED, FAIL or RUNNING, unless it was retried (its retry counts) or asked when
  earlier trials had used the budget up (``SURPLUS``: two workers asked at once).
* Outcomes: value -> COMPLETE, ``TrialPruned`` -> PRUNED, exception or NaN -> FAIL (why:
  ``shoplens.error``), until more than ``max_failure_rate`` failed.
"""

from __future__ import annotations

import copy
import math
import os
import socket
import warnings
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from shoplens.project import repo_root
from shoplens.sweeps import ACTIVE, Settings, TrialHook
from shoplens.sweeps.best import OVERRIDES_ATTR, write_best
from shoplens.sweeps.runs import ERROR_ATTR, RUN_ATTR, SweepRuns, retry_races
from shoplens.sweeps.space import SearchSpace
from shoplens.tracking import redact

warnings.filterwarnings("ignore", category=ExperimentalWarning)  # the heartbeat's, since v2
SURPLUS = "shoplens.surplus"  # user attr of a trial asked after the budget was used up
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler"}
PRUNERS = {  # shoplens' defaults: no pruning in epoch 0 (random heads) nor before 3 trials
    "median": ("MedianPruner", {"n_startup_trials": 3, "n_warmup_steps": 1}),
    "percentile": ("PercentilePruner", {"percentile": 25.0, "n_startup_trials": 3}),
    "hyperband": ("HyperbandPruner", {"min_resource": 1}),
    "threshold": ("ThresholdPruner", {}),  # e.g. lower: 0.2, for hopeless runs
    "none": ("NopPruner", {}),
}


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a lost trial's parameters again (not its user attrs); a third loss is a FAIL."""
    trial = copy.copy(trial)
    trial.user_attrs = {}
    RetryHeartbeatStaleTrialCallback(max_retry=2)(study, trial)


def make_storage(url: str, heartbeat_interval: int | None, grace_period: int | None):
    # SQLite: wait for the write lock instead of failing when two workers commit at once.
    sqlite = url.startswith("sqlite")
    engine = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    beat = dict(heartbeat_interval=heartbeat_interval or None, grace_period=grace_period or None)
    beat["heartbeat_stale_trial_callback"] = retry  # as Optuna's callback, without user attrs
    return retry_races(lambda: RDBStorage(url, engine, **beat))


def make_sampler(name: str, seed: int | None, kwargs: dict[str, Any], grid=None) -> Any:
    if name == "grid":  # its seed shuffles the grid: the same for every worker
        return optuna.samplers.GridSampler(grid(), seed, **kwargs)
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}: choose from {[*SAMPLERS, 'grid']}")
    cls = getattr(optuna.samplers, SAMPLERS[name])
    return cls(**kwargs) if seed is None else PerTrialSeed(lambda s: cls(seed=s, **kwargs), seed)


class PerTrialSeed:
    """A fresh sampler per trial, seeded ``seed + trial.number`` (the history is in the storage):
    one worker replays a sweep, and workers that share a seed still sample different values."""

    def __init__(self, factory, seed: int):
        self.factory, self.seed, self.inner = factory, seed, factory(seed)

    def before_trial(self, study, trial) -> None:
        self.inner = self.factory(self.seed + trial.number)
        self.inner.before_trial(study, trial)

    def __getattr__(self, name: str) -> Any:  # every other sampler method: the trial's sampler
        return getattr(self.inner, name)


def make_pruner(name: str, kwargs: dict[str, Any]) -> optuna.pruners.BasePruner:
    if name not in PRUNERS:
        raise ValueError(f"unknown pruner {name!r}: choose from {list(PRUNERS)}")
    cls, defaults = PRUNERS[name]
    return getattr(optuna.pruners, cls)(**{**defaults, **kwargs})


def used(study: optuna.Study, before: float = math.inf) -> list[FrozenTrial]:
    """The trials that use up the budget (see above), or those numbered below ``before``."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    counted = [t for t in trials if t.state in COUNTED and not t.user_attrs.get(SURPLUS)]
    return [t for t in counted if t.number not in retried and t.number < before]


class SweepFailedError(RuntimeError):
    """Too many trials failed: the search space or the data is broken, not a trial."""


class SweepRunner:
    """``launch(overrides, number)`` runs a trial (its value, or raises); ``tracking`` is
    MLflow's ``(uri, experiment)``."""

    def __init__(self, settings: Settings, space: SearchSpace, launch, tracking=None):
        self.s, self.space, self.launch, self.tracking = settings, space, launch, tracking
        default = f"sqlite:///{repo_root() / 'optuna.db'}"
        self.url = settings.storage or os.environ.get("SHOPLENS_OPTUNA_STORAGE") or default
        self.runs: SweepRuns | None = None

    def run(self) -> optuna.Study:
        s = self.s
        storage = make_storage(self.url, s.heartbeat_interval, s.grace_period)
        sampler = make_sampler(s.sampler, s.seed, s.sampler_kwargs, self.space.grid)
        pruner = make_pruner(s.pruner, s.pruner_kwargs)
        kwargs = dict(study_name=s.study_name, storage=storage, sampler=sampler, pruner=pruner)
        try:  # creating a study is atomic: only its creator enqueues and makes the MLflow parent
            study, created = optuna.create_study(direction=s.direction, **kwargs), True
        except DuplicatedStudyError:
            study, created = optuna.load_study(**kwargs), False
        for params in s.enqueue if created else ():
            study.enqueue_trial(params, skip_if_exists=True)
        if s.mlflow and self.tracking:
            self.runs = SweepRuns(*self.tracking, study, created)
        optuna.storages.fail_stale_trials(study)  # dead workers' trials: failed and retried
        grid_done = isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study)
        try:
            if len(used(study)) < s.n_trials and not grid_done:
                callbacks = [*([self.runs] if self.runs else []), self.stop_when_done]
                study.optimize(self.objective, catch=(Exception,), callbacks=callbacks)
        finally:
            trials = used(study)
            done = len(trials) >= s.n_trials and TrialState.RUNNING not in {t.state for t in trials}
            best = write_best(study, s.best_file, redact(self.url)) if s.best_file else None
            if self.runs:
                self.runs.finish(done, best)
        return study

    def objective(self, trial: optuna.Trial) -> float | None:
        if len(used(trial.study, before=trial.number)) >= self.s.n_trials:
            trial.set_user_attr(SURPLUS, True)  # other workers asked for the last slot first
            trial.study.stop()
            raise RuntimeError(f"the study already has its {self.s.n_trials} trials")
        hook = TrialHook(trial, self.runs.child_tags(trial.number) if self.runs else {})
        active = ACTIVE.set(hook)
        try:
            overrides = self.space.sample(trial)
            trial.set_user_attr(OVERRIDES_ATTR, overrides)
            trial.set_user_attr("shoplens.worker", f"{socket.gethostname()}:{os.getpid()}")
            value = self.launch(overrides, trial.number)
        except optuna.TrialPruned:
            raise
        except BaseException as err:
            cause = err  # Ctrl-C: KeyboardInterrupt, Lightning's SystemExit after one, or wrapped
            while cause and not isinstance(cause, KeyboardInterrupt | SystemExit):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                trial.set_user_attr(ERROR_ATTR, f"{type(err).__name__}: {err}"[:2000])
                raise
            trial.set_user_attr("shoplens.interrupted", True)  # and the next run runs it again:
            retry(trial.study, trial.study.get_trials(deepcopy=False)[trial.number])
            raise KeyboardInterrupt from err  # which Optuna records as FAIL, then re-raises
        finally:
            ACTIVE.reset(active)
            if hook.mlflow_run_id:
                trial.set_user_attr(RUN_ATTR, hook.mlflow_run_id)
        if value is None or not math.isfinite(value):  # Optuna records it as FAIL
            trial.set_user_attr(ERROR_ATTR, f"the objective was {value}")
        return value

    def stop_when_done(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: the study-wide budget and failure rate, whoever ran the trials."""
        trials, s = used(study), self.s
        if sum(t.state == TrialState.FAIL for t in trials) > s.max_failure_rate * s.n_trials:
            rate = f"{s.max_failure_rate:.0%} of {s.n_trials}"
            raise SweepFailedError(f"more than {rate} trials failed: see their {ERROR_ATTR!r}")
        if len(trials) >= s.n_trials:
            study.stop()
