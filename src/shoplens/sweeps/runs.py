"""MLflow: a parent run per study (its id a study user attribute, so resumed runs and other
workers find it), each trial's training run nested under it (``train.py`` gives it
:meth:`SweepRuns.child_tags`) and, after the trial, tagged with its state and error."""

from __future__ import annotations

import logging
import time
from typing import Any

from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from shoplens.tracking import configure_mlflow

log = logging.getLogger(__name__)
PARENT_ATTR, RUN_ATTR, ERROR_ATTR = "mlflow_parent_run_id", "mlflow_run_id", "shoplens.error"
STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED"}


def retry_races(fn, attempts: int = 5) -> Any:
    """Workers starting together on a fresh SQLite database race to create Optuna's tables
    (which, unlike MLflow's migrations, a second try completes)."""
    for attempt in range(attempts - 1):
        try:
            return fn()
        except Exception:  # SQLAlchemy's or MLflow's errors of a half-created database
            time.sleep(1 + attempt)
    return fn()


class SweepRuns:
    def __init__(self, uri: str | None, experiment: str, study: Any, created: bool):
        self.client = c = MlflowClient(configure_mlflow(uri, experiment))
        self.experiment_id = c.get_experiment_by_name(experiment).experiment_id
        self.study_name = study.study_name
        for _ in range(0 if created else 60):  # its creator may be making the parent right now
            if self._exists(study.user_attrs.get(PARENT_ATTR)):
                break
            time.sleep(0.5)
        else:
            tags = {"shoplens.stage": "sweep", "shoplens.sweep.study": self.study_name}
            run = c.create_run(self.experiment_id, run_name=self.study_name, tags=tags)
            study.set_user_attr(PARENT_ATTR, run.info.run_id)
        self.parent_id = study.user_attrs[PARENT_ATTR]
        c.update_run(self.parent_id, status="RUNNING")

    def _exists(self, run_id: str | None) -> bool:
        try:  # (a parent in another tracking store does not count)
            return self.client.get_run(run_id).info.experiment_id == self.experiment_id
        except Exception:
            return False

    def child_tags(self, number: int) -> dict[str, str]:
        name = f"{self.study_name}-trial-{number:03d}"
        tags = {"mlflow.parentRunId": self.parent_id, "mlflow.runName": name}
        return tags | {"shoplens.sweep.study": self.study_name, "shoplens.sweep.trial": str(number)}

    def __call__(self, study: Any, trial: FrozenTrial) -> None:
        """Optuna callback: close the trial's run; log its value and the best on the parent."""
        c, run_id = self.client, trial.user_attrs.get(RUN_ATTR)
        try:
            if run_id:  # None: the trial failed before its training run started
                c.set_tag(run_id, "shoplens.sweep.state", trial.state.name)
                if ERROR_ATTR in trial.user_attrs:
                    c.set_tag(run_id, "shoplens.sweep.error", trial.user_attrs[ERROR_ATTR][:5000])
                c.set_terminated(run_id, STATUS.get(trial.state, "FAILED"))
            if trial.value is not None:
                c.log_metric(self.parent_id, "trial_value", trial.value, step=trial.number)
            if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
                c.log_metric(self.parent_id, "best_value", study.best_value, step=trial.number)
                c.set_tag(self.parent_id, "shoplens.sweep.best_trial", str(study.best_trial.number))
        except Exception as err:  # the study is the record; MLflow is the view
            log.warning("could not record trial %d in MLflow: %s", trial.number, err)

    def finish(self, done: bool, best_file: Any) -> None:
        if best_file:
            self.client.log_artifact(self.parent_id, str(best_file))
        self.client.update_run(self.parent_id, status="FINISHED" if done else "RUNNING")
