"""The composed configuration: typed, identical on the Hydra and the DVC path."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
import yaml
from dvc.utils.hydra import compose_and_dump
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from shoplens.config import ConfigError, compose_config, load_config
from shoplens.training.losses import build_loss
from shoplens.training.trainer import build_callbacks

ROOT = Path(__file__).resolve().parents[1]


def _dvc_compose(tmp_path: Path, overrides: list[str]) -> Path:
    out = tmp_path / "params.yaml"
    compose_and_dump(out, str(ROOT / "conf"), None, "config", str(ROOT / ".dvc/plugins"), overrides)
    return out


def test_default_config_is_typed_and_complete():
    cfg = compose_config()
    assert cfg.data.source == "fashion_mnist"
    assert isinstance(cfg.data.batch_size, int)
    assert cfg.backbone.name == "tf_efficientnet_lite0"
    assert "hydra" not in cfg


def test_misspelt_key_is_rejected_with_its_name():
    with pytest.raises(ConfigError, match="batchsize"):
        compose_config(["+data.batchsize=32"])


def test_wrong_type_is_rejected_with_its_name():
    with pytest.raises(ConfigError, match="data.batch_size"):
        compose_config(["data.batch_size=lots"])


def test_misspelt_key_in_params_file_is_rejected(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["optimizer"]["learning_rate"] = 0.1
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(params=bad)


@pytest.mark.parametrize(
    "overrides",
    [[], ["loss=arcface", "freeze=partial", "optimizer=sgd", "data.batch_size=16"]],
)
def test_hydra_and_dvc_paths_resolve_to_the_same_config(tmp_path, overrides):
    via_hydra = OmegaConf.to_container(compose_config(overrides), resolve=True)
    via_dvc = OmegaConf.to_container(load_config(params=_dvc_compose(tmp_path, overrides)))
    assert via_hydra == via_dvc


def test_committed_params_yaml_matches_conf(tmp_path):
    """params.yaml is what DVC composes from conf/; a stale copy would train the wrong thing."""
    fresh = yaml.safe_load(_dvc_compose(tmp_path, []).read_text())
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert committed == fresh, "params.yaml is stale: run `make params`"


def test_params_overrides_apply_on_top_of_params_file():
    cfg = load_config(["data.batch_size=8", "optimizer.lr=0.5"], params=ROOT / "params.yaml")
    assert cfg.data.batch_size == 8 and cfg.optimizer.lr == 0.5
    with pytest.raises(ConfigError, match="dvc exp run"):
        load_config(["loss=arcface"], params=ROOT / "params.yaml")


def test_dvc_yaml_params_exist_in_params_yaml():
    params = OmegaConf.load(ROOT / "params.yaml")
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for key in stage.get("params", []):
            missing = object()
            assert OmegaConf.select(params, key, default=missing) is not missing, (
                f"stage {name} declares param {key} that params.yaml lacks"
            )


def _options() -> list[tuple[str, str]]:
    return [
        (group.name, option.stem)
        for group in sorted(p for p in (ROOT / "conf").iterdir() if p.is_dir())
        for option in sorted(group.glob("*.yaml"))
        if group.name != "hparams_search"  # sweeps, not configs: tests/test_sweep_space.py
    ]


def _bind(node, **runtime) -> None:
    """The node's keys (plus what the code adds at run time) are arguments its target takes:
    a typo fails here, without building what needs hardware this machine may lack."""
    target = get_class(node["_target_"]) if "." in node["_target_"] else None
    kwargs = {k: v for k, v in node.items() if not k.startswith("_")}
    inspect.signature(target).bind_partial(**kwargs, **runtime)


@pytest.mark.parametrize(("group", "option"), _options())
def test_every_option_of_every_group_composes_and_builds(group, option, tmp_path):
    """Compose each option (the schema rejects bad keys and types), then build every
    `_target_` node it brings the way training builds it."""
    extra = {
        ("data", "base"): ["data.source=folder", "data.root=/tmp"],
        ("data", "folder"): ["data.root=/tmp"],
        ("data", "manifest"): ["data.root=/tmp", "data.manifest=/tmp/m.csv"],
        ("loss", "base"): ["loss.name=base", "loss.classification_weight=1.0"],
        ("freeze", "base"): ["freeze.strategy=full"],
        ("backbone", "base"): ["backbone.name=test_efficientnet", "backbone.pretrained=false"],
    }.get((group, option), [])
    cfg = compose_config([f"{group}={option}", *extra])
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = instantiate(cfg.optimizer)(params)
    instantiate(cfg.scheduler)(optimizer, steps_per_epoch=10, max_epochs=2)
    build_callbacks(cfg.callbacks)
    _bind(cfg.trainer, logger=False, callbacks=[])
    if cfg.trainer.accelerator == "cpu":
        instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    instantiate(cfg.tracking.logger, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    build_loss(cfg.loss, num_classes=3, embedding_dim=cfg.model.embedding_dim)
    localizer_opt = instantiate(cfg.localizer.optimizer)(params)
    instantiate(cfg.localizer.scheduler)(localizer_opt, total_steps=10)
    build_callbacks(cfg.localizer.callbacks)


def test_library_settings_defaults_equal_what_conf_composes():
    """Settings owned by a library layer keep defaults for library use; they must be the
    composed config's values, so no value is said twice with two answers."""
    from shoplens.data.augment import AugmentationConfig
    from shoplens.data.backgrounds import PoolSettings
    from shoplens.data.copy_paste import SceneSettings
    from shoplens.data.cutout import CutoutSettings
    from shoplens.evaluation.shopper_photos import BenchmarkSettings
    from shoplens.search.config import IndexConfig

    cfg = compose_config()
    base = OmegaConf.load(ROOT / "conf" / "augmentation" / "base.yaml")
    for node, settings in (
        (cfg.preprocess.cutout, CutoutSettings),
        (cfg.preprocess.backgrounds, PoolSettings),
        (cfg.evaluate.photos, BenchmarkSettings),
        (cfg.localizer.scenes, SceneSettings),
        (cfg.search.index, IndexConfig),
        (base, AugmentationConfig),
    ):
        composed = OmegaConf.to_container(node, resolve=True)
        defaults = OmegaConf.to_container(OmegaConf.structured(settings()), resolve=True)
        assert composed == defaults, settings.__name__


def test_a_key_the_yaml_forgot_is_an_error_not_a_default(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["data"]["image_size"]
    incomplete = tmp_path / "params.yaml"
    incomplete.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="image_size"):
        load_config(params=incomplete)


def test_params_helper_detects_and_repairs_a_stale_params_file(tmp_path):
    """`make params` and scripts/retrain.sh: --check exits 3 on a stale copy, then a plain run
    rewrites it to what DVC composes, after which --check passes."""
    from shoplens.config import params

    stale = tmp_path / "params.yaml"
    stale.write_text((ROOT / "params.yaml").read_text().replace("seed: 42", "seed: 7"))
    assert params.main(["--check", "--file", str(stale)]) == params.STALE
    assert "seed: 7" in stale.read_text(), "--check changes nothing"
    assert params.main(["--file", str(stale)]) == 0
    (tmp_path / "dvc").mkdir()
    assert stale.read_text() == _dvc_compose(tmp_path / "dvc", []).read_text()
    assert params.main(["--check", "--file", str(stale)]) == 0
