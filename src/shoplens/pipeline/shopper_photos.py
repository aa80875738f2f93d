"""The ``shopper_photos`` stage: the photo benchmark evaluate measures every model on.

Test-split products with a clean cut-out, photographed onto the *evaluation* backgrounds by
:mod:`shoplens.evaluation.shopper_photos`; the same photos for every model and every run
until the catalog, the pool or ``evaluate.photos`` change.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from shoplens.data.backgrounds import EVAL, read_pool
from shoplens.data.cache import open_cache
from shoplens.data.catalog import CACHE_FILE, CUTOUT, MASKS_FILE, PATH, SPLIT, read_manifest
from shoplens.evaluation.out_of_catalog import make_out_of_catalog, read_out_of_catalog_photo
from shoplens.evaluation.photo_plots import save_photo_grid
from shoplens.evaluation.shopper_photos import BenchmarkSettings, make_benchmark, read_photo
from shoplens.evaluation.small_photos import SMALL_DIR, SmallPhotoSettings, make_small_photos

log = logging.getLogger(__name__)


def settings(cfg: DictConfig, node: str = "photos", kind=BenchmarkSettings):
    values = OmegaConf.to_container(cfg.evaluate[node], resolve=True)
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def run(cfg: DictConfig) -> dict[str, Any]:
    catalog_dir, out = Path(cfg.paths.catalog_dir), Path(cfg.paths.shopper_photos_dir)
    reports = Path(cfg.paths.reports_dir) / "shopper_photos"
    reports.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(catalog_dir)
    products = manifest[(manifest[SPLIT] == "test") & (manifest[CUTOUT] == "")]
    images = open_cache(catalog_dir / CACHE_FILE)
    masks = np.load(catalog_dir / MASKS_FILE, mmap_mode="r")
    backgrounds = read_pool(cfg.paths.backgrounds_dir, EVAL)
    photos = settings(cfg)
    table = make_benchmark(products, images, masks, backgrounds, out, photos)
    foreign = make_out_of_catalog(backgrounds, out, photos, photos.out_of_catalog)
    sample = table.groupby("bucket", sort=False).head(4)
    save_photo_grid(
        [read_photo(out, name) for name in sample["photo"]],
        [[(r.x0, r.y0, r.x1, r.y1)] for r in sample.itertuples()],
        [f"{r.bucket}\n{r.category}" for r in sample.itertuples()],
        reports / "preview.png",
        "shopper-photo benchmark: test products on evaluation backgrounds (box: ground truth)",
    )
    sample = foreign.groupby("kind", sort=False).head(4)
    save_photo_grid(
        [read_out_of_catalog_photo(out, name) for name in sample["photo"]],
        [[] for _ in range(len(sample))],
        [f"{r.kind} ({r.background})" for r in sample.itertuples()],
        reports / "out_of_catalog.png",
        "out-of-catalog photos: things the shop does not sell, on evaluation backgrounds",
    )
    small = _small_photos(cfg, products, images, masks, backgrounds, out / SMALL_DIR)
    summary = {
        "photos": len(table),
        "small_photos": len(small),
        "out_of_catalog_photos": len(foreign),
        "products": int(table["product_id"].nunique()),
        **{f"photos_{b}": int(n) for b, n in table["bucket"].value_counts().items()},
    }
    (reports / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "shopper photos: %d photos of %d test products in %s", len(table), summary["products"], out
    )
    return summary


def _small_photos(cfg, products, images, masks, backgrounds, out: Path):
    """The small-photo benchmark's photos (``evaluate.small_photos``; none for 0 photos)."""
    small = settings(cfg, "small_photos", SmallPhotoSettings)
    if not small.photos:
        return []
    products = products.reset_index(drop=True)
    # The product's side in the catalog file: what "40-70% of its resolution" is measured in.
    native = np.array([max(Image.open(p).size) for p in products[PATH]])
    return make_small_photos(products, images, masks, native, backgrounds, out, small)
