"""Sweeps end to end: ``python train.py -m`` subprocesses on the tiny catalog of conftest.py
(timm's test_efficientnet, one epoch per trial), storage and MLflow store in tmp folders.

Persistence, resume, pruning, failures, concurrent workers, MLflow nesting, the winner's
overrides, and a real PostgreSQL server. The sweep logic has fast unit tests of its own in
test_sweep_runner.py and test_sweep_space.py.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sweep_helpers import ROOT, load, postgres_server, run_sweep, sqlite_url, start_sweep, states
from sweep_helpers import sweep_args as _args

from shoplens.config import compose_config
from shoplens.sweeps import best as best_module

pytestmark = pytest.mark.slow
LR = "optimizer.lr=tag(log,interval(1e-3,1e-2))"


@pytest.fixture(scope="module")
def three_trials(workspace, overrides):
    """The broad search space of conf/hparams_search/finetune.yaml, 3 trials."""
    args = _args(workspace, overrides, "three", "hparams_search=finetune", "data.batch_size=16")
    run_sweep([*args, "hydra.sweeper.n_trials=3"])
    return load("three", sqlite_url(workspace))


def test_three_trial_sweep_stores_three_finished_trials(three_trials):
    trials = three_trials.get_trials()
    assert states(three_trials) == ["COMPLETE"] * 3
    assert len({repr(sorted(t.params.items())) for t in trials}) == 3
    # finetune enqueues the default config as trial 0 (the baseline the sweep must beat).
    default = compose_config([])
    assert trials[0].params["loss"] == default.loss.name
    assert trials[0].params["optimizer.lr"] == default.optimizer.lr
    # Reported by the pruning callback during fit (not the pre-training baseline validation).
    assert all(t.intermediate_values == {0: t.value} for t in trials)


def test_mlflow_shows_the_parent_run_with_a_child_per_trial(three_trials, workspace):
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    parent = client.get_run(three_trials.user_attrs["mlflow_parent_run_id"])
    assert parent.data.tags["shoplens.stage"] == "sweep" and parent.info.status == "FINISHED"
    assert parent.data.metrics["best_value"] == pytest.approx(three_trials.best_value)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(int(c.data.tags["shoplens.sweep.trial"]) for c in children) == [0, 1, 2]
    for child in children:  # the child *is* the training run: tagged, with its curves
        assert child.data.tags["shoplens.sweep.state"] == "COMPLETE"
        assert child.data.tags["shoplens.stage"] == "train"
        assert "val/recall_at_1" in child.data.metrics
    assert {c.info.run_id for c in children} == {
        t.user_attrs["mlflow_run_id"] for t in three_trials.trials
    }


def test_best_trial_overrides_are_accepted_by_train_and_dvc(three_trials, workspace, capsys):
    from dvc.utils.hydra import compose_and_dump

    path = workspace / "reports" / "sweep" / "best.yaml"
    best = yaml.safe_load(path.read_text())
    assert (best["trial"], best["value"]) == (
        three_trials.best_trial.number,
        three_trials.best_value,
    )
    keys = [o.split("=", 1)[0] for o in best["overrides"]]
    assert not [k for k in keys if k.startswith(("paths.", "tracking.", "hparams_search"))]
    cfg = compose_config(best["overrides"])  # what `python train.py <overrides>` composes
    assert cfg.optimizer.lr == three_trials.best_params["optimizer.lr"]
    assert cfg.loss.name == three_trials.best_params["loss"]
    # What `dvc exp run -S <override> ...` does with them: compose conf/ into params.yaml.
    conf, plugins = str(ROOT / "conf"), str(ROOT / ".dvc" / "plugins")
    compose_and_dump(workspace / "params.yaml", conf, None, "config", plugins, best["overrides"])
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    assert params["optimizer"]["lr"] == cfg.optimizer.lr and "hparams_search" not in params
    best_module.main([str(path), "--dvc"])
    assert capsys.readouterr().out.split()[:2] == ["-S", best["overrides"][0]]


def test_optuna_dashboard_reads_the_storage(three_trials, workspace):
    from optuna_dashboard import wsgi

    environ, answer = {"PATH_INFO": "/api/studies"}, {}
    setup_testing_defaults(environ)
    body = b"".join(
        wsgi(sqlite_url(workspace))(environ, lambda s, h, *exc: answer.update(status=s))
    )
    assert answer["status"].startswith("200"), environ["wsgi.errors"].getvalue()[-2000:]
    assert b'"three"' in body


def _epochs_reported(db: Path, study: str, trial: int) -> int:
    """Epochs trial ``trial`` of ``study`` has reported so far (0 before the tables exist)."""
    # A short busy timeout: a read blocked behind the sweep's writes returns 0 and is retried,
    # instead of waiting seconds while the trial trains on.
    with closing(sqlite3.connect(db, timeout=0.05)) as connection:
        try:
            (count,) = connection.execute(
                "SELECT COUNT(*) FROM trial_intermediate_values v "
                "JOIN trials t ON v.trial_id = t.trial_id "
                "JOIN studies s ON t.study_id = s.study_id "
                "WHERE s.study_name = ? AND t.number = ?",
                (study, trial),
            ).fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(count)


def test_interrupted_sweep_resumes_with_the_remaining_trials(workspace, overrides, tmp_path):
    args = [*_args(workspace, overrides, "resume", "hydra/sweeper=shoplens_optuna", LR)]
    # Thirty full epochs a trial (no early stopping, which ended trials after 4-5 epochs): the
    # interrupt must land while trial 1 trains, not after it ended. Ten epochs of the tiny
    # catalog took about a second on CI's machine: too little room for the poll below.
    args += ["hydra.sweeper.n_trials=2", "trainer.max_epochs=30", "callbacks.early_stopping=null"]
    log = tmp_path / "first.log"
    worker, storage = start_sweep(args, log), sqlite_url(workspace)
    deadline = time.monotonic() + 120
    # Interrupt once trial 1 has reported its first epoch: it is then surely training, with
    # nine epochs to go. (Watching the log for Hydra's "#1" line and sleeping a little was a
    # race a fast run lost: trial 1 ended before the signal.) The study's SQLite file is read
    # directly, which is cheap; optuna.load_study each poll was not.
    while time.monotonic() < deadline and worker.poll() is None:
        if _epochs_reported(workspace / "optuna.db", "resume", 1):
            break
        time.sleep(0.2)
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=60) != 0, log.read_text(errors="replace")[-3000:]
    study = load("resume", storage)
    assert states(study) == ["COMPLETE", "FAIL", "WAITING"]
    assert study.trials[1].user_attrs["shoplens.interrupted"]

    run_sweep(args)  # the same command again: runs trial 1's parameters, and that is all
    study = load("resume", storage)
    assert states(study) == ["COMPLETE", "FAIL", "COMPLETE"]
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(study.trials[2]) == 1
    assert study.trials[2].params == study.trials[1].params


def test_failed_and_pruned_trials_are_recorded_and_the_sweep_goes_on(workspace, overrides):
    args = _args(workspace, overrides, "faults", "hydra/sweeper=shoplens_optuna")
    grid = ["hydra.sweeper.sampler=grid", "optimizer.lr=choice(-1.0,0.003)"]
    prune = ["hydra.sweeper.pruner=threshold", "+hydra.sweeper.pruner_kwargs.lower=1.01"]
    more = ["hydra.sweeper.n_trials=2", "hydra.sweeper.max_failure_rate=0.5"]
    run_sweep([*args, *grid, *prune, *more, "trainer.max_epochs=2"])
    trials = {t.params["optimizer.lr"]: t for t in load("faults", sqlite_url(workspace)).trials}
    failed, pruned = trials[-1.0], trials[0.003]
    assert failed.state == TrialState.FAIL
    assert "Invalid learning rate" in failed.user_attrs["shoplens.error"]
    assert pruned.state == TrialState.PRUNED  # recall <= 1 < 1.01 after the first epoch
    assert list(pruned.intermediate_values) == [0], "pruning stops training early"


def test_two_concurrent_workers_share_one_study(workspace, overrides, tmp_path):
    args = _args(workspace, overrides, "workers", "hydra/sweeper=shoplens_optuna", LR)
    args += ["model.embedding_dim=choice(8,16,32)", "hydra.sweeper.n_trials=4"]
    workers = [start_sweep(args, tmp_path / f"worker{i}.log", threads=1) for i in range(2)]
    codes = [w.wait(timeout=240) for w in workers]
    failed = [i for i, code in enumerate(codes) if code != 0]
    assert not failed, "\n".join((tmp_path / f"worker{i}.log").read_text() for i in failed)
    study = load("workers", sqlite_url(workspace))
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert [t.number for t in done] == [0, 1, 2, 3], "n_trials in total, never exceeded"
    assert len({repr(sorted(t.params.items())) for t in done}) == 4
    assert len({t.user_attrs["shoplens.worker"] for t in done}) == 2, "both workers took trials"
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    parents = client.search_runs(
        [client.get_experiment_by_name("shoplens").experiment_id],
        "tags.`shoplens.sweep.study` = 'workers' and tags.`shoplens.stage` = 'sweep'",
    )
    assert len(parents) == 1, "one parent run per study, whoever created it"


def test_postgresql_storage(workspace, overrides):
    with postgres_server() as url:
        args = _args(workspace, overrides, "pg", "hydra/sweeper=shoplens_optuna", LR, storage=url)
        run_sweep([*args, "hydra.sweeper.n_trials=2"])
        assert states(load("pg", url)) == ["COMPLETE", "COMPLETE"]
