"""Second looks at a photo, where the first localizer pass saw too little.

* :func:`refine`: a product much smaller than the photo is localized again in a crop twice
  its size around it, where it fills the localizer's input: sharper masks and boxes.
* :func:`look_in_tiles`: a photo where nothing usable was found is localized again in
  overlapping tiles. Why: the localizer sees the whole photo letterboxed to its input (160 px
  on the demo), so a 12-19 px product in a 320 px zoomed-out photo is 6-10 px there, under
  ``min_area`` or too faint for the threshold (the small-photo benchmark: found in about a
  third of such photos). Each tile is ``input_size / tile_zoom`` photo pixels wide, so
  letterboxing it to the input magnifies the photo ``tile_zoom`` times (at most
  :data:`MAX_TILES_PER_SIDE` tiles a side, so a large photo costs a bounded number of
  passes). Four tiles of 0.6 of the side magnified a 320-px photo's product only 0.8x;
  ``tile_zoom`` 1.5: zoomed-out small photos found 0.51 -> 0.73 of the time (README,
  "Shopper photos"); what a tile finds is then refined like a first find (the pipeline
  calls :func:`refine` again on the plans this changed). Only photos with nothing found pay
  for it, and (``tile_small_below``) photos whose one find is small: a small false positive
  used to block the look that finds the product (20-45% products on the shopper-photo
  benchmark: category@1 0.760 -> 0.780 with 0.15).

Both take the pipeline's plans (``_Plan``: which regions of each photo to embed) and update
them in place, with one batched localizer pass each.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from shoplens.query.crop import MIN_CROP_SIDE, context, overlap, shift, side
from shoplens.query.localize import Detection, Letterbox, detections_from_mask
from shoplens.query.spec import LocalizerSpec

Box = tuple[int, int, int, int]
# photos -> the localizer's product probability over each, letterboxed (QueryPipeline's)
ProductMasks = Callable[[Sequence[Image.Image]], list[np.ndarray]]


# At most this many tiles along each side of a photo (16 in all): a 4,000-px phone photo is
# looked at again in 16 passes, each still magnifying it 3x over the first look's letterbox.
MAX_TILES_PER_SIDE = 4
TILE_OVERLAP = 0.25  # of a tile's side: a product up to a quarter tile wide is whole in one


def tile_boxes(width: int, height: int, tile: int) -> list[Box]:
    """Boxes of ``tile`` pixels a side (clipped to the photo) covering it, neighbours
    overlapping by at least :data:`TILE_OVERLAP` of a tile, evenly spaced from edge to edge."""
    if tile < 1:
        raise ValueError(f"tile must be at least 1 pixel, got {tile}")

    def starts(length: int, span: int) -> list[int]:
        if length <= span:
            return [0]
        count = math.ceil((length - span) / ((1 - TILE_OVERLAP) * span)) + 1
        return [round(i * (length - span) / (count - 1)) for i in range(count)]

    tw, th = min(tile, width), min(tile, height)
    return [(x, y, x + tw, y + th) for y in starts(height, th) for x in starts(width, tw)]


def tile_side(loc: LocalizerSpec, width: int, height: int) -> int:
    """A tile's side in photo pixels: the photo magnified ``loc.tile_zoom`` times in the
    localizer's input, or larger where that would take more than MAX_TILES_PER_SIDE a side."""
    fewest = max(width, height) / (1 + (MAX_TILES_PER_SIDE - 1) * (1 - TILE_OVERLAP))
    return math.ceil(max(loc.input_size / loc.tile_zoom, fewest))


def _worth_tiles(loc: LocalizerSpec, image: Image.Image, plan) -> bool:
    """Nothing usable found, or (``loc.tile_small_below``) only one small product, perhaps
    a false positive standing in for a product the first pass could not see."""
    if max(image.size) < loc.tile_above * loc.input_size:
        return False
    if plan.missed:
        return True
    if not loc.tile_small_below or len(plan.searched) != 1 or plan.searched[0] < 0:
        return False
    main = plan.detections[plan.searched[0]]
    return side(main.box, max) < loc.tile_small_below * max(image.size)


