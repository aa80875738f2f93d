"""One way in to the configuration, whichever path started the work.

* ``python train.py ...`` and ``shoplens <stage> key=value ...`` compose ``conf/`` with Hydra.
* Inside ``dvc repro`` the stages read ``params.yaml``, which DVC composed from the same
  ``conf/`` (``dvc exp run``); ``--params params.yaml`` selects that path.

Both end in :func:`validate`, which merges onto :class:`ShoplensConfig` so typos and wrong
types are rejected with the offending key named.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from shoplens.config.schema import CHOICES, ShoplensConfig
from shoplens.project import CONFIG_NAME, repo_root


class ConfigError(ValueError):
    """The configuration is invalid; the message names the offending key."""


def config_dir() -> Path:
    path = repo_root() / "conf"
    if not (path / f"{CONFIG_NAME}.yaml").is_file():
        raise ConfigError(
            f"no Hydra config tree found at {path}; run from the shoplens checkout "
            "or set SHOPLENS_ROOT to it"
        )
    return path


def validate(cfg: DictConfig) -> DictConfig:
    """Merge ``cfg`` onto the typed schema; raise :class:`ConfigError` naming a bad key."""
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    try:
        typed = OmegaConf.merge(OmegaConf.structured(ShoplensConfig), cfg)
        OmegaConf.resolve(typed)
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid configuration: {err}") from err
    # The schema states no values: a key conf/ (or params.yaml) lacks stays "???".
    if missing := sorted(OmegaConf.missing_keys(typed)):
        raise ConfigError(f"invalid configuration: no value for {', '.join(missing)}")
    for key, allowed in CHOICES.items():
        if (value := OmegaConf.select(typed, key)) not in allowed:
            raise ConfigError(
                f"invalid configuration: {key} must be one of {allowed}, got {value!r}"
            )
    check_targets(typed)
    OmegaConf.set_struct(typed, True)
    return typed


def _targets(node: Any, path: str = ""):
    """(path, node) of every ``_target_`` node under ``node``."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key, value in node.items():
            if key != "hydra":
                yield from _targets(value, f"{path}.{key}" if path else str(key))


def check_targets(cfg: DictConfig) -> None:
    """Every ``_target_`` node's keys are arguments its target takes: a misspelt optimizer or
    callback argument fails here, before any work, not at instantiation an hour later."""
    for path, node in _targets(cfg):
        try:
            target = get_object(str(node["_target_"]))
        except ImportError as err:
            raise ConfigError(f"invalid configuration: {path}._target_: {err}") from None
        kwargs = {k: None for k in node if not str(k).startswith("_")}
        try:
            inspect.signature(target).bind_partial(**kwargs)
        except TypeError as err:
            raise ConfigError(f"invalid configuration: {path}: {node['_target_']} {err}") from None
        except ValueError:  # builtins without a signature: nothing to check
            continue


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/`` with Hydra overrides (``group=option``, ``a.b=value``) and validate."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name=CONFIG_NAME, overrides=list(overrides))
    return validate(cfg)


def load_params(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Load a DVC-composed ``params.yaml``; ``key=value`` overrides apply on top."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} does not exist")
    cfg = OmegaConf.load(path)
    bad = [o for o in overrides if "=" not in o or o.split("=", 1)[0].startswith(("+", "~"))]
    if bad:
        raise ConfigError(f"with --params only key=value overrides apply, got {bad}")
    for override in overrides:
        key, value = override.split("=", 1)
        if "." not in key and isinstance(cfg.get(key), DictConfig):
            raise ConfigError(
                f"'{override}' selects a config group; with --params edit params.yaml or run "
                f"`dvc exp run -S {override}` so DVC recomposes it"
            )
        OmegaConf.update(cfg, key, yaml.safe_load(value) if value else None, merge=True)
    return validate(cfg)


def load_config(overrides: Sequence[str] = (), params: str | Path | None = None) -> DictConfig:
    return load_params(params, overrides) if params else compose_config(overrides)
