"""The ``preprocess`` stage: any catalog source in, one clean, split, decoded catalog out.

source -> validate every image (bad ones to quarantine.csv) -> hashes and duplicate groups
-> grouped, stratified split -> letterboxed uint8 cache -> manifest, category list, counts,
summary metrics and a preview grid. Training then never touches the original files.
User input files are only read, never moved, edited or deleted.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from tqdm import tqdm

from shoplens.data import dedup
from shoplens.data.cache import open_cache, write_cache
from shoplens.data.catalog import (
    CACHE_FILE,
    CACHE_INDEX,
    CATEGORIES_FILE,
    CATEGORY,
    CONTENT_HASH,
    CUTOUT,
    DERIVED_COLUMNS,
    FRAMING_FILE,
    GROUP_ID,
    LABEL,
    MANIFEST_FILE,
    MASKS_FILE,
    PATH,
    PHASH,
    PRODUCT_ID,
    QUERY,
    REQUIRED_COLUMNS,
    ROLE,
    SPLIT,
    SPLITS,
    CatalogError,
    attribute_columns,
)
from shoplens.data.cutout import CutoutSettings, backdrop_colour, cut_catalog, product_fill
from shoplens.data.images import (
    ImageLimits,
    InvalidImageError,
    letterbox,
    load_rgb,
    read_image_bytes,
)
from shoplens.data.preview import save_preview_grid
from shoplens.data.sources import load_source
from shoplens.data.split import split_catalog

logger = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, int]:
    """Run the stage with the composed config; return the metrics written to summary.json."""
    catalog_dir = Path(cfg.paths.catalog_dir)
    reports_dir = Path(cfg.paths.reports_dir) / "preprocess"
    catalog_dir.mkdir(parents=True, exist_ok=True)
    reports_dir.mkdir(parents=True, exist_ok=True)
    size = int(cfg.preprocess.cache_size)
    # A failed run must not leave the previous run's catalog behind for training to pick up.
    for stale in (MANIFEST_FILE, CACHE_FILE, CATEGORIES_FILE, MASKS_FILE, FRAMING_FILE):
        (catalog_dir / stale).unlink(missing_ok=True)
    for stale in ("counts.csv", "summary.json", "preview.png"):
        (reports_dir / stale).unlink(missing_ok=True)

    catalog = load_source(cfg.data, catalog_dir / "sources", seed=int(cfg.seed))
    # Decoded images go to a scratch cache sized for every row; the kept ones are then
    # streamed into the final cache, so memory never holds more than one image.
    scratch = catalog_dir / "images.scratch.npy"
    try:
        kept, quarantine, thumbnails = _validate_and_decode(
            catalog, ImageLimits.from_config(cfg.preprocess), size, scratch
        )
        quarantine.to_csv(reports_dir / "quarantine.csv", index=False)
        if kept.empty:
            raise CatalogError(
                f"no usable images: all {len(catalog)} were quarantined; reasons in "
                f"{reports_dir / 'quarantine.csv'}"
            )
        duplicates = dedup.find_duplicates(
            kept, int(cfg.preprocess.near_duplicate_distance), thumbnails
        )
        kept[GROUP_ID] = dedup.assign_groups(kept, duplicates)
        categories = sorted(kept[CATEGORY].unique())
        kept[LABEL] = kept[CATEGORY].map({name: i for i, name in enumerate(categories)})
        kept = split_catalog(kept, cfg.preprocess.split, int(cfg.seed))

        scratch_cache = open_cache(scratch)
        rows = kept.pop("_scratch_row").to_numpy()
        write_cache((scratch_cache[row] for row in rows), len(kept), size, catalog_dir / CACHE_FILE)
        del scratch_cache
    finally:
        scratch.unlink(missing_ok=True)
    kept[CACHE_INDEX] = np.arange(len(kept), dtype=np.int64)
    kept[CUTOUT] = _cut_out(catalog_dir, CutoutSettings(**cfg.preprocess.cutout))

    columns = [*REQUIRED_COLUMNS, *attribute_columns(kept), *DERIVED_COLUMNS]
    manifest = kept[columns].reset_index(drop=True)
    manifest.to_parquet(catalog_dir / MANIFEST_FILE, index=False)
    (catalog_dir / CATEGORIES_FILE).write_text(json.dumps(categories, indent=2) + "\n")
    _counts(manifest).to_csv(reports_dir / "counts.csv", index=False)
    refused = manifest.loc[manifest[CUTOUT] != "", [PATH, PRODUCT_ID, CATEGORY, CUTOUT]]
    refused.rename(columns={CUTOUT: "reason"}).to_csv(
        reports_dir / "cutout_refused.csv", index=False
    )
    summary = _summary(catalog, manifest, duplicates, len(quarantine))
    (reports_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    save_preview_grid(
        manifest,
        open_cache(catalog_dir / CACHE_FILE),
        reports_dir / "preview.png",
        int(cfg.preprocess.preview_per_category),
    )
    logger.info(
        "preprocess: kept %d of %d images (%d quarantined, %d exact / %d near duplicates), "
        "%d categories, %d groups; train %d / val %d / test %d -> %s",
        summary["images_kept"], summary["images_total"], summary["images_quarantined"],
        summary["exact_duplicates"], summary["near_duplicates"], summary["categories"],
        summary["groups"], summary["train_images"], summary["val_images"],
        summary["test_images"], catalog_dir,
    )  # fmt: skip
    return summary


def _validate_and_decode(
    catalog: pd.DataFrame, limits: ImageLimits, size: int, scratch: Path
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Decode each row once: hashes, a dedup thumbnail and the letterboxed cache image.

    Returns the kept rows (with content_hash, phash and their row in ``scratch``), the
    quarantine table (path, reason) and the thumbnails of the kept rows.
    """
    cache = np.lib.format.open_memmap(scratch, "w+", np.uint8, (len(catalog), size, size, 3))
    kept_rows, content_hashes, phashes, thumbnails, quarantine = [], [], [], [], []
    progress = tqdm(catalog[PATH], desc="validate images", unit="img", mininterval=1.0)
    for row, path in enumerate(progress):
        try:
            data = read_image_bytes(path, limits)
            img = load_rgb(data, limits)
        except InvalidImageError as err:
            quarantine.append({PATH: path, "reason": err.reason})
            continue
        cache[len(kept_rows)] = letterbox(img, size)
        kept_rows.append(row)
        content_hashes.append(dedup.content_hash(data))
        phashes.append(dedup.perceptual_hash(img))
        thumbnails.append(dedup.thumbnail(img))
    cache.flush()
    del cache
    kept = catalog.iloc[kept_rows].reset_index(drop=True)
    kept[CONTENT_HASH] = content_hashes
    kept[PHASH] = phashes
    kept["_scratch_row"] = np.arange(len(kept))
    side = dedup.THUMBNAIL_SIDE
    thumbs = np.stack(thumbnails) if thumbnails else np.zeros((0, side, side), np.uint8)
    return kept, pd.DataFrame(quarantine, columns=[PATH, "reason"]), thumbs


