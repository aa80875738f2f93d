"""Real photographs to put catalog products in front of, split by photograph.

A shopper's photo shows the product in a real scene. Training on copy-paste composites and
measuring on photo-like composites both need real backgrounds, and the measurement means
nothing if the model has seen its backgrounds: so the pool is split *by photograph* into
``train`` and ``eval`` (seeded), near-identical photographs (a stereo pair, a re-encode) are
kept on one side, and the split is written to ``backgrounds.csv`` in the DVC-tracked output.
Nothing that reads ``train`` can reach an ``eval`` file: they live in separate folders.

Sources: a user's folder of photographs (``data.backgrounds=/path``), else an offline default
of real photographs that ship inside PyPI wheels shoplens already installs (scikit-image's,
scikit-learn's and matplotlib's sample photographs; licences in their packages' READMEs).

Training-only photographs (``data.train_only_backgrounds``) widen the training scenes without
touching the split: they join ``train`` after the pool is split, so the evaluation side stays
the same photographs, and one that looks like an evaluation photograph is refused. The default,
``opencv``, is OpenCV's sample photographs from Debian's ``opencv-doc`` (DFSG-free, installed by
``make demo`` where apt can), skipped with a note where that package is absent.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from shoplens.data import dedup
from shoplens.data.images import ImageLimits, InvalidImageError, load_rgb, read_image_bytes

TRAIN, EVAL = "train", "eval"
POOL_FILE = "backgrounds.csv"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
# Scenes and textures only: synthetic test patterns (colour wheel, chessboard, phantom), logos,
# a product shot (Minduka's present pack) and the right half of a stereo pair are left out.
PACKAGED: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "brick": ("skimage", "data/brick.png"),
    "camera": ("skimage", "data/camera.png"),
    "cell": ("skimage", "data/cell.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "clock_motion": ("skimage", "data/clock_motion.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "coins": ("skimage", "data/coins.png"),
    "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "ihc": ("skimage", "data/ihc.png"),
    "moon": ("skimage", "data/moon.png"),
    "motorcycle": ("skimage", "data/motorcycle_left.png"),
    "page": ("skimage", "data/page.png"),
    "retina": ("skimage", "data/retina.jpg"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "text": ("skimage", "data/text.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}

# OpenCV's sample photographs (Debian's opencv-doc), for training scenes only. Photographs of
# scenes and objects; left out: drawings, logos, rendered shapes, calibration boards, text
# pages, a painting of a face, and the second image of every stereo or sequence pair.
OPENCV_SAMPLES_DIR = Path("/usr/share/doc/opencv-doc/examples")
OPENCV_SAMPLES = (
    *(f"data/{name}" for name in (
        "aero1.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "basketball1.png", "board.jpg",
        "box_in_scene.png", "building.jpg", "butterfly.jpg", "chicky_512.png",
        "ela_original.jpg", "fruits.jpg", "graf1.png", "home.jpg", "left.jpg", "leuvenA.jpg",
        "licenseplate_motion.jpg", "messi5.jpg", "orange.jpg", "rubberwhale1.png",
        "smarties.png", "squirrel_cls.jpg", "starry_night.jpg", "stuff.jpg", "sudoku.png",
        "text_defocus.jpg",
    )),
    "alphamat/input_images/plant.jpg",
    *(f"hfs/data/00{i}.jpg" for i in range(3)),
    *(f"text/scenetext0{i}.jpg" for i in range(1, 7)),
)  # fmt: skip


class BackgroundError(ValueError):
    """The background pool cannot be built or read; the message says why."""


@dataclass
class PoolSettings:
    """``preprocess.backgrounds`` in the config."""

    eval_fraction: float = 0.3  # share of photographs held out for evaluation only
    max_side: int = 512  # stored photographs are shrunk to this longer side
    min_side: int = 96  # smaller photographs are refused (too little scene to crop from)


def packaged_photos() -> dict[str, Path]:
    """name -> file of the default pool, for every package that is installed."""
    found = {}
    for name, (package, relative) in PACKAGED.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(next(iter(spec.submodule_search_locations))) / relative
        if path.is_file():
            found[name] = path
    return found


def opencv_sample_photos(root: Path = OPENCV_SAMPLES_DIR) -> dict[str, Path]:
    """name -> file of OpenCV's sample photographs that are installed (none without opencv-doc)."""
    paths = (root / relative for relative in OPENCV_SAMPLES)
    return {f"opencv_{p.stem}": p for p in paths if p.is_file()}


def train_only_photos(source: str | None) -> dict[str, Path]:
    """``data.train_only_backgrounds``: ``opencv`` (the packaged samples), a folder, or none."""
    if not source:
        return {}
    return opencv_sample_photos() if source == "opencv" else folder_photos(source)


