"""Fashion-MNIST as a product catalog: the demo data that needs no shop.

Zalando's 70,000 product photos (28x28 grayscale, 10 categories, MIT licence) ship as gzip
IDX files in Debian's ``dataset-fashion-mnist`` package. We pool the official train and test
files (our own split decides what is held out), take a seeded class-balanced subset and
write each image as a real PNG, so this source goes through exactly the same validation,
decoding and caching as a shop's photos.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from shoplens.data.catalog import CATEGORY, PATH, PRODUCT_ID, CatalogError

logger = logging.getLogger(__name__)

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
# Label order of the dataset; names made filesystem-safe ("T-shirt/top" -> "tshirt_top").
CATEGORY_NAMES: tuple[str, ...] = (
    "tshirt_top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle_boot",
)  # fmt: skip
PARTS: tuple[str, ...] = ("train", "t10k")
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # IDX headers: uint8 data, 3 and 1 dimensions


def idx_files(root: Path) -> dict[str, tuple[Path, Path]]:
    """(images, labels) file of each official part."""
    return {
        part: (root / f"{part}-images-idx3-ubyte.gz", root / f"{part}-labels-idx1-ubyte.gz")
        for part in PARTS
    }


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX array (big-endian header: magic, then one uint32 per dimension)."""
    raw = gzip.decompress(path.read_bytes())
    header = np.frombuffer(raw, dtype=">u4", count=1)
    if len(raw) < 8 or int(header[0]) != magic:
        raise CatalogError(f"{path} is not an IDX file with magic number {magic}")
    ndim = magic & 0xFF
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    # offset 16 for images (3 dims), 8 for labels (1 dim)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_pool(root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All 70,000 images, their labels and product ids (``fmnist-<part>-<index>``)."""
    files = idx_files(root)
    missing = [str(p) for pair in files.values() for p in pair if not p.is_file()]
    if missing:
        raise CatalogError(
            f"Fashion-MNIST files not found: {', '.join(missing)}. Install them with "
            "`sudo apt-get install dataset-fashion-mnist`, or download the four *-ubyte.gz "
            "files from https://github.com/zalandoresearch/fashion-mnist into a folder and "
            "set data.root=/that/folder"
        )
    images, labels, product_ids = [], [], []
    for part, (images_path, labels_path) in files.items():
        part_images = read_idx(images_path, IMAGES_MAGIC)
        part_labels = read_idx(labels_path, LABELS_MAGIC)
        if len(part_images) != len(part_labels):
            raise CatalogError(f"{images_path} and {labels_path} differ in length")
        images.append(part_images)
        labels.append(part_labels)
        product_ids += [f"fmnist-{part}-{i:05d}" for i in range(len(part_labels))]
    return np.concatenate(images), np.concatenate(labels), product_ids


def balanced_subset(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``per_class`` random images of each label (all when None)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if per_class is not None and per_class < len(members):
            members = rng.choice(members, size=per_class, replace=False)
        elif per_class is not None:
            logger.warning(
                "per_class=%d but label %d has only %d images; using all",
                per_class,
                label,
                len(members),
            )
        chosen.append(members)
    return np.sort(np.concatenate(chosen))


def load_catalog(data_cfg: Any, work_dir: Path, seed: int = 0) -> pd.DataFrame:
    """Write the subset as ``work_dir/fashion_mnist/<category>/<product_id>.png``; list them."""
    root = Path(data_cfg.root or DEFAULT_ROOT).expanduser()
    per_class = data_cfg.per_class
    images, labels, product_ids = read_pool(root)
    out_dir = Path(work_dir) / "fashion_mnist"
    for name in CATEGORY_NAMES:
        (out_dir / name).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in balanced_subset(labels, None if per_class is None else int(per_class), seed):
        category = CATEGORY_NAMES[int(labels[i])]
        path = out_dir / category / f"{product_ids[i]}.png"
        Image.fromarray(images[i]).save(path)
        rows.append({PATH: str(path), PRODUCT_ID: product_ids[i], CATEGORY: category})
    logger.info("Fashion-MNIST: wrote %d PNGs under %s", len(rows), out_dir)
    return pd.DataFrame(rows, columns=[PATH, PRODUCT_ID, CATEGORY])
