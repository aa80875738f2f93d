"""The one data model of a catalog, whatever source it came from.

Every source (Fashion-MNIST, a folder tree, a shop's own table) is turned into a
:class:`pandas.DataFrame` with the columns named here, and the preprocess stage adds the
derived ones. Training, evaluation and the search service read only these names, so a new
source never needs changes downstream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

# Columns every source provides. Anything else a source provides (colour, material, ...) is an
# attribute column and travels along untouched.
PATH = "path"  # image file path as the source gave it
PRODUCT_ID = "product_id"  # photos of one product share it; never split across train/val/test
CATEGORY = "category"
REQUIRED_COLUMNS: tuple[str, ...] = (PATH, PRODUCT_ID, CATEGORY)

# Columns the preprocess stage adds.
SPLIT = "split"  # train | val | test
ROLE = "role"  # query | gallery in val and test, "" in train
GROUP_ID = "group_id"  # product plus its exact and near copies (connected components)
LABEL = "label"  # index into the sorted category list (categories.json)
CACHE_INDEX = "cache_index"  # row in the decoded uint8 cache (images.npy)
CONTENT_HASH = "content_hash"  # sha256 of the file bytes
PHASH = "phash"  # 64-bit perceptual hash, hex
CUTOUT = "cutout"  # "" when the product was cut out cleanly (masks.npy), else why not
DERIVED_COLUMNS: tuple[str, ...] = (
    SPLIT,
    ROLE,
    GROUP_ID,
    LABEL,
    CACHE_INDEX,
    CONTENT_HASH,
    PHASH,
    CUTOUT,
)

SPLITS: tuple[str, ...] = ("train", "val", "test")
QUERY = "query"
GALLERY = "gallery"
ROLES: tuple[str, ...] = ("", QUERY, GALLERY)

# File names inside ``paths.catalog_dir``.
MANIFEST_FILE = "manifest.parquet"
CACHE_FILE = "images.npy"
CATEGORIES_FILE = "categories.json"
MASKS_FILE = "masks.npy"  # (N, S, S) uint8 product masks, rows as in images.npy
FRAMING_FILE = "framing.json"  # how the catalog's shots frame a product (backdrop, fill)


class CatalogError(ValueError):
    """The catalog cannot be used as it is; the message says what is wrong and where."""


def attribute_columns(df: pd.DataFrame) -> list[str]:
    """Columns that are neither required nor derived: the shop's own product attributes."""
    known = set(REQUIRED_COLUMNS) | set(DERIVED_COLUMNS)
    return [column for column in df.columns if column not in known]


def validate_catalog(df: pd.DataFrame, *, preprocessed: bool = False) -> pd.DataFrame:
    """Check the columns and values; return a copy with path/product_id/category as ``str``.

    ``preprocessed=True`` also checks the columns the preprocess stage adds, which is what
    training should call on ``manifest.parquet``.
    """
    if not isinstance(df, pd.DataFrame):
        raise CatalogError(f"a catalog must be a pandas DataFrame, got {type(df).__name__}")
    required = list(REQUIRED_COLUMNS) + (list(DERIVED_COLUMNS) if preprocessed else [])
    missing = [column for column in required if column not in df.columns]
    if missing:
        raise CatalogError(
            f"catalog is missing column(s) {missing}; it has {list(df.columns)} "
            f"(required: {list(REQUIRED_COLUMNS)})"
        )
    if df.empty:
        raise CatalogError("catalog is empty: it has no rows")
    df = df.copy()
    for column in REQUIRED_COLUMNS:
        values = df[column]
        bad = values.isna() | (values.astype(str).str.strip() == "")
        if bad.any():
            rows = list(df.index[bad][:5])
            raise CatalogError(
                f"column '{column}' has {int(bad.sum())} empty or null value(s), e.g. rows {rows}"
            )
        df[column] = values.astype(str)
    if preprocessed:
        _check_derived(df)
    return df


def _check_derived(df: pd.DataFrame) -> None:
    for column, allowed in ((SPLIT, SPLITS), (ROLE, ROLES)):
        unknown = sorted(set(df[column].astype(str)) - set(allowed))
        if unknown:
            raise CatalogError(
                f"column '{column}' has unknown value(s) {unknown}; allowed {allowed}"
            )
    for column in (GROUP_ID, LABEL, CACHE_INDEX):
        if df[column].isna().any() or not pd.api.types.is_integer_dtype(df[column]):
            raise CatalogError(f"column '{column}' must hold integers without nulls")


def read_manifest(catalog_dir: str | Path) -> pd.DataFrame:
    """The preprocessed manifest of ``catalog_dir``, validated (what training reads)."""
    path = Path(catalog_dir) / MANIFEST_FILE
    if not path.is_file():
        raise CatalogError(f"no manifest at {path}; run the preprocess stage first")
    return validate_catalog(pd.read_parquet(path), preprocessed=True)


@dataclass(frozen=True)
class Framing:
    """How the catalog's shots show a product: a query crop is framed the same way."""

    backdrop: tuple[int, int, int]  # median backdrop colour of the cleanly cut-out shots
    fill: float  # median share of the shot's side the product's longer side spans

    @property
    def crop_margin(self) -> float:
        """Margin per side (share of the product's box) that reproduces ``fill``."""
        return max(0.0, (1 / max(self.fill, 1e-3) - 1) / 2)


def read_framing(catalog_dir: str | Path) -> Framing:
    path = Path(catalog_dir) / FRAMING_FILE
    if not path.is_file():
        raise CatalogError(f"no framing at {path}; run the preprocess stage first")
    values = json.loads(path.read_text(encoding="utf-8"))
    r, g, b = values["backdrop"]
    return Framing((int(r), int(g), int(b)), float(values["fill"]))


def read_categories(catalog_dir: str | Path) -> list[str]:
    """The sorted category names; ``label`` in the manifest indexes this list."""
    path = Path(catalog_dir) / CATEGORIES_FILE
    if not path.is_file():
        raise CatalogError(f"no category list at {path}; run the preprocess stage first")
    return list(json.loads(path.read_text(encoding="utf-8")))


def read_catalog(catalog_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """The preprocessed manifest (validated) and its category list."""
    return read_manifest(catalog_dir), read_categories(catalog_dir)
