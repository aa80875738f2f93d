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
from shoplens.data.catalog import CACHE_INDEX, LABEL, QUERY, ROLE

Transform = Callable[[np.ndarray], torch.Tensor]


class CachedImages(Dataset):
    """Rows of the manifest, served from the decoded cache as (image, label, is_query)."""

    def __init__(self, manifest: pd.DataFrame, cache_path: Path, transform: Transform):
        self.cache_index = manifest[CACHE_INDEX].to_numpy()
        self.labels = manifest[LABEL].to_numpy()
        self.is_query = (manifest[ROLE] == QUERY).to_numpy()
        self.cache_path = cache_path
        self.transform = transform
        self._cache: np.ndarray | None = None  # opened lazily: once per worker process

    def __len__(self) -> int:
        return len(self.cache_index)

    def __getitem__(self, i: int):
        if self._cache is None:
            self._cache = open_cache(self.cache_path)
        image = np.asarray(self._cache[self.cache_index[i]])
        return self.transform(image), int(self.labels[i]), bool(self.is_query[i])