def look_in_tiles(
    loc: LocalizerSpec | None, masks: ProductMasks, images: Sequence[Image.Image], plans: list
) -> list[int]:
    """Photos where the first pass found nothing usable (or only a small product, see
    :func:`_worth_tiles`), localized again in overlapping tiles (one batched pass,
    :func:`tile_boxes` of :func:`tile_side`): the most confident usable product of any tile is searched, where
    nothing was found or where it is more confident than the small product. Updates the
    plans in place and returns the positions of those it changed."""
    if loc is None or not loc.tile_above:
        return []
    todo = [
        (plan, image, box)
        for image, plan in zip(images, plans, strict=True)
        if _worth_tiles(loc, image, plan)
        for box in tile_boxes(*image.size, tile_side(loc, *image.size))
    ]
    if not todo:
        return []
    crops = [image.crop(box) for _, image, box in todo]
    best: dict[int, tuple] = {}  # id(plan) -> (plan, image, box, crop, detection, labels, prob)
    for (plan, image, box), crop, prob in zip(todo, crops, masks(crops),
                                              strict=True):  # fmt: skip
        frame = Letterbox(crop.width, crop.height, loc.input_size)
        found, labels = detections_from_mask(prob, frame, loc.threshold, loc.min_area)
        for d in found:
            held = best.get(id(plan))
            if side(d.box, min) >= MIN_CROP_SIDE and (held is None or d.score > held[4].score):
                best[id(plan)] = (plan, image, box, crop, d, labels, prob)
    changed = set()
    for plan, image, box, crop, d, labels, prob in best.values():
        if not plan.missed and d.score <= plan.detections[plan.searched[0]].score:
            continue  # the small product found first is the more confident
        changed.add(id(plan))
        share = (crop.width * crop.height) / (image.width * image.height)
        plan.detections = [Detection(shift(d.box, *box[:2]), d.score, d.area * share, d.label)]
        plan.searched, plan.note, plan.also_whole = [0], "", False
        plan.regions = [(crop, d, labels, prob)]
        plan.looks.append((box, prob))
    return [i for i, plan in enumerate(plans) if id(plan) in changed]


def refine(
    loc: LocalizerSpec | None, masks: ProductMasks, images: Sequence[Image.Image], plans: list
) -> None:
    """Localize small products again in a crop around them (one batched pass), where
    they fill the localizer's input: sharper masks and boxes than the whole photo's
    letterbox gives a product a few pixels wide. The searched products, or with
    ``loc.refine_every`` every usable one found (the boxes a page draws for "shop the look").
    Updates the plans in place."""
    if loc is None or not loc.refine_below:
        return
    todo = []  # (plan, index into its detections, image, region box)
    for image, plan in zip(images, plans, strict=True):
        if not plan.searched or plan.searched[0] < 0:  # the whole photo is searched
            continue
        for i in range(len(plan.detections)) if loc.refine_every else plan.searched:
            box = plan.detections[i].box
            small = side(box, max) < loc.refine_below * max(image.size)
            if small and side(box, min) >= MIN_CROP_SIDE:
                todo.append((plan, i, image, context(box, image.size)))
    if not todo:
        return
    crops = [image.crop(region) for _, _, image, region in todo]
    for (plan, i, _, region), crop, prob in zip(todo, crops, masks(crops), strict=True):
        coarse = plan.detections[i]
        frame = Letterbox(crop.width, crop.height, loc.input_size)
        found, labels = detections_from_mask(prob, frame, loc.threshold, loc.min_area)
        local = shift(coarse.box, -region[0], -region[1])
        best = max(found, key=lambda d: overlap(d.box, local), default=None)
        if best is None or overlap(best.box, local) == 0:
            continue  # nothing there at a closer look: keep the first pass's answer
        plan.detections[i] = Detection(
            shift(best.box, *region[:2]), best.score, coarse.area, best.label
        )
        if i in plan.searched:
            plan.regions[plan.searched.index(i)] = (crop, best, labels, prob)
        plan.looks.append((region, prob))
