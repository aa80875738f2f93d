"""The MLflow side of a sweep: one parent run per study, one nested child run per trial.

The child run *is* the trial's training run: the sweeper hands ``mlflow.parentRunId`` and the
trial tags to ``train.run`` (see :mod:`shoplens.sweeps.context`), so the MLflow UI lists the
trials under the study with all of their curves, and "compare" puts them side by side. After
the trial the sweeper tags the child with the trial's final state (COMPLETE / PRUNED / FAIL)
and sets a matching run status. A trial that died before training made its run still gets a
child run, so every trial is visible.

The parent's id lives in the study's user attributes, so resumed runs and other workers (other
machines, with the same tracking server) attach to the same parent. Creating the study is
atomic in the Optuna storage; whoever created it creates the parent and the others wait for it.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from shoplens.tracking import configure_mlflow

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"
STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}


def _retry(fn, attempts: int = 5):
    """Two workers starting on a fresh SQLite store race to create its tables; retry."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:  # sqlalchemy/MLflow errors of a half-created store
            if attempt == attempts - 1:
                raise
            log.debug("MLflow store busy (%s); retrying", err)
            time.sleep(1 + attempt)


class SweepRuns:
    """Parent and child runs of one study in one MLflow experiment."""

    def __init__(self, uri: str | None, experiment: str, study: Any, created: bool, info: dict):
        uri = _retry(lambda: configure_mlflow(uri, experiment))
        self.client = MlflowClient(uri)
        self.experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        self.study_name = study.study_name
        self.parent_id = self._attach(study, created, info)
        self.client.update_run(self.parent_id, status="RUNNING")

    def _attach(self, study: Any, created: bool, info: dict) -> str:
        deadline = time.monotonic() + (0 if created else 30)
        while True:
            run_id = study._storage.get_study_user_attrs(study._study_id).get(PARENT_ATTR)
            if run_id and self._exists(run_id):
                return run_id
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)  # the creator is making the parent run right now
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.study_name,
            tags={"shoplens.stage": "sweep", "shoplens.sweep.study": self.study_name},
        )
        for key, value in info.items():
            self.client.log_param(run.info.run_id, param_key(key), str(value)[:6000])
        study.set_user_attr(PARENT_ATTR, run.info.run_id)
        return run.info.run_id

    def _exists(self, run_id: str) -> bool:
        try:
            return self.client.get_run(run_id).info.experiment_id == self.experiment_id
        except MlflowException:
            return False  # a parent in another tracking store: start a new one here

    def child_tags(self, number: int) -> dict[str, str]:
        return {
            "mlflow.parentRunId": self.parent_id,
            "mlflow.runName": f"{self.study_name}-trial-{number:03d}",
            "shoplens.sweep.study": self.study_name,
            "shoplens.sweep.trial": str(number),
        }

    def finish_trial(self, trial: Any, state: TrialState, run_id: str | None, error: str | None):
        """Tag the trial's child run with its outcome (making one if training never did)."""
        c = self.client
        if run_id is None:
            run_id = c.create_run(self.experiment_id, tags=self.child_tags(trial.number))
            run_id = run_id.info.run_id
            for name, value in trial.params.items():
                c.log_param(run_id, param_key(name), value)
        c.set_tag(run_id, "shoplens.sweep.state", state.name)
        if error:
            c.set_tag(run_id, "shoplens.sweep.error", error[:5000])
        c.set_terminated(run_id, STATUS.get(state, "FAILED"))
        return run_id

    def log_progress(self, study: Any, number: int, value: float | None) -> None:
        """Per-trial value and best-so-far on the parent (x axis: trial number)."""
        if value is not None:
            self.client.log_metric(self.parent_id, "trial_value", value, step=number)
        try:
            best = study.best_trial
        except ValueError:
            return  # no completed trial yet
        self.client.log_metric(self.parent_id, "best_value", best.value, step=number)
        self.client.set_tag(self.parent_id, "shoplens.sweep.best_trial", str(best.number))

    def finish(self, finished: bool, best_file: str | None) -> None:
        if best_file:
            self.client.log_artifact(self.parent_id, best_file)
        self.client.update_run(self.parent_id, status="FINISHED" if finished else "RUNNING")


def param_key(name: str) -> str:
    """An Optuna parameter name as an MLflow key (``loss.metric.margin [loss=arcface]`` has
    characters MLflow refuses)."""
    return re.sub(r"[^\w\-. /]", "_", name)
