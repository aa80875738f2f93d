"""One pass over the test images that feeds every model under comparison.

The fine-tuned model and the untuned baseline see the *same* tensors from one data loader:
each image is decoded and transformed once (shopper-photo simulation is the expensive part on
CPU), and the comparison cannot drift apart through two differently configured pipelines.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from shoplens.data.augment import PhotoSimulation
from shoplens.data.cache import open_cache
from shoplens.training.datamodule import CachedImages

Forward = Callable[[torch.Tensor], dict[str, torch.Tensor]]


class PhotoQueries(CachedImages):
    """Query rows served as simulated shopper photos of themselves.

    The simulation is seeded by the row's ``cache_index`` (stable for a given catalog), so a
    query gets the same photo in every run, worker and model: metric changes come from the
    model, not from a different draw of blur or clutter.
    """

    def __init__(self, manifest: pd.DataFrame, cache_path: Path, simulation: PhotoSimulation):
        super().__init__(manifest, cache_path, transform=None)
        self.simulation = simulation

    def __getitem__(self, i: int):
        if self._cache is None:
            self._cache = open_cache(self.cache_path)
        index = int(self.cache_index[i])
        return self.simulation(np.asarray(self._cache[index]), index), int(self.labels[i]), True


@torch.inference_mode()
def embed(
    dataset: Dataset, forward: Forward, batch_size: int, num_workers: int = 0, desc: str = "embed"
) -> dict[str, torch.Tensor]:
    """Run ``forward`` (batch -> named outputs) over ``dataset``; concatenate every output.

    Returns the outputs plus ``labels`` and ``is_query`` of the rows, in dataset order.
    """
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    parts: dict[str, list[torch.Tensor]] = {}
    for images, labels, is_query in tqdm(loader, desc=desc, unit="batch", mininterval=1.0):
        outputs = {k: v.float().cpu() for k, v in forward(images).items()}
        for name, value in {**outputs, "labels": labels, "is_query": is_query}.items():
            parts.setdefault(name, []).append(value)
    return {name: torch.cat(values) for name, values in parts.items()}
