"""Shopper-photo augmentation: shapes, reproducibility, and that each effect does what it claims.

The synthetic catalog shot is a white backdrop with a dark product in the middle, the case
the background-clutter step is built for; a noisy image stands in for a real-scene photo.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from shoplens.config.schema import AugmentationConfig
from shoplens.data.augment import (
    build_eval_transform,
    build_train_transform,
    denormalize,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CONF = Path(__file__).resolve().parents[1] / "conf" / "augmentation"
# Every effect off: tests switch on one at a time.
NOTHING = dict(enabled=True, scale=(1.0, 1.0), rotation=0.0, hflip=False, color_jitter=0.0, tint=0.0,
               background_clutter_p=0.0, blur_p=0.0, jpeg_p=0.0)  # fmt: skip


def catalog_shot(size: int = 96) -> np.ndarray:
    """White backdrop, dark product square in the middle (a third of the side), soft shading."""
    img = np.full((size, size, 3), 250, np.uint8)
    lo, hi = size // 3, 2 * size // 3
    shade = np.linspace(20, 90, hi - lo, dtype=np.uint8)
    img[lo:hi, lo:hi] = shade[:, None, None]
    return img


def to_uint8(t: torch.Tensor) -> np.ndarray:
    return denormalize(t, MEAN, STD).permute(1, 2, 0).numpy().astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2))


def only(**on) -> AugmentationConfig:
    return AugmentationConfig(**{**NOTHING, **on})


def load(name: str):
    """An augmentation option as the config composes it (its defaults list included)."""
    from shoplens.config import compose_config

    return compose_config([f"augmentation={Path(name).stem}"]).augmentation


@pytest.mark.parametrize("size", [64, 96])
def test_shapes_dtype_and_normalisation_range(size):
    image = catalog_shot(112)
    lo = torch.tensor([-m / s for m, s in zip(MEAN, STD, strict=True)])[:, None, None] - 1e-5
    hi = torch.tensor([(1 - m) / s for m, s in zip(MEAN, STD, strict=True)])[:, None, None] + 1e-5
    torch.manual_seed(0)
    for transform in (build_train_transform(load("shopper_photo.yaml"), size, MEAN, STD),
                      build_eval_transform(size, MEAN, STD)):  # fmt: skip
        for _ in range(5):
            out = transform(image)
            assert out.shape == (3, size, size) and out.dtype == torch.float32
            assert torch.all(out >= lo) and torch.all(out <= hi)
    # Eval at the cache size is exact: denormalize inverts it.
    same = build_eval_transform(112, MEAN, STD)(image)
    assert np.array_equal(to_uint8(same), image)


def test_disabled_equals_eval_transform():
    image = catalog_shot(112)
    evaluate = build_eval_transform(96, MEAN, STD)
    for cfg in (load("none.yaml"), AugmentationConfig(enabled=False)):
        assert torch.equal(build_train_transform(cfg, 96, MEAN, STD)(image), evaluate(image))


def test_train_transform_random_but_seeded():
    train = build_train_transform(load("shopper_photo.yaml"), 96, MEAN, STD)
    image = catalog_shot(112)
    torch.manual_seed(7)
    first = [train(image) for _ in range(3)]
    torch.manual_seed(7)
    again = [train(image) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])
    restored = pickle.loads(pickle.dumps(train))  # DataLoader workers get a pickled copy
    torch.manual_seed(7)
    assert torch.equal(restored(image), first[0])
    threads = torch.get_num_threads()  # the call runs single-threaded, then restores it
    torch.set_num_threads(2)
    try:
        train(image)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_clutter_replaces_backdrop_and_keeps_product(tmp_path):
    image = catalog_shot(96)
    cache = np.lib.format.open_memmap(tmp_path / "c.npy", "w+", np.uint8, (1, 96, 96, 3))
    cache[0] = image
    cache.flush()
    cache = np.load(tmp_path / "c.npy", mmap_mode="r")
    clutter = build_train_transform(only(background_clutter_p=1.0), 96, MEAN, STD)
    torch.manual_seed(0)
    with warnings.catch_warnings():  # a read-only memmap row must not warn (we copy it)
        warnings.simplefilter("error")
        outs = [to_uint8(clutter(cache[0])) for _ in range(4)]
    backdrop = np.ones((96, 96), bool)
    backdrop[28:68, 28:68] = False  # product is 32..64, plus a margin for the blended edge
    for out in outs:
        diff = np.abs(out - image).mean(axis=2)
        assert diff[backdrop].mean() > 25  # the white backdrop is gone...
        assert out[backdrop].std() > 5  # ...replaced by texture, not a flat colour
        assert diff[34:62, 34:62].max() <= 1  # the product is untouched
    assert not np.array_equal(outs[0], outs[1])


def test_clutter_keeps_enclosed_interior_and_skips_real_scenes():
    frame = np.full((96, 96, 3), 250, np.uint8)
    frame[24:72, 24:72] = 30
    frame[34:62, 34:62] = 250  # white inside a dark outline: part of the product
    clutter = build_train_transform(only(background_clutter_p=1.0), 96, MEAN, STD)
    torch.manual_seed(1)
    out = to_uint8(clutter(frame))
    assert np.abs(out[36:60, 36:60] - 250).max() <= 1
    assert np.abs(out[:16] - 250).mean() > 25
    # A non-uniform border (a real photo) has no backdrop to replace.
    scene = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    assert torch.equal(clutter(scene), build_eval_transform(96, MEAN, STD)(scene))


def test_jpeg_adds_artefacts_but_stays_close():
    yy, xx = np.mgrid[0:96, 0:96]
    image = np.stack([yy * 2, xx * 2, (yy + xx)], axis=2).astype(np.uint8)
    image[30:60, 40:70] = (200, 30, 40)
    scores = []
    for quality in (30, 90):
        cfg = only(jpeg_p=1.0, jpeg_quality=(quality, quality))
        out = to_uint8(build_train_transform(cfg, 96, MEAN, STD)(image))
        assert not np.array_equal(out, image)
        scores.append(psnr(out, image))
    assert 25 < scores[0] < scores[1] < 45  # lower quality, stronger artefacts
