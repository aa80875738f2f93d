"""The localizer's module and scene data from the composed config: what the
``train_localizer`` stage trains, and ``benchmarks/localizer_budget.py`` too (which runs where
MLflow is not installed, so nothing here may import tracking)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from shoplens.data.copy_paste import SceneSettings
from shoplens.training.localizer_module import LocalizerModule
from shoplens.training.scenes import SceneDataModule


def scene_settings(cfg: DictConfig) -> SceneSettings:
    values = OmegaConf.to_container(cfg.localizer.scenes, resolve=True)
    return SceneSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def build(cfg: DictConfig) -> tuple[LocalizerModule, SceneDataModule]:
    loc = cfg.localizer
    module = LocalizerModule(OmegaConf.to_container(cfg, resolve=True))
    spec = module.localizer.preprocessing
    datamodule = SceneDataModule(
        cfg.paths.catalog_dir, cfg.paths.backgrounds_dir, int(loc.input_size), scene_settings(cfg),
        spec.mean, spec.std, batch_size=int(loc.batch_size),
        steps_per_epoch=int(loc.steps_per_epoch), val_scenes=int(loc.val_scenes),
        num_workers=int(cfg.data.num_workers), seed=int(cfg.seed),
    )  # fmt: skip
    return module, datamodule
