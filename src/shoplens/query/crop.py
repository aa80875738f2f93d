"""Cut what the embedder sees out of a photo: the product's box with the catalog's framing
margin, the background (optionally) painted in the catalog's backdrop colour through the
localizer's mask, letterboxed like a catalog shot."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from shoplens.data.images import letterbox
from shoplens.query.localize import Detection, Letterbox

MIN_CROP_SIDE = 4  # a box thinner than this in photo pixels cannot be embedded usefully


def crop_product(
    image: Image.Image,
    size: int,
    detection: Detection | None = None,
    labels: np.ndarray | None = None,
    prob: np.ndarray | None = None,
    *,
    margin: float,
    mask_background: bool,
    backdrop: tuple[int, int, int],
    upscale: Callable[[Image.Image], Image.Image] | None = None,
) -> np.ndarray:
    """A ``size`` letterboxed uint8 square: the whole photo, or the detection's box plus
    ``margin`` (share of each side) with, when ``mask_background`` and a mask are given,
    everything outside this product's mask in ``backdrop``. ``labels``/``prob`` are the
    localizer's maps over ``image`` letterboxed to their side. ``upscale``: applied to the
    region before letterboxing (super-resolution of small crops, :mod:`shoplens.query.upscale`)."""
    if detection is None:
        return letterbox(upscale(image) if upscale else image, size)
    x0, y0, x1, y1 = detection.box
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    cx0, cy0 = max(0, int(x0 - mx)), max(0, int(y0 - my))
    cx1, cy1 = min(image.width, int(np.ceil(x1 + mx))), min(image.height, int(np.ceil(y1 + my)))
    region = image.crop((cx0, cy0, cx1, cy1))
    if mask_background and labels is not None and prob is not None:
        alpha = _alpha(region.size, (cx0, cy0, cx1, cy1), image.size, detection, labels, prob)
        pixels = np.asarray(region, dtype=np.float32) * alpha
        pixels += np.asarray(backdrop, dtype=np.float32) * (1 - alpha)
        region = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
    # letterbox pads with the region's border colour: the backdrop once it is masked.
    return letterbox(upscale(region) if upscale else region, size)


def _alpha(size, box, photo_size, detection, labels, prob) -> np.ndarray:
    """This component's probability (grown by a pixel so soft edges stay), resampled from
    the localizer's square onto the crop: ``(h, w, 1)`` in [0, 1]."""
    frame = Letterbox(photo_size[0], photo_size[1], prob.shape[0])
    mine = labels == detection.label
    padded = np.pad(mine, 1)
    grown = mine | padded[2:, 1:-1] | padded[:-2, 1:-1] | padded[1:-1, 2:] | padded[1:-1, :-2]
    alpha_sq = np.where(grown, prob, 0.0).astype(np.float32)
    ix0, iy0, _, _ = frame.inner
    s = frame.scale
    cx0, cy0, cx1, cy1 = box
    src = (ix0 + cx0 * s, iy0 + cy0 * s, ix0 + cx1 * s, iy0 + cy1 * s)
    alpha = Image.fromarray(alpha_sq, mode="F").resize(size, Image.Resampling.BILINEAR, box=src)
    return np.clip(np.asarray(alpha), 0.0, 1.0)[..., None]


def side(box, pick=max) -> int:
    return pick(box[2] - box[0], box[3] - box[1])


def shift(box, dx: int, dy: int) -> tuple[int, int, int, int]:
    return box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy


def overlap(a, b) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def context(box, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A square twice the box's longer side around its centre, inside the photo."""
    span = 2 * side(box, max)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0 = int(min(max(0, cx - span / 2), max(0, size[0] - span)))
    y0 = int(min(max(0, cy - span / 2), max(0, size[1] - span)))
    return x0, y0, min(size[0], x0 + span), min(size[1], y0 + span)
