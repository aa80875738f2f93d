"""The ``hydra/sweeper: shoplens_optuna`` config node, registered in Hydra's ConfigStore.

A search-space file selects it (``defaults: [override /hydra/sweeper: shoplens_optuna]``) and
fills in ``params``; everything else has a default that fits the embedded catalog, and any
field can be set on the command line: ``hydra.sweeper.n_trials=8 hydra.sweeper.sampler=random``.
The sweep's own settings (study, sampler, pruner, budget, ...) are declared once, in
:class:`shoplens.sweeps.settings.Settings`; this node adds what only Hydra needs.
"""

# No `from __future__ import annotations`: Hydra's plugin scanner executes this module before
# it is in sys.modules, where dataclasses cannot resolve string annotations.
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore

from shoplens.sweeps.settings import Settings


@dataclass
class ShoplensOptunaSweeperConf(Settings):
    _target_: str = "hydra_plugins.shoplens_optuna_sweeper.sweeper.ShoplensOptunaSweeper"

    # Under the DVC pipeline's reports folder rather than the working directory's.
    best_file: str | None = "${paths.reports_dir}/sweep/best.yaml"
    # Each trial writes checkpoints and reports under its own Hydra job folder instead of the
    # DVC pipeline's artifacts/ and reports/ (which concurrent trials would overwrite).
    isolate_outputs: bool = True

    # key: override grammar (choice/range/interval/tag(log, ...)), or a fixed value.
    params: dict[str, Any] | None = None
    # "key=value": {key: override grammar}; only sampled when key took that value.
    conditional: dict[str, dict[str, Any]] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="shoplens_optuna",
    node=ShoplensOptunaSweeperConf,
    provider="shoplens",
)
