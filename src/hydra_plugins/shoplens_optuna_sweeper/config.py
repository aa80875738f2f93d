"""The ``hydra/sweeper: shoplens_optuna`` config node, registered in Hydra's ConfigStore.

A search-space file selects it (``defaults: [override /hydra/sweeper: shoplens_optuna]``) and
fills in ``params``; everything else has a default that fits the embedded catalog, and any
field can be set on the command line: ``hydra.sweeper.n_trials=8 hydra.sweeper.sampler=random``.
"""

# No `from __future__ import annotations`: Hydra's plugin scanner executes this module before
# it is in sys.modules, where dataclasses cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class ShoplensOptunaSweeperConf:
    _target_: str = "hydra_plugins.shoplens_optuna_sweeper.sweeper.ShoplensOptunaSweeper"

    # The study: name and storage. Same name + same storage = the same study, resumed or
    # shared by several workers. storage null: $SHOPLENS_OPTUNA_STORAGE, else SQLite
    # <repository root>/optuna.db; many machines: postgresql+psycopg://user:pw@host/db
    study_name: str = "shoplens"
    storage: str | None = None
    n_trials: int = 20  # in total over all runs and workers, not per run
    direction: str = "maximize"  # the task returns validation Recall@1

    sampler: str = "tpe"  # tpe | random | cmaes | grid
    seed: int | None = 42  # trial n samples with seed + n
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. n_startup_trials
    pruner: str = "median"  # median | hyperband | percentile | threshold | none
    pruner_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. n_warmup_steps

    # Stop the sweep once more than this share of n_trials has failed (exception, NaN loss).
    max_failure_rate: float = 0.25
    # A worker that stops beating for grace_period (default 2 x interval) seconds, killed or
    # lost, has its trial failed and re-queued by the next worker. null: no heartbeat.
    heartbeat_interval: int | None = 60
    grace_period: int | None = None

    best_file: str | None = "${paths.reports_dir}/sweep/best.yaml"
    # Each trial writes checkpoints and reports under its own Hydra job folder instead of the
    # DVC pipeline's artifacts/ and reports/ (which concurrent trials would overwrite).
    isolate_outputs: bool = True
    mlflow: bool = True  # parent run per study, the trials' training runs nested under it

    # key: override grammar (choice/range/interval/tag(log, ...)), or a fixed value.
    params: dict[str, Any] | None = None
    # "key=value": {key: override grammar}; only sampled when key took that value.
    conditional: dict[str, dict[str, Any]] | None = None
    # Parameter sets ({key: value}) the new study runs first, e.g. the default config, so
    # the sweep's best is compared with it under the same per-trial budget.
    enqueue: list[dict[str, Any]] = field(default_factory=list)


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="shoplens_optuna",
    node=ShoplensOptunaSweeperConf,
    provider="shoplens",
)
