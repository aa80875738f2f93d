"""A shop's images in folders: the category is the first folder level under the root.

* ``root/<category>/<file>``: each file is its own product (product_id ``category/stem``).
* ``root/<category>/<product>/.../<file>``: every file below a first-level sub-folder belongs
  to that product (product_id ``category/product``), e.g. several angles of one shoe.

Every file with an image extension is listed, readable or not: validation happens in the
preprocess stage so that a broken file shows up in the quarantine report, not as a silent gap.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from shoplens.data.catalog import CATEGORY, PATH, PRODUCT_ID, CatalogError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


def _is_hidden(name: str) -> bool:
    return name.startswith(".")  # .DS_Store, ._AppleDouble, .thumbnails/, .git/


def image_files(category_dir: Path) -> list[Path]:
    """Image files below ``category_dir``, in a stable (sorted) order, hidden ones skipped."""
    found = []
    for folder, subfolders, files in os.walk(category_dir):
        subfolders[:] = sorted(d for d in subfolders if not _is_hidden(d))
        for name in sorted(files):
            if not _is_hidden(name) and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(folder) / name)
    return found


def load_catalog(data_cfg: Any, work_dir: Path, seed: int = 0) -> pd.DataFrame:
    """One row per image file under ``data_cfg.root`` (``work_dir`` and ``seed`` unused)."""
    if not data_cfg.root:
        raise CatalogError(
            "data.root is not set; point it at the folder holding <category>/ folders"
        )
    root = Path(data_cfg.root).expanduser()
    if not root.is_dir():
        raise CatalogError(f"image folder {root} does not exist (data.root)")
    categories = sorted(p for p in root.iterdir() if p.is_dir() and not _is_hidden(p.name))
    if not categories:
        raise CatalogError(
            f"{root} has no category folders; expected {root}/<category>/<image> "
            f"or {root}/<category>/<product>/<images>"
        )
    rows = []
    for category_dir in categories:
        for path in image_files(category_dir):
            relative = path.relative_to(category_dir)
            product = relative.stem if len(relative.parts) == 1 else relative.parts[0]
            rows.append(
                {
                    PATH: str(path),
                    PRODUCT_ID: f"{category_dir.name}/{product}",
                    CATEGORY: category_dir.name,
                }
            )
    if not rows:
        raise CatalogError(
            f"no image files under {root}; accepted extensions: {sorted(IMAGE_EXTENSIONS)}"
        )
    logger.info("folder %s: %d images in %d categories", root, len(rows), len(categories))
    return pd.DataFrame(rows, columns=[PATH, PRODUCT_ID, CATEGORY])