def _cut_out(catalog_dir: Path, settings: CutoutSettings) -> list[str]:
    """Product masks of the cache (masks.npy) and the catalog's framing (backdrop colour, how
    much of the shot a product fills); returns the refusal reason per row ("" when clean)."""
    cache = open_cache(catalog_dir / CACHE_FILE)
    masks, reasons = cut_catalog(cache, settings)
    np.save(catalog_dir / MASKS_FILE, masks, allow_pickle=False)
    ok = [i for i, reason in enumerate(reasons) if not reason]
    sample = ok[:: max(1, len(ok) // 2000)]  # a few thousand shots pin the median down
    colours = [backdrop_colour(np.asarray(cache[i]))[0] for i in sample]
    colour = np.median(colours, axis=0) if colours else np.full(3, 255.0)
    fills = [product_fill(masks[i]) for i in sample]
    framing = {
        "backdrop": [int(round(v)) for v in colour],
        "fill": round(float(np.median(fills)) if fills else 1.0, 4),
        "cut_out": len(ok),
    }
    (catalog_dir / FRAMING_FILE).write_text(json.dumps(framing) + "\n")
    return reasons


def _counts(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images and products per split, role and category (the table behind summary.json)."""
    counts = (
        manifest.groupby([SPLIT, ROLE, CATEGORY])
        .agg(images=(PATH, "size"), products=(PRODUCT_ID, "nunique"), groups=(GROUP_ID, "nunique"))
        .reset_index()
    )
    order = counts[SPLIT].map({name: i for i, name in enumerate(SPLITS)})
    return (
        counts.assign(_order=order).sort_values(["_order", ROLE, CATEGORY]).drop(columns="_order")
    )


def _summary(
    catalog: pd.DataFrame, manifest: pd.DataFrame, duplicates: dedup.Duplicates, quarantined: int
) -> dict[str, Any]:
    """Flat numeric metrics (DVC shows and diffs them across experiments)."""
    summary: dict[str, Any] = {
        "images_total": len(catalog),
        "images_kept": len(manifest),
        "images_quarantined": quarantined,
        "exact_duplicates": duplicates.exact_duplicates,
        "near_duplicates": duplicates.near_duplicates,
        "products": manifest[PRODUCT_ID].nunique(),
        "groups": manifest[GROUP_ID].nunique(),
        "categories": manifest[CATEGORY].nunique(),
        "cutout_refused": int((manifest[CUTOUT] != "").sum()),
    }
    for split in SPLITS:
        part = manifest[manifest[SPLIT] == split]
        summary[f"{split}_images"] = len(part)
        summary[f"{split}_groups"] = part[GROUP_ID].nunique()
        if split != "train":
            summary[f"{split}_queries"] = int((part[ROLE] == QUERY).sum())
            summary[f"{split}_gallery"] = int((part[ROLE] != QUERY).sum())
    return {key: int(value) for key, value in summary.items()}
