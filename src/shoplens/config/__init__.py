"""Configuration: typed schema and composition (Hydra for people, params.yaml for DVC)."""

from shoplens.config.compose import ConfigError, compose_config, load_config, repo_root, validate
from shoplens.config.schema import ShoplensConfig

__all__ = [
    "ConfigError",
    "ShoplensConfig",
    "compose_config",
    "load_config",
    "repo_root",
    "validate",
]
