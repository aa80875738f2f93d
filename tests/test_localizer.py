"""The localizer and the query pipeline around it: a localizer trained here on copy-paste scenes
finds a product of known box, the pipeline crops to it, an empty photo falls back to the whole
frame with a note, and hostile photos are a clear error or a flagged fallback."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from shoplens.config import compose_config
from shoplens.data.backgrounds import EVAL, POOL_FILE, TRAIN
from shoplens.data.catalog import read_manifest
from shoplens.data.images import ImageTooLarge, InvalidImageError
from shoplens.pipeline import train_localizer
from shoplens.pipeline.query_setup import load_localizer, localizer_spec, query_spec
from shoplens.query import EmbedderSpec, LocalizerSpec, QueryPipeline, QuerySpec
from shoplens.query.pipeline import WHOLE_FRAME
from shoplens.training import localizer_setup
from shoplens.training.scenes import SceneDataModule

LOCALIZER = (
    "localizer.input_size=64",
    "localizer.decoder_channels=32",
    "localizer.epochs=3",
    "localizer.steps_per_epoch=40",
    "localizer.batch_size=16",
    "localizer.val_scenes=32",
    "localizer.optimizer.lr=0.01",
    "localizer.frozen_stages=0",  # a random-weight test backbone: nothing learnt to keep
    "callbacks.early_stopping=null",
    # The mechanism, not robustness: plain scenes train a tiny localizer in seconds.
    "localizer.scenes.decoys=[1.0]",
    "localizer.scenes.background_jitter=0.0",
    "localizer.scenes.scale=[0.15,0.95]",  # a 64-px input has no room for 5% products
    "localizer.scenes.scale_draw=uniform",
)


def jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def localized(workspace, overrides):
    cfg = compose_config(overrides(workspace, *LOCALIZER))
    result = train_localizer.run(cfg)
    return cfg, result, load_localizer(cfg.localizer.checkpoint)


def _spec(cfg, localizer) -> QuerySpec:
    embedder = EmbedderSpec(32, (0.5,) * 3, (0.5,) * 3, letterbox_size=40, embedding_dim=4)
    return query_spec(cfg, embedder, localizer_spec(localizer, cfg))


def _embed(x: torch.Tensor):
    return (torch.nn.functional.normalize(x.mean(dim=(2, 3)).repeat(1, 2)[:, :4], dim=1),)


def _composite(workspace, side=96) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A test-split product pasted at a known place on a smooth background."""
    manifest = read_manifest(workspace / "catalog")
    row = manifest[manifest["split"] == "test"].iloc[0]
    image = np.load(workspace / "catalog" / "images.npy")[row["cache_index"]]
    mask = np.load(workspace / "catalog" / "masks.npy")[row["cache_index"]] > 0
    ys, xs = np.nonzero(mask)
    product, alpha = (
        image[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1],
        mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1],
    )
    yy, xx = np.mgrid[0:side, 0:side]
    scene = np.stack([60 + xx, 90 + yy // 2, 140 - yy // 3], axis=2).clip(0, 255).astype(np.uint8)
    y0, x0 = 30, 20
    h, w = alpha.shape
    scene[y0 : y0 + h, x0 : x0 + w][alpha] = product[alpha]
    return scene, (x0, y0, x0 + w, y0 + h)


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


def test_training_scenes_never_read_an_evaluation_background(workspace, overrides):
    """Every photograph behind a training or validation scene is a recorded train photograph."""
    import pandas as pd

    cfg = compose_config(overrides(workspace, *LOCALIZER))
    pool = pd.read_csv(workspace / "backgrounds" / POOL_FILE)
    module = SceneDataModule(
        cfg.paths.catalog_dir, cfg.paths.backgrounds_dir, 64,
        localizer_setup.scene_settings(cfg), (0.5,) * 3, (0.5,) * 3, 4, 2, 4,
    )  # fmt: skip
    for scenes in (module.train_set, module.val_set):
        names = set(scenes.backgrounds.names)
        assert names == set(pool.loc[pool["split"] == TRAIN, "name"])
        assert not names & set(pool.loc[pool["split"] == EVAL, "name"])


def test_thin_repeat_scenes_weigh_train_products_by_their_own_masks(workspace, overrides):
    """With ``scenes.thin_repeat`` the training scenes draw each pasteable train product by
    the weight its cut-out mask gives it, and still compose scenes."""
    import dataclasses

    from shoplens.data.copy_paste import thin_repeat_weights

    cfg = compose_config(overrides(workspace, *LOCALIZER))
    settings = dataclasses.replace(localizer_setup.scene_settings(cfg), thin_repeat=0.5)
    module = SceneDataModule(
        cfg.paths.catalog_dir, cfg.paths.backgrounds_dir, 64, settings, (0.5,) * 3, (0.5,) * 3,
        4, 2, 4,
    )  # fmt: skip
    scenes = module.train_set
    masks = np.load(workspace / "catalog" / "masks.npy")[scenes.rows]
    assert np.allclose(scenes.weights.numpy(), thin_repeat_weights(masks, 0.5))
    image, mask = scenes[0]
    assert image.shape == (3, 64, 64) and mask.shape == (1, 64, 64)


def test_a_trained_localizer_finds_the_product_and_the_pipeline_crops_to_it(workspace, localized):
    cfg, result, localizer = localized
    assert result["val_mask_iou"] is not None and result["global_step"] == 3 * 40
    pipeline = QueryPipeline(_spec(cfg, localizer), _embed, localizer)
    scene, truth = _composite(workspace)
    found = pipeline.query(jpeg(scene))
    assert found.localized and found.note == "", found.note
    box = found.detections[found.searched[0]].box
    assert _iou(box, truth) >= 0.5, (box, truth)
    # What was embedded is the pipeline's crop of that box, not the whole photo.
    image = pipeline.validate(jpeg(scene))
    whole = pipeline.crop(image)
    assert not np.array_equal(found.crops[0], whole)


def test_an_empty_photo_is_searched_whole_and_says_so(localized):
    cfg, _, localizer = localized
    pipeline = QueryPipeline(
        _spec(cfg, localizer), _embed, lambda x: torch.full_like(x[:, :1], -9.0)
    )
    empty = np.full((80, 120, 3), 200, np.uint8)
    result = pipeline.query(jpeg(empty))
    assert result.searched == [WHOLE_FRAME] and not result.localized
    assert result.note == "no product found" and result.embeddings.shape == (1, 4)
    off = QueryPipeline(_spec(cfg, localizer).with_options(localize=False), _embed, localizer)
    assert off.query(jpeg(empty)).note == "localization is off"


def _blob(logits_inside: float, side: int, box: tuple[int, int, int, int]):
    """A localizer stub: product where ``box`` is (in its input square), background elsewhere."""

    def localize(x: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(x[:, :1], -9.0)
        scale = x.shape[-1] / side
        x0, y0, x1, y1 = (round(v * scale) for v in box)
        out[..., y0:y1, x0:x1] = logits_inside
        return out

    return localize


def test_a_product_filling_the_photo_is_also_embedded_whole(localized):
    """A catalog-like shot (the box spans >= whole_frame_above of the side) gets the whole
    photo's embedding too; a small product, or the switch at 0, does not."""
    cfg, _, localizer = localized
    spec = _spec(cfg, localizer).with_options(whole_frame_above=0.8)
    photo = np.full((96, 96, 3), 30, np.uint8)
    photo[4:92, 6:90] = (200, 120, 40)
    filling = QueryPipeline(spec, _embed, _blob(9.0, 96, (6, 4, 90, 92))).query(jpeg(photo))
    assert filling.localized and filling.whole_embedding is not None
    whole = QueryPipeline(spec.with_options(localize=False), _embed, localizer).query(jpeg(photo))
    np.testing.assert_allclose(filling.whole_embedding, whole.embeddings[0], atol=1e-6)
    small = QueryPipeline(spec, _embed, _blob(9.0, 96, (30, 30, 60, 60))).query(jpeg(photo))
    assert small.localized and small.whole_embedding is None
    never = spec.with_options(whole_frame_above=0.0)
    assert (
        QueryPipeline(never, _embed, _blob(9.0, 96, (6, 4, 90, 92)))
        .query(jpeg(photo))
        .whole_embedding
        is None
    )


def test_hostile_photos_are_an_error_or_a_flagged_fallback(localized):
    cfg, _, localizer = localized
    spec = _spec(cfg, localizer).with_options(
        limits={"min_size": 16, "max_pixels": 1_000_000, "max_file_bytes": 5_000_000}
    )

    # A localizer that calls one thin column "product": a 1-px-wide box cannot be embedded.
    def thin(x):
        out = torch.full_like(x[:, :1], -9.0)
        out[..., 30] = 9.0
        return out

    pipeline = QueryPipeline(spec, _embed, thin)
    white = pipeline.query(jpeg(np.full((100, 100, 3), 255, np.uint8)))
    assert not white.localized and "too small" in white.note
    with pytest.raises(ImageTooLarge):
        pipeline.query(jpeg(np.zeros((1200, 1000, 3), np.uint8)))
    with pytest.raises(InvalidImageError, match="too small"):
        pipeline.query(jpeg(np.zeros((1, 400, 3), np.uint8)))
    real = QueryPipeline(spec, _embed, localizer)
    wide = real.query(jpeg(np.full((20, 900, 3), 128, np.uint8)))  # extreme aspect ratio
    assert wide.embeddings.shape == (1, 4) and np.isfinite(wide.embeddings).all()


def test_scene_scales_drawn_log_uniformly_put_as_many_small_products_as_large():
    """Shoppers' products span 5-95% of a photo's side; a detector's scales are ratios, so the
    default draws each octave as often (a distractor at 6% as often as a product at 60%)."""
    from shoplens.data.copy_paste import SceneSettings

    g = torch.Generator().manual_seed(0)
    log = SceneSettings(scale=(0.05, 0.8), scale_draw="log")  # four octaves
    draws = np.array([log.draw_scale(g) for _ in range(4000)])
    assert draws.min() >= 0.05 and draws.max() <= 0.8
    assert abs(np.mean(draws < 0.1) - 0.25) < 0.03 and abs(np.mean(draws >= 0.4) - 0.25) < 0.03
    even = SceneSettings(scale=(0.05, 0.8), scale_draw="uniform")
    assert np.mean([even.draw_scale(g) < 0.1 for _ in range(4000)]) < 0.1  # 0.067 expected
    with pytest.raises(ValueError, match="scale_draw"):
        SceneSettings(scale_draw="logarithmic")
    with pytest.raises(ValueError, match="scale"):
        SceneSettings(scale=(0.0, 0.5))


def test_thin_products_are_drawn_more_often_by_their_fill():
    """``scenes.thin_repeat``: a strap (a tenth of its bounding square) is drawn up to
    threshold / fill times as often as a solid block; 0 keeps every product equally likely."""
    from shoplens.data.copy_paste import SceneSettings, thin_repeat_weights

    masks = np.zeros((3, 20, 20), np.uint8)
    masks[0, 2:18, 2:18] = 255  # a solid square: fill 1
    masks[1, 9:11, 0:20] = 255  # a strap, 2 x 20: fill 0.1
    # masks[2] is empty (nothing cut out): weight 1, never a division by zero
    weights = thin_repeat_weights(masks, 0.5)
    assert weights[0] == 1.0 and weights[2] == 1.0
    assert weights[1] == pytest.approx(5.0)
    assert (thin_repeat_weights(masks, 0.0) == 1.0).all()
    with pytest.raises(ValueError, match="thin_repeat"):
        SceneSettings(thin_repeat=-1.0)


@pytest.mark.parametrize("first", [True, False])
def test_a_thumbnail_scene_is_compressed_at_its_own_size_then_blown_up(monkeypatch, first):
    """``scenes.low_res_first``: a shopper's thumbnail is a small JPEG that the query pipeline
    letterboxes up, so its JPEG blocks are the thumbnail's; false keeps the old order (blown
    up, then compressed at the scene's size)."""
    from shoplens.data import copy_paste

    compressed = []

    def recording_jpeg(u8, quality):
        compressed.append(tuple(u8.shape))
        return u8

    monkeypatch.setattr(copy_paste, "jpeg", recording_jpeg)
    settings = copy_paste.SceneSettings(
        low_res_p=1.0, low_res_factor=(0.25, 0.25), low_res_first=first,
        jpeg_p=1.0, blur_p=0.0, noise_p=0.0, light_p=0.0,
    )  # fmt: skip
    scene = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0))
    out = copy_paste.camera(scene, settings, torch.Generator().manual_seed(1))
    assert out.shape == scene.shape and out.min() >= 0 and out.max() <= 1
    assert compressed == [(3, 24, 32) if first else (3, 96, 128)]
    # Either way the detail above the thumbnail's resolution is gone from the blown-up scene.
    assert (out[:, :, 1:] - out[:, :, :-1]).abs().mean() < 0.5 * (
        scene[:, :, 1:] - scene[:, :, :-1]
    ).abs().mean()
    with pytest.raises(ValueError, match="low_res_factor"):
        copy_paste.SceneSettings(low_res_factor=(0.0, 0.5))


def test_localizer_spec_round_trips_through_json():
    spec = QuerySpec(
        EmbedderSpec(64, (0.5,) * 3, (0.5,) * 3, 80, 256, 10),
        LocalizerSpec(128, (0.5,) * 3, (0.5,) * 3, 0.4, 0.01),
        crop_margin=0.05,
        backdrop=(255, 255, 255),
        limits={"min_size": 16},
    )
    assert QuerySpec.from_dict(spec.to_dict()) == spec


def test_a_product_too_small_for_the_first_look_is_found_in_tiles():
    """A 14-px product in a 320-px photo is 7 px in the localizer's 160-px input: under
    min_area, nothing usable. In a tile (the photo magnified 1.5 times) it is large enough,
    and its box is where the product is; with tiles off the photo is searched whole."""

    def red(x: torch.Tensor) -> torch.Tensor:  # a localizer that calls red pixels product
        return torch.where((x[:, :1] > 0.5) & (x[:, 1:2] < -0.5), 9.0, -9.0)

    embedder = EmbedderSpec(32, (0.5,) * 3, (0.5,) * 3, letterbox_size=40, embedding_dim=4)
    localizer = LocalizerSpec(160, (0.5,) * 3, (0.5,) * 3, 0.5, 0.002, 0.0, tile_above=1.0)
    spec = QuerySpec(embedder, localizer, mask_background=False)
    photo = np.full((320, 320, 3), 120, np.uint8)
    photo[250:264, 40:54] = (230, 20, 20)
    found = QueryPipeline(spec, _embed, red).query(Image.fromarray(photo))
    assert found.localized and found.note == ""
    x0, y0, x1, y1 = found.detections[0].box
    assert abs(x0 - 40) <= 2 and abs(y0 - 250) <= 2 and abs(x1 - 54) <= 2 and abs(y1 - 264) <= 2
    off = QuerySpec(embedder, replace(localizer, tile_above=0.0), mask_background=False)
    missed = QueryPipeline(off, _embed, red).query(Image.fromarray(photo))
    assert not missed.localized and missed.note
    small = Image.fromarray(photo).resize((150, 150))  # not larger than the input: no tiles
    assert not QueryPipeline(spec, _embed, red).query(small).localized


def test_the_mirror_image_finds_what_a_one_sided_look_misses():
    """A localizer that sees products only in the left half of its input (a network that
    half-sees a product in one orientation) misses one on the right. With ``average_mirror``
    the mirror image shows it on the left: the maps averaged, it is found where it is, and the
    photo and its mirror went through the network as one batch."""
    batches = []

    def left_only(x: torch.Tensor) -> torch.Tensor:  # red pixels, left half only
        batches.append(x.shape[0])
        out = torch.where((x[:, :1] > 0.5) & (x[:, 1:2] < -0.5), 9.0, -9.0)
        out[..., x.shape[-1] // 2 :] = -9.0
        return out

    embedder = EmbedderSpec(32, (0.5,) * 3, (0.5,) * 3, letterbox_size=40, embedding_dim=4)
    localizer = LocalizerSpec(64, (0.5,) * 3, (0.5,) * 3, threshold=0.4, refine_below=0.0)
    photo = np.full((64, 64, 3), 120, np.uint8)
    photo[20:40, 40:56] = (230, 20, 20)
    one_sided = QuerySpec(embedder, localizer, mask_background=False)
    assert not QueryPipeline(one_sided, _embed, left_only).query(Image.fromarray(photo)).localized
    batches.clear()
    both = QuerySpec(embedder, replace(localizer, average_mirror=True), mask_background=False)
    found = QueryPipeline(both, _embed, left_only).query(Image.fromarray(photo))
    assert batches == [2] and found.localized
    assert found.detections[0].box == (40, 20, 56, 40)
    # The average of what each orientation saw: the mirror's certainty, the photo's doubt.
    assert found.product_mask[30, 48] == pytest.approx(0.5, abs=1e-3)
    assert found.product_mask[30, 10] == pytest.approx(0.0, abs=1e-3)


def test_a_product_found_in_tiles_gets_the_closer_look_too():
    """The tiles magnify a zoomed-out photo 1.5 times, still coarse for a 14-px product; like
    a small product found at first, it is then localized again in a crop around it (the last
    look recorded, a region a few times its size), and its box stays on it."""

    def red(x: torch.Tensor) -> torch.Tensor:
        return torch.where((x[:, :1] > 0.5) & (x[:, 1:2] < -0.5), 9.0, -9.0)

    embedder = EmbedderSpec(32, (0.5,) * 3, (0.5,) * 3, letterbox_size=40, embedding_dim=4)
    loc = LocalizerSpec(160, (0.5,) * 3, (0.5,) * 3, 0.5, 0.002, 0.5, tile_above=1.0)
    photo = np.full((320, 320, 3), 120, np.uint8)
    photo[250:264, 40:54] = (230, 20, 20)

    def looks(spec: LocalizerSpec):
        found = QueryPipeline(QuerySpec(embedder, spec), _embed, red).query(Image.fromarray(photo))
        assert found.localized
        return found.closer_looks, found.detections[found.searched[0]].box

    tiled, _ = looks(replace(loc, refine_below=0.0))
    assert len(tiled) == 1  # the tile alone
    closer, box = looks(loc)
    assert len(closer) == 2
    x0, y0, x1, y1 = closer[-1][0]
    assert x0 <= 40 and y0 <= 250 and x1 >= 54 and y1 >= 264 and x1 - x0 < 107
    assert abs(box[0] - 40) <= 1 and abs(box[1] - 250) <= 1 and abs(box[2] - 54) <= 1


@pytest.mark.parametrize("width,height", [(320, 240), (4000, 3000), (161, 500), (200, 200)])
def test_tiles_cover_the_photo_magnified_and_their_number_is_bounded(width, height):
    """Every pixel of the photo is in a tile; neighbours overlap by a quarter tile, so a
    product that wide is whole in one; a tile is input / tile_zoom pixels (the photo
    magnified in the localizer's input) unless that would need more than four a side."""
    from shoplens.query.second_look import MAX_TILES_PER_SIDE, tile_boxes, tile_side

    loc = LocalizerSpec(160, (0.5,) * 3, (0.5,) * 3, tile_above=1.0, tile_zoom=1.5)
    tile = tile_side(loc, width, height)
    boxes = tile_boxes(width, height, tile)
    covered = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    for axis, length in ((0, width), (1, height)):
        starts = sorted({box[axis] for box in boxes})
        assert len(starts) <= MAX_TILES_PER_SIDE
        span = min(tile, length)
        assert all(b - a <= 0.75 * span + 1 for a, b in zip(starts, starts[1:], strict=False))
    if max(width, height) <= 320:
        assert tile == 107  # 160 / 1.5: the photo magnified 1.5 times
    else:
        assert tile > 107 and len(boxes) <= MAX_TILES_PER_SIDE**2
    with pytest.raises(ValueError, match="tile_zoom"):
        replace(loc, tile_zoom=0.0)


def test_tiles_replace_a_small_unsure_product_with_a_surer_one_they_find():
    """``tile_small_below``: a false positive the first look found (a bluish patch the
    localizer is unsure of) no longer hides a product too small for that look: in the tiles
    the product is found, more confident, and searched instead. A patch larger than that
    share of the photo keeps its place, and with the switch off tiles only follow a miss."""

    def red_sure_blue_unsure(x: torch.Tensor) -> torch.Tensor:
        red = (x[:, :1] > 0.5) & (x[:, 1:2] < -0.5)
        blue = (x[:, 2:3] > 0.5) & (x[:, :1] < -0.5)
        return torch.where(red, 9.0, torch.where(blue, 0.4, -9.0))  # p = 1.0 / 0.6 / 0.0

    embedder = EmbedderSpec(32, (0.5,) * 3, (0.5,) * 3, letterbox_size=40, embedding_dim=4)
    localizer = LocalizerSpec(
        160, (0.5,) * 3, (0.5,) * 3, 0.5, 0.002, 0.0, tile_above=1.0, tile_small_below=0.15
    )

    def searched(decoy_side: int, loc: LocalizerSpec) -> tuple[int, int, int, int]:
        photo = np.full((320, 320, 3), 120, np.uint8)
        photo[250:264, 40:54] = (230, 20, 20)  # 7 px in the first look: under min_area
        photo[40 : 40 + decoy_side, 200 : 200 + decoy_side] = (20, 20, 230)
        pipeline = QueryPipeline(QuerySpec(embedder, loc, mask_background=False), _embed,
                                 red_sure_blue_unsure)  # fmt: skip
        found = pipeline.query(Image.fromarray(photo))
        assert found.localized
        return found.detections[found.searched[0]].box

    x0, y0, x1, y1 = searched(30, localizer)  # 30 px: under 0.15 x 320
    assert abs(x0 - 40) <= 2 and abs(y0 - 250) <= 2 and abs(x1 - 54) <= 2 and abs(y1 - 264) <= 2
    assert searched(60, localizer)[:2] == (200, 40)  # a larger find is not second-guessed
    assert searched(30, replace(localizer, tile_small_below=0.0))[:2] == (200, 40)


def test_the_pipelines_mask_takes_the_closer_look_around_a_small_product():
    """A 40-px product in a 640-px photo is 10 px in the first look's 160-px square: its mask,
    resampled to the photo, has blurred blocky edges. The pipeline looks again in a crop
    around it (refine) and records that look; the photo-level mask evaluate scores is then
    the closer one, nearer the truth than the first look alone."""
    from shoplens.evaluation.photo_benchmark import photo_mask

    def red(x: torch.Tensor) -> torch.Tensor:
        return torch.where((x[:, :1] > 0.5) & (x[:, 1:2] < -0.5), 9.0, -9.0)

    embedder = EmbedderSpec(32, (0.5,) * 3, (0.5,) * 3, letterbox_size=40, embedding_dim=4)
    localizer = LocalizerSpec(160, (0.5,) * 3, (0.5,) * 3, 0.5, 0.0005, 0.5, tile_above=0.0)
    photo = np.full((640, 640, 3), 120, np.uint8)
    truth = np.zeros((640, 640), bool)
    truth[301:343, 203:241] = True  # off the 4-px grid of the first look
    photo[truth] = (230, 20, 20)
    found = QueryPipeline(QuerySpec(embedder, localizer), _embed, red).query(Image.fromarray(photo))
    assert found.localized and len(found.closer_looks) == 1
    region, _ = found.closer_looks[0]
    assert region[0] <= 203 and region[1] <= 301 and region[2] >= 241 and region[3] >= 343

    def iou(mask: np.ndarray) -> float:
        return (mask & truth).sum() / (mask | truth).sum()

    first, final = photo_mask(found, 160, closer_looks=False), photo_mask(found, 160)
    assert iou(final) > 0.95 > iou(first)


def test_frozen_encoder_stages_keep_their_weights_and_statistics(workspace, overrides):
    """``localizer.frozen_stages``: the stem and the next stages neither learn nor let their
    BatchNorm statistics drift in training; the stages above them and the decoder do."""
    from omegaconf import OmegaConf

    from shoplens.training.localizer_module import LocalizerModule

    cfg = compose_config(overrides(workspace, *LOCALIZER, "localizer.frozen_stages=2"))
    module = LocalizerModule(OmegaConf.to_container(cfg, resolve=True))
    stages = module.localizer.encoder_stages()
    assert len(stages) > 3 and stages[0].name.startswith("conv_stem")

    def snapshot(stage):
        return {k: v.clone() for k, v in stage.state_dict().items()}

    before = [snapshot(stage) for stage in stages]
    decoder = [p.clone() for p in module.localizer.network.decoder.parameters()]
    module.train()
    module.on_train_epoch_start()
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    images, masks = torch.randn(4, 3, 64, 64), (torch.rand(4, 1, 64, 64) > 0.5).float()
    for _ in range(2):
        logits = module(images)
        loss = module.dice(logits, masks) + module.bce(logits, masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = [snapshot(stage) for stage in stages]
    for i in (0, 1):  # weights and running statistics as they were
        assert all(torch.equal(before[i][k], after[i][k]) for k in before[i]), stages[i].name
    assert any(not torch.equal(before[2][k], after[2][k]) for k in before[2])
    trained = module.localizer.network.decoder.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(decoder, trained, strict=True))


def test_refine_every_sharpens_the_boxes_of_products_not_searched():
    """Two small products: by default only the searched (larger) one is looked at again;
    with ``refine_every`` the other's box comes from a closer look too, and is tighter."""

    def red(x: torch.Tensor) -> torch.Tensor:
        return torch.where((x[:, :1] > 0.5) & (x[:, 1:2] < -0.5), 9.0, -9.0)

    embedder = EmbedderSpec(32, (0.5,) * 3, (0.5,) * 3, letterbox_size=40, embedding_dim=4)
    localizer = LocalizerSpec(160, (0.5,) * 3, (0.5,) * 3, 0.5, 0.0005, 0.5)
    photo = np.full((640, 640, 3), 120, np.uint8)
    photo[301:353, 203:251] = (230, 20, 20)  # the main product, 52 px
    photo[101:131, 421:447] = (230, 20, 20)  # a smaller one, 30 px
    truth = (421, 101, 447, 131)
    for every, looks in ((False, 1), (True, 2)):
        spec = QuerySpec(embedder, replace(localizer, refine_every=every))
        found = QueryPipeline(spec, _embed, red).query(Image.fromarray(photo))
        assert found.searched == [0] and len(found.closer_looks) == looks
        other = found.detections[1].box
        assert (other == truth) is every, other  # the first look's box is off by its grid


def test_the_localizer_gate_never_compares_mask_ious_measured_differently(localized):
    """A champion registered before the pipeline's mask IoU (closer looks included) existed
    carries only the first look's: the gate then decides on box AP@0.5 alone, and says so."""
    import mlflow
    from mlflow import MlflowClient

    from shoplens.registry.localizer import AP_TAG, IOU_TAG, register_localizer

    cfg, result, localizer = localized
    mlflow.set_tracking_uri(cfg.tracking.uri)
    client, name, run = MlflowClient(), "localizer-gate-test", result["mlflow_run_id"]

    def register(sha: str, iou: float, ap: float):
        numbers = {"mask_iou": iou, "box_ap@0.5": ap}
        return register_localizer(client, name, localizer, sha, numbers, "d1", run, 0.005)

    old, _ = register("a" * 64, 0.50, 0.60)
    client.delete_model_version_tag(name, str(old), IOU_TAG)  # as a version from before
    client.set_model_version_tag(name, str(old), "photos.mask_iou", "0.40")
    _, decision = register("b" * 64, 0.90, 0.60)  # a far better IoU, the same box AP
    assert not decision.promote and "no comparable mask IoU" in decision.reason
    newer, decision = register("c" * 64, 0.45, 0.70)
    assert decision.promote, decision.reason
    tags = client.get_model_version(name, str(newer)).tags
    assert float(tags[IOU_TAG]) == 0.45 and float(tags[AP_TAG]) == 0.70


@pytest.mark.parametrize(
    "case", ["agrees", "agrees, mirrored", "cannot agree", "cannot be quantized"]
)
def test_the_int8_localizer_is_served_only_where_its_masks_agree(
    workspace, overrides, localized, tmp_path, monkeypatch, case
):
    """Calibrated on training scenes, checked on photos: a met agreement bar serves the
    one-photo INT8 graph; an impossible bar, or a graph that cannot be quantized, keeps the
    float graph (the same bytes as exported) and says so. With ``average_mirror`` the graph
    runs a photo and its mirror image as one batch of two."""
    from shoplens.models import build_embedder
    from shoplens.pipeline import int8_localizer
    from shoplens.pipeline.query_setup import embedder_forward, embedder_spec
    from shoplens.registry.onnx_export import export_pipeline
    from shoplens.tracking.runs import checkpoint_sha256

    _, _, localizer = localized
    min_iou = 1.01 if case == "cannot agree" else 0.0
    mirrored = f"localizer.average_mirror={str(case == 'agrees, mirrored').lower()}"
    cfg = compose_config(
        overrides(workspace, *LOCALIZER, f"query.int8_min_mask_iou={min_iou}", mirrored)
    )
    if case == "cannot be quantized":

        def refuse(*args, **kwargs):
            raise RuntimeError("no kernel for this operator")

        monkeypatch.setattr(int8_localizer, "quantize_int8", refuse)
    embedder = build_embedder(cfg.backbone, cfg.model, num_classes=3).eval()
    spec = query_spec(
        cfg, embedder_spec(embedder, 32, cfg.paths.catalog_dir), localizer_spec(localizer, cfg)
    )
    pipeline = QueryPipeline(spec, embedder_forward(embedder), localizer)
    exported, files = export_pipeline(pipeline, embedder, localizer, tmp_path)
    exported_sha = checkpoint_sha256(files["localizer_onnx"])
    photos = [jpeg(np.full((80, 60, 3), 200, np.uint8)), jpeg(_composite(workspace)[0])]
    record, served = int8_localizer.serve_int8_localizer(cfg, exported, files, photos)
    outcome = record["localizer_int8"]
    assert outcome["served"] is case.startswith("agrees")
    if case == "cannot be quantized":
        assert "no kernel for this operator" in outcome["reason"]
    else:
        assert 0.0 <= outcome["mask_iou"] <= 1.0
    assert served.localizer.one_photo is outcome["served"]
    if outcome["served"]:
        assert served.localizer.fixed_batch == (2 if "mirrored" in case else 1)
    # Served: the float graph kept beside it; refused: the float graph is the one served.
    float_file = tmp_path / int8_localizer.FLOAT_FILE
    kept = float_file if outcome["served"] else files["localizer_onnx"]
    assert checkpoint_sha256(kept) == exported_sha
    assert float_file.exists() is outcome["served"]
    assert len(served.product_masks([served.validate(p) for p in photos])) == 2
