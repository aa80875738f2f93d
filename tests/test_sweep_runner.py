"""The sweep loop without Hydra or training: a fake objective on a SQLite storage in tmp.

Budget and resume, failures and the failure rate, pruning, interruption and re-queueing,
dead workers, the last-slot race between workers, and seeding. Milliseconds per trial, so
the policies are pinned down here; test_sweeps.py runs the real thing end to end.
"""

from __future__ import annotations

import subprocess
import sys
import time

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback

from shoplens.sweeps import Settings
from shoplens.sweeps import study as studies
from shoplens.sweeps.space import SearchSpace
from shoplens.sweeps.study import SweepFailedError, SweepRunner

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def _sweep(tmp_path, objective, space=None, **settings) -> optuna.Study:
    settings = {"storage": _url(tmp_path), "mlflow": False, **settings}
    settings.setdefault("best_file", str(tmp_path / "best.yaml"))
    space = space or SearchSpace({"x": "interval(0, 1)", "fixed": "3"}, ["k=choice(a,b)"])
    return SweepRunner(Settings(**settings), space, objective).run()


def _states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


def test_n_trials_is_the_total_and_a_rerun_resumes(tmp_path):
    calls = []

    def objective(overrides, number):
        calls.append(number)
        return float(number)

    _sweep(tmp_path, objective, n_trials=2)
    _sweep(tmp_path, objective, n_trials=2)  # nothing left to do
    study = _sweep(tmp_path, objective, n_trials=3)
    assert calls == [0, 1, 2] and _states(study) == ["COMPLETE"] * 3
    overrides = study.trials[0].user_attrs["shoplens.overrides"]
    assert overrides[1:] == ["fixed=3", f"k={study.trials[0].params['k']}"]
    assert (tmp_path / "best.yaml").read_text().count("trial: 2") == 1


def test_enqueued_parameters_run_first_and_only_once(tmp_path):
    """The default config as trial 0: the baseline every sampled trial is compared with."""
    seen = []

    def objective(overrides, number):
        seen.append(overrides)
        return 0.5

    default = {"x": 0.25, "k": "b"}
    _sweep(tmp_path, objective, n_trials=2, enqueue=[default])
    study = _sweep(tmp_path, objective, n_trials=3, enqueue=[default])  # resumed: not again
    assert study.trials[0].params == default
    assert seen[0] == ["x=0.25", "fixed=3", "k=b"]
    assert [t.params for t in study.trials[1:]].count(default) == 0


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    def objective(overrides, number):
        if number == 1:
            raise FloatingPointError("non-finite training loss at step 3")
        return float("nan") if number == 2 else 0.5

    study = _sweep(tmp_path, objective, n_trials=4, max_failure_rate=0.5)
    assert _states(study) == ["COMPLETE", "FAIL", "FAIL", "COMPLETE"]
    assert "non-finite" in study.trials[1].user_attrs["shoplens.error"]
    assert study.trials[2].user_attrs["shoplens.error"] == "the objective was nan"


def test_too_many_failures_stop_the_sweep(tmp_path):
    def objective(overrides, number):
        raise RuntimeError("data is broken")

    with pytest.raises(SweepFailedError, match="more than 25% of 8"):
        _sweep(tmp_path, objective, n_trials=8, max_failure_rate=0.25)
    study = optuna.load_study(study_name="shoplens", storage=_url(tmp_path))
    assert _states(study) == ["FAIL"] * 3, "2 of 8 failures are tolerated, the 3rd stops"


def test_a_pruned_trial_is_recorded_as_pruned(tmp_path):
    def objective(overrides, number):
        raise optuna.TrialPruned("pruned at epoch 1")

    assert _states(_sweep(tmp_path, objective, n_trials=2)) == ["PRUNED", "PRUNED"]


def test_an_interrupted_trial_is_requeued_and_not_counted(tmp_path):
    def interrupted(overrides, number):
        if number == 1:
            raise KeyboardInterrupt
        return 0.5

    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path, interrupted, n_trials=3)
    study = _sweep(tmp_path, lambda overrides, number: 0.7, n_trials=3)
    assert _states(study) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[1].user_attrs["shoplens.interrupted"]
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(study.trials[2]) == 1
    assert study.trials[2].params == study.trials[1].params
    assert "shoplens.interrupted" not in study.trials[2].user_attrs


