"""The decoded image cache: one uint8 ``.npy`` array that training memory-maps.

Decoding JPEGs every epoch costs more CPU than a small network's forward pass on a 2-core
machine. The preprocess stage decodes each image once, letterboxes it to a fixed square and
stores all of them in one ``(N, size, size, 3)`` array; data loaders then index a memory map
(shared between worker processes by the page cache, no copy per worker).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def write_cache(images: Iterable[np.ndarray], n: int, size: int, path: str | Path) -> Path:
    """Stream ``n`` ``(size, size, 3)`` uint8 images into ``path`` (a ``.npy`` file).

    Written through ``np.lib.format.open_memmap`` into a temporary file and renamed at the
    end, so the whole array is never in memory and a crash never leaves a half-written cache
    where training would find it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.npy")
    shape = (n, size, size, 3)
    try:
        if n == 0:  # a zero-length file cannot be memory-mapped
            np.save(partial, np.zeros(shape, dtype=np.uint8), allow_pickle=False)
            written = sum(1 for _ in images)
        else:
            written = _fill(np.lib.format.open_memmap(partial, "w+", np.uint8, shape), images)
        if written != n:
            raise ValueError(f"write_cache expected {n} images, got {written}")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _fill(array: np.memmap, images: Iterable[np.ndarray]) -> int:
    count = 0
    for image in images:
        if count >= len(array):
            raise ValueError(f"write_cache got more images than n={len(array)}")
        if image.shape != array.shape[1:] or image.dtype != np.uint8:
            raise ValueError(
                f"image {count} has shape {image.shape} {image.dtype}, "
                f"expected {array.shape[1:]} uint8"
            )
        array[count] = image
        count += 1
    array.flush()
    del array  # close the map before the file is renamed
    return count


def open_cache(path: str | Path) -> np.ndarray:
    """The cache as a read-only memory map, shape ``(N, size, size, 3)`` uint8."""
    cache = np.load(Path(path), mmap_mode="r", allow_pickle=False)
    if cache.ndim != 4 or cache.shape[-1] != 3 or cache.dtype != np.uint8:
        raise ValueError(f"{path} is not an image cache: shape {cache.shape}, {cache.dtype}")
    return cache
