"""The Hydra side of the sweep: read ``hydra.sweeper``, launch one Hydra job per trial.

Modelled on Hydra's own BasicSweeper: the configured launcher (the basic one by default) runs
each job in this process, which is what lets :mod:`shoplens.sweeps.context` hand the live
Optuna trial to the training loop. Study, sampling, budget, pruning and MLflow are in
:mod:`shoplens.sweeps.runner`, imported only when a sweep starts, because Hydra imports this
module on every ``python train.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

# Per-trial output folders (isolate_outputs): resolved by Hydra inside each job.
_ISOLATED = (
    "paths.artifacts_dir=${hydra:runtime.output_dir}/artifacts",
    "paths.reports_dir=${hydra:runtime.output_dir}/reports",
)


def _plain(value: Any) -> Any:
    """Hydra hands nodes over as DictConfig / ListConfig; Optuna wants plain dicts and lists."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


class ShoplensOptunaSweeper(Sweeper):
    def __init__(
        self,
        params: Any = None,
        conditional: Any = None,
        isolate_outputs: bool = True,
        **settings: Any,
    ) -> None:
        super().__init__()
        self.params = _plain(params) or {}
        self.conditional = _plain(conditional) or {}
        self.isolate_outputs = isolate_outputs
        self.settings = {key: _plain(value) for key, value in settings.items()}
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        if type(self.launcher).__name__ != "BasicLauncher":
            log.warning(
                "launcher %s may run trials in other processes: pruning and MLflow nesting "
                "only reach trials run in-process (hydra/launcher=basic)",
                type(self.launcher).__name__,
            )

    def sweep(self, arguments: list[str]) -> Any:
        from shoplens.sweeps.runner import Settings, SweepRunner
        from shoplens.sweeps.space import SearchSpace

        assert self.config is not None and self.launcher is not None
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        space = SearchSpace(self.params, arguments, self.conditional, default=self._default)
        tracking = None
        if OmegaConf.select(self.config, "tracking.experiment") is not None:
            tracking = (self.config.tracking.uri, self.config.tracking.experiment)
        runner = SweepRunner(Settings(**self.settings), space, self._launch, tracking)
        study = runner.run()
        return [(t.number, t.state.name, t.value) for t in study.get_trials(deepcopy=False)]

    def _launch(self, overrides: list[str], number: int) -> Any:
        """Run one trial as Hydra job ``number``; its return value, or its exception raised."""
        batch = [[*overrides, *(_ISOLATED if self.isolate_outputs else ())]]
        self.validate_batch_is_legal(batch)  # a composition error fails this trial only
        (job,) = self.launcher.launch(batch, initial_job_idx=number)
        from optuna import TrialPruned

        if isinstance(job._return_value, TrialPruned):
            raise job._return_value  # not an error: skip Hydra's "Error executing job" log
        return job.return_value  # re-raises what the task raised

    def _default(self, key: str) -> Any:
        """A key's value when no trial override sets it: the group's chosen option, or the
        composed value (for conditions like ``loss=normalized_softmax`` on the default)."""
        assert self.config is not None
        choices = self.config.hydra.runtime.choices
        if key in choices:
            return choices[key]
        try:
            return OmegaConf.select(self.config, key, default=None)
        except Exception:  # an interpolation that only resolves inside a job
            return None
