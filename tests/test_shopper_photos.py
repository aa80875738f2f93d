"""The photo benchmark and what it is made of: product cut-outs, the background pool split by
photograph, and shopper photos that training can never have seen."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from helpers import near_copy, pattern, save
from PIL import Image, ImageDraw

from shoplens.config import compose_config
from shoplens.data.backgrounds import EVAL, POOL_FILE, TRAIN, PoolSettings, build_pool, read_pool
from shoplens.data.catalog import read_manifest
from shoplens.data.cutout import CutoutSettings, product_mask
from shoplens.evaluation.out_of_catalog import (
    KINDS,
    make_out_of_catalog,
    read_out_of_catalog,
    read_out_of_catalog_photo,
)
from shoplens.evaluation.shopper_photos import (
    BUCKETS,
    DISTRACTOR,
    PRODUCT,
    BenchmarkSettings,
    make_benchmark,
    read_benchmark,
    read_mask,
    read_photo,
)


def shot(backdrop, product, size=40, logo=None) -> np.ndarray:
    """A studio shot: a T-shaped product on a plain backdrop, optionally with a backdrop-
    coloured logo enclosed in it."""
    image = Image.new("RGB", (size, size), backdrop)
    draw = ImageDraw.Draw(image)
    draw.rectangle((8, 8, 31, 14), fill=product)
    draw.rectangle((16, 8, 23, 33), fill=product)
    if logo:
        draw.rectangle((18, 18, 21, 24), fill=logo)
    return np.asarray(image)


def truth(size=40) -> np.ndarray:
    t = np.zeros((size, size), bool)
    t[8:15, 8:32] = True
    t[8:34, 16:24] = True
    return t


@pytest.mark.parametrize("backdrop", [(0, 0, 0), (250, 250, 250), (200, 205, 210)])
def test_cutout_finds_the_product_on_any_plain_backdrop(backdrop):
    mask, reason = product_mask(shot(backdrop, (120, 60, 30)), CutoutSettings())
    assert reason == ""
    assert ((mask > 0) == truth()).mean() == 1.0


def test_cutout_keeps_backdrop_coloured_detail_enclosed_by_the_product():
    mask, _ = product_mask(
        shot((250, 250, 250), (20, 20, 90), logo=(250, 250, 250)), CutoutSettings()
    )
    assert mask[20, 19] == 255 and ((mask > 0) == truth()).all()


def test_cutout_refuses_what_it_cannot_cut_cleanly():
    noisy = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert product_mask(noisy, CutoutSettings())[1].startswith("backdrop not uniform")
    white_on_white = shot((250, 250, 250), (245, 245, 245))
    assert "cannot tell it from the backdrop" in product_mask(white_on_white, CutoutSettings())[1]
    filled = np.full((200, 200, 3), 30, np.uint8)  # a 1-px backdrop ring: cropped too tight
    filled[0], filled[-1], filled[:, 0], filled[:, -1] = 0, 0, 0, 0
    assert "no backdrop to remove" in product_mask(filled, CutoutSettings())[1]


def test_pool_is_split_by_photograph_and_copies_stay_together(tmp_path):
    src = tmp_path / "photos"
    originals = [save(pattern(i, (200, 150)), src / f"p{i}.png") for i in range(10)]
    save(near_copy(Image.open(originals[3])).resize((200, 150)), src / "p3_reupload.jpg")
    save(pattern(99, (40, 30)), src / "tiny.png")  # below min_side: refused, not split
    photos = {p.stem: p for p in src.iterdir()}
    table, refused = build_pool(photos, tmp_path / "pool", PoolSettings(eval_fraction=0.3), seed=1)
    assert list(refused["name"]) == ["tiny"]
    split = dict(zip(table["name"], table["split"], strict=True))
    assert split["p3"] == split["p3_reupload"]
    assert sorted(set(split.values())) == [EVAL, TRAIN]
    assert list(pd.read_csv(tmp_path / "pool" / POOL_FILE)["split"]) == list(table["split"])
    again, _ = build_pool(photos, tmp_path / "again", PoolSettings(eval_fraction=0.3), seed=1)
    assert list(again["split"]) == list(table["split"])  # seeded
    train, held = read_pool(tmp_path / "pool", TRAIN), read_pool(tmp_path / "pool", EVAL)
    assert set(train) | set(held) == set(table["name"]) and not set(train) & set(held)


def test_training_only_photographs_join_train_without_moving_the_split(tmp_path):
    src, extra = tmp_path / "photos", tmp_path / "extra"
    photos = {f"p{i}": save(pattern(i, (200, 150)), src / f"p{i}.png") for i in range(10)}
    settings = PoolSettings(eval_fraction=0.3)
    alone, _ = build_pool(photos, tmp_path / "alone", settings, seed=1)
    held = alone.loc[alone["split"] == EVAL, "name"].iloc[0]
    extras = {f"x{i}": save(pattern(50 + i, (180, 160)), extra / f"x{i}.png") for i in range(4)}
    extras["x_copy"] = save(near_copy(Image.open(photos[held])), extra / "x_copy.jpg")
    table, refused = build_pool(photos, tmp_path / "pool", settings, seed=1, train_only=extras)
    pool = table[~table["train_only"]]
    assert list(pool["name"]) == list(alone["name"])
    assert list(pool["split"]) == list(alone["split"])  # the evaluation side did not move
    added = table[table["train_only"]]
    assert sorted(added["name"]) == ["x0", "x1", "x2", "x3"] and set(added["split"]) == {TRAIN}
    assert refused.set_index("name").loc["x_copy", "reason"] == (
        f"looks like evaluation photograph {held!r}"
    )
    assert set(read_pool(tmp_path / "pool", TRAIN)) >= {"x0", "x1", "x2", "x3"}
    assert "x_copy" not in read_pool(tmp_path / "pool", TRAIN) | read_pool(tmp_path / "pool", EVAL)


@pytest.fixture(scope="module")
def benchmark(workspace, overrides):
    cfg = compose_config(overrides(workspace))
    return cfg, read_benchmark(cfg.paths.shopper_photos_dir)


def test_benchmark_photographs_only_test_products_on_eval_backgrounds(benchmark):
    cfg, table = benchmark
    manifest = read_manifest(cfg.paths.catalog_dir)
    test_ids = set(manifest.loc[manifest["split"] == "test", "product_id"].astype(str))
    assert set(table["product_id"]) <= test_ids
    pool = pd.read_csv(f"{cfg.paths.backgrounds_dir}/{POOL_FILE}")
    held_out = set(pool.loc[pool["split"] == EVAL, "name"])
    assert held_out and set(table["background"]) <= held_out


def test_every_photo_is_a_jpeg_upload_with_its_product_where_the_truth_says(benchmark):
    cfg, table = benchmark
    assert len(table) == cfg.evaluate.photos.photos
    assert set(table["bucket"]) <= {b.name for b in BUCKETS}
    for row in table.itertuples():
        data = read_photo(cfg.paths.shopper_photos_dir, row.photo)
        with Image.open(io.BytesIO(data)) as photo:
            assert photo.format == "JPEG" and photo.size == (row.width, row.height)
        mask = read_mask(cfg.paths.shopper_photos_dir, row.photo)
        ys, xs = np.nonzero(mask == PRODUCT)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (row.x0, row.y0, row.x1, row.y1)
        if pd.notna(row.distractor_category):
            assert row.distractor_category != row.category and (mask == DISTRACTOR).any()
        small = row.bucket == "small_photo"
        side = cfg.evaluate.photos.small_side if small else cfg.evaluate.photos.frame_side
        assert side[0] <= max(row.width, row.height) <= side[1]


def test_benchmark_is_reproducible(workspace, tmp_path):
    manifest = read_manifest(workspace / "catalog")
    products = manifest[manifest["split"] == "test"]
    images = np.load(workspace / "catalog" / "images.npy")
    masks = np.load(workspace / "catalog" / "masks.npy")
    scenes = {"a": np.asarray(pattern(5, (160, 120))), "b": np.asarray(pattern(6, (120, 160)))}
    settings = BenchmarkSettings(photos=6, frame_side=(80, 120), small_side=(48, 64))
    first = make_benchmark(products, images, masks, scenes, tmp_path / "1", settings)
    second = make_benchmark(products, images, masks, scenes, tmp_path / "2", settings)
    pd.testing.assert_frame_equal(first, second)
    for name in first["photo"]:
        assert read_photo(tmp_path / "1", name) == read_photo(tmp_path / "2", name)


def test_out_of_catalog_photos_show_no_product_on_evaluation_backgrounds_only(benchmark):
    cfg, _ = benchmark
    table = read_out_of_catalog(cfg.paths.shopper_photos_dir)
    assert len(table) == cfg.evaluate.photos.out_of_catalog
    assert set(table["kind"]) == set(KINDS)
    pool = pd.read_csv(f"{cfg.paths.backgrounds_dir}/{POOL_FILE}")
    assert set(table["background"]) <= set(pool.loc[pool["split"] == EVAL, "name"])
    for row in table.itertuples():
        data = read_out_of_catalog_photo(cfg.paths.shopper_photos_dir, row.photo)
        with Image.open(io.BytesIO(data)) as photo:
            assert photo.format == "JPEG" and photo.size == (row.width, row.height)


def test_out_of_catalog_photos_are_reproducible_and_differ_by_kind(tmp_path):
    scenes = {"a": np.asarray(pattern(5, (160, 120)))}
    settings = BenchmarkSettings(frame_side=(80, 120), small_side=(48, 64))
    first = make_out_of_catalog(scenes, tmp_path / "1", settings, photos=6)
    second = make_out_of_catalog(scenes, tmp_path / "2", settings, photos=6)
    pd.testing.assert_frame_equal(first, second)
    photos = [read_out_of_catalog_photo(tmp_path / "1", n) for n in first["photo"]]
    assert photos == [read_out_of_catalog_photo(tmp_path / "2", n) for n in first["photo"]]
    assert len(set(photos)) == len(photos)


def _small_photo_inputs():
    """Four 28-px 'catalog images' in an 80-px cache (a filled square product), one scene."""
    images = np.full((4, 80, 80, 3), 255, np.uint8)
    masks = np.zeros((4, 80, 80), np.uint8)
    for i in range(4):
        images[i, 10:70, 10:70] = (40 * i, 200 - 40 * i, 90)
        masks[i, 10:70, 10:70] = 255
    products = pd.DataFrame({"product_id": [f"p{i}" for i in range(4)],
                             "category": ["bag", "bag", "shoe", "shoe"], "cache_index": range(4)})  # fmt: skip
    scene = np.random.default_rng(0).integers(0, 255, (300, 400, 3)).astype(np.uint8)
    return products, images, masks, np.full(4, 28), {"street": scene}


def test_small_photos_draw_the_product_at_the_asked_fraction_of_its_catalog_resolution(tmp_path):
    from shoplens.evaluation.small_photos import SmallPhotoSettings, make_small_photos

    settings = SmallPhotoSettings(photos=12, resolution=(0.4, 0.7), rotation=0.0)
    table = make_small_photos(*_small_photo_inputs(), tmp_path, settings)
    # The product fills 60 of the cache's 80 px: 21 px of its 28-px catalog image.
    assert set(table["catalog_side"]) == {21.0}
    assert table["resolution"].between(0.3, 0.8).all()
    assert table["product_side"].between(7, 16).all()
    assert list(table["kind"][:2]) == ["thumbnail", "zoomed_out"]
    thumbs, wide = table[table["kind"] == "thumbnail"], table[table["kind"] == "zoomed_out"]
    assert (thumbs[["width", "height"]].max(axis=1) <= 64).all()
    assert (wide[["width", "height"]].max(axis=1) >= 192).all()
    for record in table.itertuples():  # a JPEG upload of the frame's size
        photo = Image.open(tmp_path / "photos" / f"{record.photo}.jpg")
        assert photo.format == "JPEG" and photo.size == (record.width, record.height)
        # and the product's true mask, whose bounds are the recorded box (the ceiling's crop)
        mask = np.asarray(Image.open(tmp_path / "masks" / f"{record.photo}.png"))
        assert mask.shape == (record.height, record.width) and set(np.unique(mask)) == {0, 1}
        ys, xs = np.nonzero(mask)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert box == (record.x0, record.y0, record.x1, record.y1)
    again = make_small_photos(*_small_photo_inputs(), tmp_path / "again", settings)
    pd.testing.assert_frame_equal(table, again)
    with pytest.raises(ValueError, match="resolution"):
        SmallPhotoSettings(resolution=(0.5, 1.5))
