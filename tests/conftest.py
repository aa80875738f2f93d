"""Shared fixtures: a tiny generated, preprocessed catalog (4 categories x 16 products) and a
model trained on it with timm's test_efficientnet, for the train, evaluate and register tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from shoplens.config import compose_config
from shoplens.pipeline import backgrounds, preprocess, shopper_photos

COLOURS = {
    "red": (200, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 60, 200),
    "gold": (220, 180, 30),
}
SHAPES = ("ellipse", "rectangle", "triangle", "cross")
Overrides = Callable[..., list[str]]


def _product_photo(category_index: int, variant: int, rng: np.random.Generator) -> Image.Image:
    """A light background with a coloured shape: category = (colour, shape), with jitter."""
    colour = np.array(list(COLOURS.values())[category_index])
    image = Image.new("RGB", (40, 40), tuple(int(v) for v in rng.integers(215, 255, 3)))
    draw = ImageDraw.Draw(image)
    c = tuple(int(v) for v in np.clip(colour + rng.integers(-25, 25, 3), 0, 255))
    o = int(rng.integers(4, 10))
    shape = SHAPES[category_index]
    if shape == "ellipse":
        draw.ellipse((o, o, 40 - o, 40 - o), fill=c)
    elif shape == "rectangle":
        draw.rectangle((o, o + 4, 40 - o, 36 - o), fill=c)
    elif shape == "triangle":
        draw.polygon([(20, o), (o, 40 - o), (40 - o, 40 - o)], fill=c)
    else:
        draw.rectangle((16, o, 24, 40 - o), fill=c)
        draw.rectangle((o, 16, 40 - o, 24), fill=c)
    draw.point([tuple(int(v) for v in rng.integers(0, 40, 2)) for _ in range(variant % 7)], fill=c)
    return image


def _overrides(tmp: Path, *extra: str) -> list[str]:
    return [
        "data=folder",
        f"data.root={tmp / 'images'}",
        "data.image_size=32",
        "data.batch_size=16",
        "data.num_workers=0",
        f"paths.catalog_dir={tmp / 'catalog'}",
        f"paths.reports_dir={tmp / 'reports'}",
        f"paths.artifacts_dir={tmp / 'artifacts'}",
        f"paths.backgrounds_dir={tmp / 'backgrounds'}",
        "data.train_only_backgrounds=null",  # the same pool whether opencv-doc is installed
        "query.super_resolve=true",  # off on the demo (README, "Small photos"); tests keep
        # exercising it as the measured option
        f"paths.shopper_photos_dir={tmp / 'shopper_photos'}",
        f"paths.state_dir={tmp / 'var'}",
        # A small photo benchmark of small photos: seconds, not minutes.
        "evaluate.photos.photos=24",
        "evaluate.photos.frame_side=[96,128]",  # within the serving tests' 20,000-pixel limit
        "evaluate.photos.small_side=[48,64]",
        "evaluate.photos.out_of_catalog=12",
        "evaluate.small_photos.photos=24",
        "evaluate.small_photos.frame_side=[96,128]",  # within the 20,000-pixel test limit
        # A tiny localizer (tests/test_localizer.py trains its own where it matters).
        "localizer.input_size=64",
        "localizer.decoder_channels=32",
        "localizer.epochs=1",
        "localizer.steps_per_epoch=4",
        "localizer.batch_size=8",
        "localizer.val_scenes=8",
        # A tiny super-resolver (tests/test_super_resolution.py measures one).
        "super_resolution.features=8",
        "super_resolution.hidden=8",
        "super_resolution.epochs=1",
        "super_resolution.batch_size=16",
        "super_resolution.test_photos=32",
        # Larger than the model's input, as in production (80 vs 64): training crops and
        # resizes from the cache, and search must preprocess uploads the same way.
        "preprocess.cache_size=40",
        "preprocess.near_duplicate_distance=0",
        "backbone.name=test_efficientnet",
        "backbone.pretrained=false",
        "freeze=full",  # a random-weight test backbone: no ImageNet stages to keep
        "model.embedding_dim=16",
        "trainer.enable_progress_bar=false",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
        "tracking.sample_batches=1",
        *extra,
    ]


@pytest.fixture(scope="session")
def overrides() -> Overrides:
    """``overrides(workspace, *extra)``: Hydra overrides pointing every path into ``workspace``."""
    return _overrides


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A preprocessed tiny catalog: 4 categories x 16 products, 40 px photos (one per module),
    the background pool and a 24-photo shopper-photo benchmark of its test products."""
    tmp = tmp_path_factory.mktemp("workspace")
    rng = np.random.default_rng(0)
    for ci, category in enumerate(COLOURS):
        (tmp / "images" / category).mkdir(parents=True)
        for i in range(16):
            _product_photo(ci, i, rng).save(tmp / "images" / category / f"{category}_{i:02d}.png")
    cfg = compose_config(_overrides(tmp))
    preprocess.run(cfg)
    backgrounds.run(cfg)
    shopper_photos.run(cfg)
    return tmp


@pytest.fixture(scope="module")
def trained(workspace) -> list[str]:
    """Overrides of a small model trained on ``workspace`` (artifacts/train/best.ckpt exists),
    with a loss that trains the category head too."""
    from shoplens.pipeline import train

    args = _overrides(
        workspace,
        "loss=ce_supcon",
        "trainer.max_epochs=1",
        "optimizer.lr=0.003",
        "augmentation=none",
        "callbacks.early_stopping=null",
        "tracking.log_checkpoint=false",
    )
    train.run(compose_config(args))
    return args
