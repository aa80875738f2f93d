"""The preprocessed catalog as a torch Dataset: rows of the manifest from the decoded cache.

The cache (``images.npy``, N x S x S x 3 uint8) is memory-mapped, so worker processes share
the page cache instead of copying the catalog. Training, evaluation and the index read it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_INDEX, CUTOUT, LABEL, QUERY, ROLE

Transform = Callable[[np.ndarray], torch.Tensor]


class CachedImages(Dataset):
    """Rows of the manifest, served from the decoded cache as (image, label, is_query).

    With ``masks_path`` (preprocess's product masks) the transform is called as
    ``transform(image, mask)``, ``mask`` None where the product could not be cut out cleanly.
    """

    def __init__(
        self,
        manifest: pd.DataFrame,
        cache_path: Path,
        transform: Transform,
        masks_path: Path | None = None,
    ):
        self.cache_index = manifest[CACHE_INDEX].to_numpy()
        self.labels = manifest[LABEL].to_numpy()
        self.is_query = (manifest[ROLE] == QUERY).to_numpy()
        self.cache_path, self.masks_path = cache_path, masks_path
        self.pasteable = (manifest[CUTOUT] == "").to_numpy() if CUTOUT in manifest else None
        self.transform = transform
        self._cache: np.ndarray | None = None  # opened lazily: once per worker process
        self._masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.cache_index)

    def __getitem__(self, i: int):
        if self._cache is None:
            self._cache = open_cache(self.cache_path)
        row = self.cache_index[i]
        image = np.asarray(self._cache[row])
        if self.masks_path is None:
            return self.transform(image), int(self.labels[i]), bool(self.is_query[i])
        if self._masks is None:
            self._masks = np.load(self.masks_path, mmap_mode="r")
        ok = self.pasteable is None or self.pasteable[i]
        mask = np.asarray(self._masks[row]) if ok else None
        return self.transform(image, mask), int(self.labels[i]), bool(self.is_query[i])
