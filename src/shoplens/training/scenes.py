"""Copy-paste scenes as datasets for the localizer: fresh random scenes for training, the same
seeded scenes for validation every epoch.

Training scenes use train-split products on train backgrounds; validation scenes val-split
products on train backgrounds (other crops). Evaluation backgrounds are never read here.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from shoplens.data.backgrounds import TRAIN, read_pool
from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, CACHE_INDEX, CUTOUT, MASKS_FILE, SPLIT, read_manifest
from shoplens.data.copy_paste import (
    Backgrounds,
    SceneSettings,
    compose_scene,
    cut,
    thin_repeat_weights,
)

Stats = tuple[float, float, float]


class Scenes(Dataset):
    """``length`` scenes of ``side`` px: (normalised image, mask). ``seed`` None draws fresh
    scenes from torch's (per-worker seeded) RNG; a seed fixes scene ``i`` for every epoch."""

    def __init__(self, catalog_dir: Path, rows: np.ndarray, backgrounds: dict[str, np.ndarray],
                 side: int, settings: SceneSettings, mean: Stats, std: Stats, length: int,
                 seed: int | None = None):  # fmt: skip
        if len(rows) == 0:
            raise ValueError("no products with a clean cut-out to paste")
        self.catalog_dir, self.rows, self.side = Path(catalog_dir), rows, int(side)
        self.backgrounds, self.settings = Backgrounds(backgrounds), settings
        self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
        self.length, self.seed = int(length), seed
        self._images = self._masks = None  # memory maps, opened once per worker
        self.weights = None  # None: every product as likely (and the RNG draws as before)
        if settings.thin_repeat > 0:
            masks = np.load(self.catalog_dir / MASKS_FILE, mmap_mode="r")
            self.weights = torch.from_numpy(thin_repeat_weights(masks[rows], settings.thin_repeat))

    def __len__(self) -> int:
        return self.length

    def _product(self, g: torch.Generator | None):
        if self.weights is None:
            pick = int(torch.randint(0, len(self.rows), (), generator=g))
        else:
            pick = int(torch.multinomial(self.weights, 1, generator=g))
        row = self.rows[pick]
        return cut(np.asarray(self._images[row]), np.asarray(self._masks[row]))

    def __getitem__(self, i: int):
        if self._images is None:
            self._images = open_cache(self.catalog_dir / CACHE_FILE)
            self._masks = np.load(self.catalog_dir / MASKS_FILE, mmap_mode="r")
        g = None if self.seed is None else torch.Generator().manual_seed(self.seed * 100_003 + i)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny tensors: OpenMP wake-ups cost more than they save
        try:
            scene, mask = compose_scene(
                self._product, self.backgrounds, self.side, self.settings, g
            )
        finally:
            torch.set_num_threads(threads)
        return (scene - self.mean) / self.std, mask


def pasteable_rows(manifest: pd.DataFrame, split: str) -> np.ndarray:
    """Cache rows of ``split`` whose product was cut out cleanly."""
    ok = (manifest[SPLIT] == split) & (manifest[CUTOUT] == "")
    return manifest.loc[ok, CACHE_INDEX].to_numpy(np.int64)


class SceneDataModule(L.LightningDataModule):
    def __init__(self, catalog_dir, backgrounds_dir, side: int, settings: SceneSettings,
                 mean: Stats, std: Stats, batch_size: int, steps_per_epoch: int,
                 val_scenes: int, num_workers: int = 2, seed: int = 0):  # fmt: skip
        super().__init__()
        manifest = read_manifest(catalog_dir)
        photos = read_pool(backgrounds_dir, TRAIN)
        common = dict(backgrounds=photos, side=side, settings=settings, mean=mean, std=std)
        self.train_set = Scenes(catalog_dir, pasteable_rows(manifest, "train"),
                                length=batch_size * steps_per_epoch, **common)  # fmt: skip
        self.val_set = Scenes(catalog_dir, pasteable_rows(manifest, "val"), length=val_scenes,
                              seed=seed, **common)  # fmt: skip
        self.batch_size, self.num_workers = batch_size, num_workers

    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, **kwargs)  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=False, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)
