"""A shop's own table of images: CSV or Parquet with path, product_id, category (+ attributes).

The most flexible source: products whose photos live anywhere, with extra attribute columns
(colour, material, ...) that travel along to the search results. Relative paths are resolved
against ``data.root``, or else against the manifest's own folder, so a manifest stays valid
when its folder is moved as a whole.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from shoplens.data.catalog import DERIVED_COLUMNS, PATH, REQUIRED_COLUMNS, CatalogError

logger = logging.getLogger(__name__)

CSV_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})
PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})


def read_table(path: Path) -> pd.DataFrame:
    """The raw table; every CSV cell read as text so ids like ``00123`` keep their zeros."""
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        # Only empty cells are missing: a product called "NA" or "null" stays a string.
        return pd.read_csv(
            path, dtype=str, keep_default_na=False, na_values=[""],
            sep="\t" if suffix == ".tsv" else ",",
        )  # fmt: skip
    if suffix in PARQUET_SUFFIXES:
        return pd.read_parquet(path)
    raise CatalogError(
        f"manifest {path} has an unsupported extension '{path.suffix}'; "
        f"use one of {sorted(CSV_SUFFIXES | PARQUET_SUFFIXES)}"
    )


def load_catalog(data_cfg: Any, work_dir: Path, seed: int = 0) -> pd.DataFrame:
    """Rows of ``data_cfg.manifest`` with absolute-or-cwd-relative paths (work_dir unused)."""
    if not data_cfg.manifest:
        raise CatalogError("data.manifest is not set; point it at a CSV or Parquet file")
    manifest_path = Path(data_cfg.manifest).expanduser()
    if not manifest_path.is_file():
        raise CatalogError(f"manifest {manifest_path} does not exist (data.manifest)")
    table = read_table(manifest_path)
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise CatalogError(
            f"manifest {manifest_path} lacks column(s) {missing}; it has {list(table.columns)}. "
            f"Required: {list(REQUIRED_COLUMNS)}; any other column is kept as an attribute"
        )
    stale = [column for column in DERIVED_COLUMNS if column in table.columns]
    if stale:
        # e.g. a previous run's manifest.parquet fed back in: we recompute these.
        logger.warning("manifest %s: ignoring derived column(s) %s", manifest_path, stale)
        table = table.drop(columns=stale)
    base = Path(data_cfg.root).expanduser() if data_cfg.root else manifest_path.parent
    table[PATH] = [
        value if pd.isna(value) else str(_resolve(str(value), base)) for value in table[PATH]
    ]
    logger.info("manifest %s: %d rows", manifest_path, len(table))
    return table


def _resolve(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path
