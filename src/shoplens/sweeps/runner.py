"""The sweep loop: ask Optuna for a trial, run it in this process, tell Optuna how it went.

Ask-and-tell (rather than ``study.optimize``) because Hydra owns the job: composition, output
folder, logging. Each iteration launches one Hydra job through the configured launcher with
the trial active (:func:`shoplens.sweeps.context.trial_scope`), then classifies its outcome:

* a value              -> COMPLETE (the objective, maximised by default)
* ``TrialPruned``      -> PRUNED   (raised by the pruning callback inside Lightning)
* any other exception  -> FAIL, and the sweep goes on, until more than
  ``max_failure_rate * n_trials`` trials of the study have failed
* Ctrl-C / SystemExit  -> FAIL marked interrupted, parameters re-queued, then re-raised; the
  next run of the same command runs them again and the interrupted trial does not count.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from shoplens.sweeps import study as studies
from shoplens.sweeps.best import OVERRIDES_ATTR, write_best
from shoplens.sweeps.context import TrialHook, trial_scope
from shoplens.sweeps.runs import SweepRuns
from shoplens.sweeps.settings import Settings
from shoplens.sweeps.space import SearchSpace
from shoplens.sweeps.trial import Heartbeat, Interrupts
from shoplens.tracking import redact

log = logging.getLogger(__name__)


class SweepFailedError(RuntimeError):
    """Too many trials failed: the search space or the data is broken, not a trial."""


class SweepRunner:
    def __init__(
        self,
        settings: Settings,
        space: SearchSpace,
        launch: Callable[[list[str], int], Any],
        tracking: tuple[str | None, str] | None = None,
    ):
        self.s, self.space, self.launch, self.tracking = settings, space, launch, tracking
        self.url = studies.storage_url(settings.storage)

    def run(self) -> optuna.Study:
        s = self.s
        storage = studies.make_storage(self.url, s.heartbeat_interval, s.grace_period)
        sampler = studies.make_sampler(s.sampler, s.seed, s.sampler_kwargs, self.space.grid)
        pruner = studies.make_pruner(s.pruner, s.pruner_kwargs)
        study, created = studies.open_study(s.study_name, storage, sampler, pruner, s.direction)
        if created:  # only the worker that created the study, so they run once
            for params in s.enqueue:
                study.enqueue_trial(params, skip_if_exists=True)
        runs = None
        if s.mlflow and self.tracking:
            info = {"storage": redact(self.url), "sampler": s.sampler, "seed": s.seed}
            info |= {"pruner": s.pruner, "direction": s.direction}
            info |= {f"space/{name}": d for name, d in self.space.searched().items()}
            runs = SweepRuns(*self.tracking, study, created, info)
        log.info(
            "study %r in %s (%s)", s.study_name, redact(self.url), "new" if created else "resumed"
        )
        ran = []
        try:
            self._loop(study, sampler, runs, ran)
        finally:
            used = studies.trials_used(study)
            done = len(used) >= s.n_trials and all(t.state != TrialState.RUNNING for t in used)
            best = write_best(study, s.best_file, redact(self.url)) if s.best_file else None
            if runs:
                runs.finish(done, str(best) if best else None)
            log.info(
                "this worker ran %d trial(s); the study has %d of %d",
                len(ran),
                len(used),
                s.n_trials,
            )
        return study

    def _loop(self, study: optuna.Study, sampler, runs: SweepRuns | None, ran: list) -> None:
        s = self.s
        while len(studies.trials_used(study)) < s.n_trials and not sampler.is_exhausted(study):
            with warnings.catch_warnings():  # we run the heartbeat ourselves (trial.Heartbeat)
                warnings.filterwarnings("ignore", message="Heartbeat of storage")
                trial = study.ask()
            if not studies.within_budget(study, trial.number, s.n_trials):
                trial.set_user_attr(studies.SURPLUS, True)  # another worker took the last slot
                study.tell(trial, state=TrialState.FAIL)
                return
            self._run_trial(study, trial, runs)
            ran.append(trial.number)
            if studies.failures(study) > s.max_failure_rate * s.n_trials:
                raise SweepFailedError(
                    f"more than {s.max_failure_rate:.0%} of {s.n_trials} trials failed; "
                    f"see the trials' 'shoplens.error' attribute (optuna-dashboard {self.url})"
                )

    def _run_trial(self, study: optuna.Study, trial: optuna.Trial, runs: SweepRuns | None):
        hook = TrialHook(trial, mlflow_tags=runs.child_tags(trial.number) if runs else {})
        state, value, error = TrialState.FAIL, None, None
        signals = Interrupts()  # from here on, Ctrl-C hands the trial back to the study
        try:
            with signals:
                overrides = self.space.sample(trial)
                trial.set_user_attr(OVERRIDES_ATTR, overrides)
                trial.set_user_attr("shoplens.worker", f"{socket.gethostname()}:{os.getpid()}")
                log.info("trial %d: %s", trial.number, trial.params)
                with trial_scope(hook), Heartbeat(study, trial):
                    value = self.launch(overrides, trial.number)
            if value is None or not math.isfinite(value):
                error = f"the objective was {value}"
            else:
                state = TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except Exception as err:
            if signals.seen:  # interrupted while Hydra composed the job: it wrapped the signal
                self._interrupted(study, trial, hook, runs)
                raise KeyboardInterrupt from err
            error = f"{type(err).__name__}: {err}"
            log.error("trial %d failed: %s", trial.number, error, exc_info=err)
        except BaseException:  # Ctrl-C, SIGTERM, Lightning's graceful exit after them
            self._interrupted(study, trial, hook, runs)
            raise
        self._finish(study, trial, hook, runs, state, value, error)

    def _interrupted(self, study, trial, hook, runs) -> None:
        """Leave the trial to the next run of the sweep: FAIL, not counted, re-queued."""
        trial.set_user_attr("shoplens.interrupted", True)
        studies.requeue(study, trial)  # first: the retry replaces it before it counts as FAIL
        self._finish(study, trial, hook, runs, TrialState.FAIL, None, "interrupted")

    def _finish(self, study, trial, hook, runs, state, value, error) -> None:
        if hook.mlflow_run_id:
            trial.set_user_attr("mlflow_run_id", hook.mlflow_run_id)
        if error:
            trial.set_user_attr("shoplens.error", error[:2000])
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        log.info(
            "trial %d: %s %s", trial.number, state.name, error or ("" if value is None else value)
        )
        if runs:
            try:
                runs.finish_trial(trial, state, hook.mlflow_run_id, error)
                runs.log_progress(study, trial.number, value)
            except Exception as err:  # the study is the record; MLflow is the view
                log.warning("could not record trial %d in MLflow: %s", trial.number, err)
