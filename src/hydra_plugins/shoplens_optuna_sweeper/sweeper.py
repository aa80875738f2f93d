"""The ``hydra/sweeper: shoplens_optuna`` node and sweeper: as Hydra's BasicSweeper, jobs run in
this process (where :func:`~shoplens.sweeps.active_trial` hands the trial to training)."""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is
# in sys.modules, where dataclasses cannot resolve string annotations.
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

from shoplens.sweeps import Settings, active_trial

# isolate_outputs: each trial's checkpoints and reports in its own Hydra job folder
ISOLATED = [f"paths.{d}_dir=${{hydra:runtime.output_dir}}/{d}" for d in ("artifacts", "reports")]


@dataclass
class ShoplensOptunaSweeperConf(Settings):
    _target_: str = "hydra_plugins.shoplens_optuna_sweeper.sweeper.ShoplensOptunaSweeper"
    _convert_: str = "all"  # hand plain dicts and lists to the sweeper, not config nodes
    best_file: str | None = "${paths.reports_dir}/sweep/best.yaml"  # the DVC reports folder


ConfigStore.instance().store("shoplens_optuna", ShoplensOptunaSweeperConf, group="hydra/sweeper")


class ShoplensOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        super().__init__()
        self.settings = Settings(**settings)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from shoplens.sweeps.space import SearchSpace
        from shoplens.sweeps.study import SweepRunner

        Path(self.config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, Path(self.config.hydra.sweep.dir) / "multirun.yaml")
        s, tracking = self.settings, OmegaConf.select(self.config, "tracking")
        space = SearchSpace(s.params, arguments, s.conditional, default=self._default)
        tracking = (tracking.uri, tracking.experiment) if tracking else None
        return SweepRunner(s, space, self._launch, tracking).run()

    def _launch(self, overrides: list[str], number: int) -> Any:
        """Run one trial as Hydra job ``number``: its return value, or its exception raised."""
        batch = [overrides + (ISOLATED if self.settings.isolate_outputs else [])]
        self.validate_batch_is_legal(batch)  # a composition error fails this trial only
        (job,) = self.launcher.launch(batch, initial_job_idx=number)
        if job.status != JobStatus.COMPLETED and (hook := active_trial()) and hook.pruned:
            raise hook.pruned  # not an error: skip Hydra's "Error executing job" message
        return job.return_value  # raises what the task raised

    def _default(self, key: str) -> Any:
        """A key's value without a trial override: the group's chosen option, or the composed
        value (``None`` for an interpolation only a job resolves), for conditional blocks."""
        composed = OmegaConf.select(self.config, key, throw_on_resolution_failure=False)
        return self.config.hydra.runtime.choices.get(key) or composed
