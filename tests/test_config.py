"""The composed configuration: typed, identical on the Hydra and the DVC path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import compose_and_dump
from omegaconf import OmegaConf

from shoplens.config import ConfigError, compose_config, load_config

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


def test_every_group_option_composes():
    for group in sorted(p for p in (ROOT / "conf").iterdir() if p.is_dir()):
        for option in sorted(group.glob("*.yaml")):
            override = f"{group.name}={option.stem}"
            extra = {
                "data=folder": ["data.root=/tmp"],
                "data=manifest": ["data.root=/tmp", "data.manifest=/tmp/m.csv"],
            }.get(override, [])
            compose_config([override, *extra])  # raises on any schema violation


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