def test_a_dead_workers_trial_is_failed_and_run_again(tmp_path):
    """A worker killed mid-trial stops its storage heartbeat; after the grace period the next
    worker fails that trial, runs its parameters again, and the dead one does not count."""
    beat = {"heartbeat_interval": 1, "grace_period": 1}
    killed = (
        "import os; from shoplens.sweeps import Settings; from shoplens.sweeps.space import "
        "SearchSpace; from shoplens.sweeps.study import SweepRunner; "
        f"s = Settings(storage={_url(tmp_path)!r}, n_trials=1, mlflow=False, best_file=None, **{beat!r}); "
        "SweepRunner(s, SearchSpace({'x': 'interval(0, 1)'}, []), lambda o, n: os._exit(9)).run()"
    )
    assert subprocess.run([sys.executable, "-c", killed], timeout=120).returncode == 9
    time.sleep(2.5)
    space = SearchSpace({"x": "interval(0, 1)"}, [])
    study = _sweep(tmp_path, lambda overrides, number: 0.5, space, n_trials=1, **beat)
    assert _states(study) == ["FAIL", "COMPLETE"]
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(study.trials[1]) == 0
    assert study.trials[1].params == study.trials[0].params


def test_the_worker_that_asks_past_the_budget_yields(tmp_path):
    """Two workers asked for the last slot at once: the later trial runs nothing, stops its
    worker and does not count."""
    study = optuna.create_study(storage=studies.make_storage(_url(tmp_path), None, None))
    other = study.ask()  # the other worker's trial, asked a moment earlier
    launched = []
    space = SearchSpace({"x": "interval(0, 1)"}, [])
    runner = SweepRunner(Settings(n_trials=1), space, lambda o, n: launched.append(n))
    study.optimize(runner.objective, n_trials=3, catch=(Exception,))
    assert _states(study) == ["RUNNING", "FAIL"] and launched == []
    assert study.trials[1].user_attrs[studies.SURPLUS]
    assert [t.number for t in studies.used(study)] == [other.number]


def test_sampling_is_seeded_per_trial(tmp_path):
    space = SearchSpace({"x": "interval(0, 1)"}, [])

    def xs(name: str, samplers) -> list[float]:
        study = optuna.create_study(study_name=name, storage=_url(tmp_path))
        values = []
        for sampler in samplers:  # a sampler per worker, all with the same seed
            study.sampler = sampler
            trial = study.ask()
            space.sample(trial)
            values.append(trial.params["x"])
        return values

    one = xs("one", [studies.make_sampler("random", 7, {})] * 3)
    two = xs("two", [studies.make_sampler("random", 7, {}) for _ in range(3)])
    assert one == two, "the same seed replays the same sweep, however many workers"
    assert len(set(one)) == 3, "workers sharing a seed still sample different trials"


def test_grid_sampler_stops_when_the_grid_is_done(tmp_path):
    space = SearchSpace(None, ["k=choice(a,b)", "n=range(1,3)"])
    study = _sweep(tmp_path, lambda o, n: 0.5, space, n_trials=10, sampler="grid")
    assert sorted((t.params["k"], t.params["n"]) for t in study.trials) == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
        ("b", 2),
    ]


@pytest.mark.parametrize(
    "name, cls",
    [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
    ],
)
def test_samplers_by_name(name, cls):
    assert isinstance(studies.make_sampler(name, None, {}), cls)
    assert isinstance(studies.make_sampler(name, 7, {}).inner, cls)  # seeded per trial
    grid = studies.make_sampler("grid", 0, {}, grid=lambda: {"k": ["a", "b"]})
    assert isinstance(grid, optuna.samplers.GridSampler)
    with pytest.raises(ValueError, match="choose from"):
        studies.make_sampler("annealing", 0, {})


def _median_study(completed: int) -> optuna.Study:
    """A study whose first trials reached 0.9 at epochs 0 and 1."""
    study = optuna.create_study(direction="maximize", pruner=studies.make_pruner("median", {}))
    for _ in range(completed):
        trial = study.ask()
        trial.report(0.9, 0)
        trial.report(0.9, 1)
        study.tell(trial, 0.9)
    return study


def test_pruners_by_name_with_shoplens_defaults():
    trial = _median_study(completed=3).ask()
    trial.report(0.1, 0)
    assert not trial.should_prune(), "never in the first epoch: the heads are still random"
    trial.report(0.1, 1)
    assert trial.should_prune()
    early = _median_study(completed=2).ask()
    early.report(0.1, 0)
    early.report(0.1, 1)
    assert not early.should_prune(), "not before 3 trials have set the bar"

    study = optuna.create_study(pruner=studies.make_pruner("threshold", {"lower": 0.5}))
    trial = study.ask()
    trial.report(0.4, 0)
    assert trial.should_prune(), "pruner_kwargs reach the pruner"
    assert isinstance(studies.make_pruner("hyperband", {}), optuna.pruners.HyperbandPruner)
    assert isinstance(studies.make_pruner("none", {}), optuna.pruners.NopPruner)
    with pytest.raises(ValueError, match="choose from"):
        studies.make_pruner("patient", {})


def test_training_knows_nothing_about_sweeps():
    """The layering: shoplens.pipeline.train takes callbacks and tags; train.py asks the sweep."""
    probe = "import sys, shoplens.pipeline.train; print([m for m in sys.modules if m.startswith('shoplens.sweeps')])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
