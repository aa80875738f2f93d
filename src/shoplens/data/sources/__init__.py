"""Catalog sources: each turns some input into the common catalog table (see catalog.py).

Every source module exposes ``load_catalog(data_cfg, work_dir, seed=0) -> DataFrame`` with at
least ``path``, ``product_id`` and ``category``. ``work_dir`` is where a source may write files
it generates (Fashion-MNIST PNGs); sources never modify the user's own files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from shoplens.data.catalog import CatalogError, validate_catalog
from shoplens.data.sources import fashion_mnist, folder, manifest

SourceLoader = Callable[..., pd.DataFrame]

SOURCES: dict[str, SourceLoader] = {
    "fashion_mnist": fashion_mnist.load_catalog,
    "folder": folder.load_catalog,
    "manifest": manifest.load_catalog,
}


def load_source(data_cfg: Any, work_dir: str | Path, seed: int = 0) -> pd.DataFrame:
    """The validated catalog of the source named by ``data_cfg.source``."""
    name = data_cfg.source
    if name not in SOURCES:
        raise CatalogError(
            f"unknown data.source '{name}'; known sources: {', '.join(sorted(SOURCES))}"
        )
    catalog = SOURCES[name](data_cfg, Path(work_dir), seed=seed)
    return validate_catalog(catalog)
