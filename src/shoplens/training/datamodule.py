"""Reads the preprocess stage's decoded cache: no image decode per epoch.

The cache (``images.npy``, N x S x S x 3 uint8) is memory-mapped, so worker processes share
the page cache instead of copying the catalog.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from pytorch_metric_learning.samplers import MPerClassSampler
from torch.utils.data import DataLoader, Dataset

from shoplens.data.catalog import CACHE_FILE, MASKS_FILE, read_catalog
from shoplens.data.dataset import CachedImages, Transform

log = logging.getLogger(__name__)


def samples_per_class(wanted: int, batch_size: int, num_classes: int) -> int:
    """The smallest M >= ``wanted`` that MPerClassSampler accepts: M divides the batch and
    M x classes fills it (10 categories at batch 64 need M = 8, not 4)."""
    for m in range(max(1, wanted), batch_size + 1):
        if batch_size % m == 0 and m * num_classes >= batch_size:
            if m != wanted:
                log.info("samples_per_class %d -> %d to fill batches of %d", wanted, m, batch_size)
            return m
    raise ValueError(f"no samples_per_class fits batch_size={batch_size}")


class CatalogDataModule(L.LightningDataModule):
    def __init__(
        self,
        catalog_dir: str | Path,
        train_transform: Transform,
        eval_transform: Transform,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 2,
        samples_per_class: int | None = None,
        train_masks: bool = False,
    ):
        """``train_masks``: the train transform takes (image, product mask) (copy-paste)."""
        super().__init__()
        self.catalog_dir = Path(catalog_dir)
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = num_workers
        self.samples_per_class = samples_per_class
        self.train_masks = train_masks
        self.manifest, self.categories = read_catalog(self.catalog_dir)

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def split(
        self, name: str, transform: Transform | None = None, masks: bool = False
    ) -> CachedImages:
        rows = self.manifest[self.manifest["split"] == name].reset_index(drop=True)
        if rows.empty:
            raise ValueError(f"the catalog in {self.catalog_dir} has no '{name}' images")
        masks_path = self.catalog_dir / MASKS_FILE if masks else None
        cache = self.catalog_dir / CACHE_FILE
        return CachedImages(rows, cache, transform or self.eval_transform, masks_path)

    def _loader(self, dataset: Dataset, batch_size: int, **kwargs) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.split("train", self.train_transform, masks=self.train_masks)
        if self.samples_per_class:
            # Pair losses need several images of each class in every batch.
            sampler = MPerClassSampler(
                dataset.labels,
                m=samples_per_class(self.samples_per_class, self.batch_size, self.num_classes),
                batch_size=self.batch_size,
                length_before_new_iter=len(dataset),
            )
            return self._loader(dataset, self.batch_size, sampler=sampler, drop_last=True)
        return self._loader(dataset, self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.split("val"), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.split("test"), self.eval_batch_size)
