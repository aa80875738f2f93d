"""Search spaces: Hydra's override grammar to Optuna distributions, conditional parameters,
and every shipped ``conf/hparams_search/*.yaml`` sampling configurations that validate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from shoplens.config import compose_config
from shoplens.sweeps import TrialHook
from shoplens.sweeps.space import SearchSpace, format_value
from shoplens.training.module import MONITOR

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted(p.stem for p in (ROOT / "conf" / "hparams_search").glob("*.yaml"))
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study() -> optuna.Study:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))


def test_override_grammar_becomes_optuna_distributions():
    space = SearchSpace(
        {
            "lr": "tag(log, interval(1e-4, 1e-2))",
            "dim": "choice(64, 128)",
            "stages": "range(1, 4)",
            "epochs": "tag(int, interval(2, 6))",
            "fixed": 3,
        },
        [],
    )
    d = {key: dim.distribution for key, dim in space.dims.items()}
    assert d["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert d["dim"] == CategoricalDistribution([64, 128])
    assert d["stages"] == IntDistribution(1, 3)  # range() excludes its stop, like Python's
    assert d["epochs"] == IntDistribution(2, 6)
    assert d["fixed"] is None and space.dims["fixed"].fixed == "fixed=3"


def test_the_command_line_wins_over_the_search_space_file():
    space = SearchSpace({"lr": "interval(0.1, 0.2)", "dim": "choice(1, 2)"}, ["lr=0.5"])
    trial = _study().ask()
    assert space.sample(trial)[0] == "lr=0.5" and list(trial.params) == ["dim"]


def test_conditional_parameters_only_when_their_condition_holds():
    space = SearchSpace(
        {"loss": "choice(arcface, supcon)"},
        [],
        {"loss=arcface": {"loss.metric.margin": "interval(10, 45)"}, "freeze=partial": {"k": 1}},
        default=lambda key: {"freeze": "partial"}.get(key),  # the config's default choice
    )
    study = _study()
    for _ in range(12):
        trial = study.ask()
        overrides = space.sample(trial)
        margin = [o for o in overrides if o.startswith("loss.metric.margin=")]
        assert bool(margin) == (trial.params["loss"] == "arcface")
        assert "k=1" in overrides
        study.tell(trial, 0.0)
    assert any("loss.metric.margin [loss=arcface]" in t.params for t in study.trials)


@pytest.mark.parametrize("value", [1e-05, 0.25, 3, True, None, "arcface", "a b", "true", "1"])
def test_sampled_values_survive_the_round_trip_through_hydra(value):
    override = OverridesParser.create().parse_override(f"key={format_value(value)}")
    assert override.value() == value and type(override.value()) is type(value)


def test_hydra_discovers_the_sweeper_where_the_project_is_installed(tmp_path):
    """In a fresh interpreter outside the checkout: found through the installed package
    (pyproject's package discovery), not because the current directory holds it."""
    probe = (
        "from hydra.core.plugins import Plugins; from hydra.plugins.sweeper import Sweeper;"
        "from hydra.core.config_store import ConfigStore;"
        "print(sorted(p.__name__ for p in Plugins.instance().discover(Sweeper)));"
        "print(ConfigStore.instance().list('hydra/sweeper'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert "ShoplensOptunaSweeper" in out and "shoplens_optuna.yaml" in out


def test_the_pruning_callback_reports_training_epochs_and_prunes():
    """What training logs reaches the trial each epoch of fit (not the untrained baseline that
    train.run validates first), and the pruner's verdict stops fit."""
    import lightning as L
    import torch

    class Tiny(L.LightningModule):
        def __init__(self, recalls):
            super().__init__()
            self.layer, self.recalls = torch.nn.Linear(1, 1), iter(recalls)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).sum()

        def validation_step(self, batch, batch_idx):
            pass

        def on_validation_epoch_end(self):
            self.log(MONITOR, next(self.recalls))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(0.25))
    hook = TrialHook(study.ask())
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)))
    trainer = L.Trainer(
        max_epochs=4,
        callbacks=hook.callbacks(),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    model = Tiny([0.0, 0.5, 0.125, 0.75, 0.75])  # baseline 0.0; epoch 1 is below 0.25
    trainer.validate(model, data, verbose=False)
    with pytest.raises(optuna.TrialPruned):
        trainer.fit(model, data, data)
    assert study.trials[0].intermediate_values == {0: 0.5, 1: 0.125}
    assert isinstance(hook.pruned, optuna.TrialPruned) and trainer.current_epoch == 1


@pytest.mark.parametrize("name", SPACES)
def test_every_search_space_samples_valid_configurations(name):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"hparams_search={name}"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("ShoplensOptunaSweeper") and sweeper.study_name
    choices = cfg.hydra.runtime.choices
    space = SearchSpace(
        OmegaConf.to_container(sweeper.params),
        [f"hparams_search={name}"],
        OmegaConf.to_container(sweeper.conditional),
        default=lambda key: choices.get(key),
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(4):
        trial = study.ask()
        config = compose_config(space.sample(trial))  # what each trial's job will compose
        assert config.loss.name == trial.params["loss"], "every space searches the loss"
        study.tell(trial, 0.5)


def test_without_hparams_search_nothing_changes():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
    assert "hparams_search" not in cfg
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")
    assert "hparams_search" not in (ROOT / "params.yaml").read_text()


def test_the_enqueued_default_trial_is_the_default_config():
    """finetune's trial 0 must stay the default config, or 'best vs default' compares nothing."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hparams_search=finetune"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    space = SearchSpace(
        OmegaConf.to_container(sweeper.params),
        [],
        OmegaConf.to_container(sweeper.conditional),
        default=lambda key: cfg.hydra.runtime.choices.get(key),
    )
    (default,) = OmegaConf.to_container(sweeper.enqueue)
    study = optuna.create_study()
    study.enqueue_trial(default)
    trial = study.ask()
    overrides = space.sample(trial)
    assert trial.params == default, "every enqueued key is a dimension of the space"
    plain = lambda c: OmegaConf.to_container(c, resolve=True)  # noqa: E731
    assert plain(compose_config(overrides)) == plain(compose_config([]))
