"""Photos of things the shop does not sell: what the "no confident match" threshold is
calibrated on, and what its false-match rate is measured on.

A nearest-neighbour search always answers; a photo of a face or a landscape comes back with a
top score like any other. ``evaluate`` compares the top scores of these photos with those of the
shopper-photo benchmark's (in-catalog) photos and picks the threshold that keeps a chosen share
of in-catalog photos. Like the benchmark, the photos are held apart from training: scenes from
the *evaluation* backgrounds only, objects from sources nothing in training reads, and the same
camera (:func:`~shoplens.evaluation.shopper_photos.photograph`), so only *what* is photographed
differs from an in-catalog shopper photo. Three kinds, in equal shares:

* ``scene``: a crop of an evaluation photograph, nothing in front (a landscape, a page, a face);
* ``face``: a face from scikit-image's LFW subset held up in front of a scene;
* ``shape``: a handwritten digit (scikit-learn's digits), cut out and placed like a product:
  an object on the scene the localizer may well find, that is not a product.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from shoplens.evaluation.shopper_photos import (
    BenchmarkSettings,
    Cutout,
    frame_size,
    free_position,
    paste_cutout,
    photograph,
    place_cutout,
    scene_crop,
    tint,
)

OUT_DIR, TABLE_FILE = "out_of_catalog", "out_of_catalog.parquet"
KINDS = ("scene", "face", "shape")
LFW_FACES = 100  # skimage.data.lfw_subset(): the first 100 of its 200 crops are faces


def _objects() -> dict[str, list[Cutout]]:
    """Faces (a soft-edged rectangle: a printed photo, a screen) and digit silhouettes."""
    from skimage.data import lfw_subset
    from sklearn.datasets import load_digits

    faces = []
    for face in lfw_subset()[:LFW_FACES]:
        grey = (face * 255).astype(np.float32)
        alpha = np.ones_like(grey)
        alpha[[0, -1], :] = alpha[:, [0, -1]] = 0.5
        faces.append(Cutout(np.repeat(grey[..., None], 3, axis=2), alpha))
    shapes = []
    for digit in load_digits().images:
        big = np.asarray(
            Image.fromarray((digit * 255 / 16).astype(np.uint8)).resize(
                (32, 32), Image.Resampling.BICUBIC
            ),
            dtype=np.float32,
        )
        alpha = np.clip((big - 40) / 80, 0, 1)
        if alpha.max() < 1:
            continue
        ys, xs = np.nonzero(alpha > 0)
        box = np.s_[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        shapes.append(Cutout(np.repeat(big[box][..., None], 3, axis=2), alpha[box]))
    return {"face": faces, "shape": shapes}


def make_out_of_catalog(
    backgrounds: dict[str, np.ndarray],
    out_dir: str | Path,
    settings: BenchmarkSettings,
    photos: int,
) -> pd.DataFrame:
    """``photos`` JPEGs of things that are not products, on ``backgrounds`` (evaluation only),
    in ``out_dir/out_of_catalog/``; their table in ``out_dir/out_of_catalog.parquet``."""
    if not backgrounds:
        raise ValueError("no evaluation backgrounds")
    out_dir = Path(out_dir)
    (out_dir / OUT_DIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(settings.seed + 1)  # not the in-catalog photos' draws
    objects, names, rows = _objects(), sorted(backgrounds), []
    for i in range(photos):
        kind = KINDS[i % len(KINDS)]
        small = rng.random() < 0.2
        frame = frame_size(rng, settings.small_side if small else settings.frame_side)
        bg = names[int(rng.integers(len(names)))]
        scene = scene_crop(rng, backgrounds[bg], frame)
        if kind != "scene":
            pool = objects[kind]
            thing = pool[int(rng.integers(len(pool)))]
            cut = Cutout(tint(thing.rgb * rng.uniform(0.6, 1.0, 3), rng), thing.alpha)
            rgb, alpha = place_cutout(cut, rng.uniform(0.2, 0.9) * min(frame), rng.uniform(-25, 25))
            mask = np.zeros(scene.shape[:2], np.uint8)
            paste_cutout(scene, mask, rgb, alpha, free_position(rng, frame, alpha.shape[::-1]), 1)
        name = f"{i:05d}"
        (out_dir / OUT_DIR / f"{name}.jpg").write_bytes(
            photograph(scene, rng, settings.jpeg_quality)
        )
        rows.append(
            {"photo": name, "kind": kind, "background": bg, "width": frame[0], "height": frame[1]}
        )
    table = pd.DataFrame(rows)
    table.to_parquet(out_dir / TABLE_FILE, index=False)
    return table


def read_out_of_catalog(out_dir: str | Path) -> pd.DataFrame | None:
    """The table, or None for a benchmark made before out-of-catalog photos existed."""
    path = Path(out_dir) / TABLE_FILE
    return pd.read_parquet(path) if path.is_file() else None


def read_out_of_catalog_photo(out_dir: str | Path, name: str) -> bytes:
    return (Path(out_dir) / OUT_DIR / f"{name}.jpg").read_bytes()
