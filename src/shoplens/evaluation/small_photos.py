"""Small photos: test products photographed at a fraction of their catalog resolution.

The ruler of the super-resolution work: shoppers send thumbnails and zoomed-out photos, in
which the product is drawn with fewer pixels than its catalog photo has (``resolution``: the
product's longer side over its catalog image's, 0.4-0.7 by default). Two kinds, in equal
shares:

* ``thumbnail``: a small photo (longer side ``thumbnail_side``) that the product fills
  50-90% of: what a screenshot or a downscaled upload looks like;
* ``zoomed_out``: a normal photo (``frame_side``) with the product small in it: localization
  finds it, and its crop is the small image.

Held apart from training like the shopper-photo benchmark, with the same code: test-split
products, evaluation backgrounds, :mod:`shoplens.evaluation.shopper_photos`' camera.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from shoplens.evaluation.shopper_photos import (
    MASKS_DIR,
    PHOTOS_DIR,
    Cutout,
    cut_out,
    frame_size,
    free_position,
    paste_cutout,
    photograph,
    place_cutout,
    scene_crop,
    tint,
)

TABLE_FILE = "small_photos.parquet"
SMALL_DIR = "small"  # under the shopper-photo benchmark's directory (its own photo names)
KINDS = ("thumbnail", "zoomed_out")


@dataclass  # not frozen: the config schema types evaluate.small_photos with it
class SmallPhotoSettings:
    photos: int = 600
    seed: int = 4242
    resolution: tuple[float, float] = (0.4, 0.7)  # product side / its catalog image's side
    thumbnail_side: tuple[int, int] = (32, 64)  # longer side of a thumbnail, pixels
    thumbnail_fill: tuple[float, float] = (0.5, 0.9)  # product side / thumbnail's shorter side
    frame_side: tuple[int, int] = (192, 320)  # longer side of a zoomed-out photo
    rotation: float = 15.0
    jpeg_quality: tuple[int, int] = (60, 92)

    def __post_init__(self) -> None:
        low, high = self.resolution
        if not 0 < low <= high <= 1:
            raise ValueError(f"resolution must be within (0, 1], got {self.resolution}")


def make_small_photos(
    products: pd.DataFrame,
    images: np.ndarray,
    masks: np.ndarray,
    native_sides: np.ndarray,
    backgrounds: dict[str, np.ndarray],
    out_dir: str | Path,
    settings: SmallPhotoSettings,
) -> pd.DataFrame:
    """Photograph ``products`` (rows with ``cache_index`` into ``images``/``masks``, and the
    longer side of each product's catalog image in ``native_sides``, same order) small onto
    ``backgrounds`` (evaluation only); JPEGs in ``out_dir/photos``, each product's mask in
    ``out_dir/masks`` (what a perfect localizer would cut: the benchmark's ceiling), the table
    returned."""
    if products.empty or not backgrounds:
        raise ValueError("no products or no evaluation backgrounds to photograph")
    out = Path(out_dir)
    (out / PHOTOS_DIR).mkdir(parents=True, exist_ok=True)
    (out / MASKS_DIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(settings.seed)
    names, rows = sorted(backgrounds), []
    order = rng.permutation(len(products))
    for i in range(settings.photos):
        k = int(order[i % len(order)])
        product = products.iloc[k]
        kind = KINDS[i % len(KINDS)]
        resolution = rng.uniform(*settings.resolution)
        cut = cut_out(images[product["cache_index"]], masks[product["cache_index"]])
        # The cut-out's side in the catalog image's own pixels, then the fraction of it.
        cache_side = images.shape[1]
        native_product = max(cut.alpha.shape) * float(native_sides[k]) / cache_side
        product_px = max(2.0, resolution * native_product)
        if kind == "thumbnail":
            frame = frame_size(rng, settings.thumbnail_side)
            product_px = min(product_px, rng.uniform(*settings.thumbnail_fill) * min(frame))
        else:
            frame = frame_size(rng, settings.frame_side)
        bg = names[int(rng.integers(len(names)))]
        scene = scene_crop(rng, backgrounds[bg], frame)
        rgb, alpha = place_cutout(
            Cutout(tint(cut.rgb, rng), cut.alpha), product_px,
            rng.uniform(-settings.rotation, settings.rotation),
        )  # fmt: skip
        mask = np.zeros(scene.shape[:2], np.uint8)
        box = paste_cutout(scene, mask, rgb, alpha, free_position(rng, frame, alpha.shape[::-1]), 1)
        name = f"{i:05d}"
        (out / PHOTOS_DIR / f"{name}.jpg").write_bytes(
            photograph(scene, rng, settings.jpeg_quality)
        )
        Image.fromarray(mask).save(out / MASKS_DIR / f"{name}.png")
        rows.append({
            "photo": name, "kind": kind, "product_id": str(product["product_id"]),
            "category": str(product["category"]), "background": bg,
            "width": frame[0], "height": frame[1],
            "product_side": max(box[2] - box[0], box[3] - box[1]),
            "catalog_side": round(native_product, 1),
            "resolution": max(box[2] - box[0], box[3] - box[1]) / native_product,
            **dict(zip(("x0", "y0", "x1", "y1"), box, strict=True)),
        })  # fmt: skip
    table = pd.DataFrame(rows)
    table.to_parquet(out / TABLE_FILE, index=False)
    return table