def folder_photos(root: str | Path) -> dict[str, Path]:
    """name -> file of every image under ``root`` (names are relative paths, '/' -> '__')."""
    root = Path(root)
    if not root.is_dir():
        raise BackgroundError(f"data.backgrounds={str(root)!r} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return {str(p.relative_to(root).with_suffix("")).replace("/", "__"): p for p in files}


def split_photos(names: list[str], groups: np.ndarray, fraction: float, seed: int) -> list[str]:
    """``train`` or ``eval`` per photograph; whole groups of look-alikes move together."""
    unique = np.unique(groups)
    if len(unique) < 2:
        raise BackgroundError(
            f"the background pool needs at least 2 distinct photographs, got {len(unique)}"
        )
    order = np.random.default_rng(seed).permutation(unique)
    n_eval = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    held = set(order[:n_eval].tolist())
    return [EVAL if g in held else TRAIN for g in groups]


def build_pool(
    photos: dict[str, Path],
    out_dir: str | Path,
    settings: PoolSettings,
    seed: int,
    train_only: dict[str, Path] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate, shrink and split ``photos`` into ``out_dir/{train,eval}/<name>.png``.

    ``train_only`` photographs go to ``train`` whatever the split, after it (the split of
    ``photos`` is the same with or without them), unless one looks like an evaluation
    photograph. Returns the pool table (also written to ``backgrounds.csv``; ``train_only``
    marks the extras) and the refused photographs with the reason (not an image, too small,
    a copy of an evaluation photograph, ...).
    """
    out_dir = Path(out_dir)
    limits = ImageLimits(min_size=settings.min_side)
    # A name the pool already has stays the pool's photograph (split, possibly evaluation).
    train_only = {n: p for n, p in (train_only or {}).items() if n not in photos}
    kept, refused, images = [], [], []
    for name, path in [*sorted(photos.items()), *sorted(train_only.items())]:
        try:
            data = read_image_bytes(path, limits)
            image = load_rgb(data, limits)
        except InvalidImageError as err:
            refused.append({"name": name, "path": str(path), "reason": err.reason})
            continue
        image.thumbnail((settings.max_side, settings.max_side), Image.Resampling.LANCZOS)
        kept.append({"name": name, "source": str(path), "sha256": dedup.content_hash(data)})
        images.append(image)
    table = pd.DataFrame(kept, columns=["name", "source", "sha256"])
    table["train_only"] = table["name"].isin(list(train_only))
    pool = ~table["train_only"].to_numpy()
    if not pool.any():
        raise BackgroundError(f"no usable background photographs among {len(photos)}")
    pairs = dedup.near_duplicate_pairs(
        [dedup.perceptual_hash(im) for im in images],
        max_distance=8,
        thumbnails=np.stack([dedup.thumbnail(im) for im in images]),
    )
    groups = np.arange(len(table))
    for a, b in pairs:  # tiny pools: a plain union by relabelling is enough
        if pool[a] and pool[b]:  # extras never join (nor bridge) the pool's groups
            groups[groups == groups[b]] = groups[a]
    sides = np.full(len(table), TRAIN, dtype=object)
    sides[pool] = split_photos(
        list(table["name"][pool]), groups[pool], settings.eval_fraction, seed
    )
    copies = {  # a training-only photograph that looks like an evaluation one never trains
        extra: held
        for a, b in pairs
        for extra, held in ((a, b), (b, a))
        if not pool[extra] and pool[held] and sides[held] == EVAL
    }
    for i, held in sorted(copies.items()):
        refused.append({
            "name": table["name"][i], "path": table["source"][i],
            "reason": f"looks like evaluation photograph {table['name'][held]!r}",
        })  # fmt: skip
    keep = [i for i in range(len(table)) if i not in copies]
    table["split"] = sides
    table, images = table.iloc[keep].reset_index(drop=True), [images[i] for i in keep]
    table["width"] = [im.width for im in images]
    table["height"] = [im.height for im in images]
    for split in (TRAIN, EVAL):
        (out_dir / split).mkdir(parents=True, exist_ok=True)
    for row, image in zip(table.itertuples(), images, strict=True):
        image.save(out_dir / row.split / f"{row.name}.png")
    table.to_csv(out_dir / POOL_FILE, index=False)
    return table, pd.DataFrame(refused, columns=["name", "path", "reason"])


def read_pool(pool_dir: str | Path, split: str) -> dict[str, np.ndarray]:
    """name -> HWC uint8 array of the ``split`` photographs, in ``backgrounds.csv`` order."""
    if split not in (TRAIN, EVAL):
        raise ValueError(f"split must be {TRAIN!r} or {EVAL!r}, got {split!r}")
    table_path = Path(pool_dir) / POOL_FILE
    if not table_path.is_file():
        raise BackgroundError(f"no background pool at {pool_dir}: run `shoplens backgrounds`")
    table = pd.read_csv(table_path)
    names = table.loc[table["split"] == split, "name"]
    return {
        str(n): np.asarray(Image.open(Path(pool_dir) / split / f"{n}.png").convert("RGB"))
        for n in names
    }
