"""From a product-mask probability map to one box per product, and back to photo pixels.

The localizer is a segmentation model (a mask, not boxes): on a catalog's cut-out products the
mask is what the training data knows exactly, and boxes follow from its connected components,
one per product, each scored by its mean probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Letterbox:
    """Where a ``width x height`` photo sits inside a ``side`` square after letterboxing."""

    width: int
    height: int
    side: int

    @property
    def scale(self) -> float:
        return self.side / max(self.width, self.height)

    @property
    def inner(self) -> tuple[int, int, int, int]:
        """The photo's rectangle inside the square: x0, y0, x1, y1 (as ``letterbox`` pastes it)."""
        w = max(1, round(self.width * self.scale))
        h = max(1, round(self.height * self.scale))
        x0, y0 = (self.side - w) // 2, (self.side - h) // 2
        return x0, y0, x0 + w, y0 + h

    def to_photo(self, box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
        """A box in square pixels -> the photo's pixels, clipped to the photo."""
        x0, y0, _, _ = self.inner
        s = self.scale
        bx0, by0, bx1, by1 = box
        out = (
            int(np.floor((bx0 - x0) / s)),
            int(np.floor((by0 - y0) / s)),
            int(np.ceil((bx1 - x0) / s)),
            int(np.ceil((by1 - y0) / s)),
        )
        return (
            min(max(out[0], 0), self.width - 1),
            min(max(out[1], 0), self.height - 1),
            min(max(out[2], 1), self.width),
            min(max(out[3], 1), self.height),
        )


@dataclass(frozen=True)
class Detection:
    """One product found in a photo."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in photo pixels (x1, y1 exclusive)
    score: float  # mean mask probability over the component
    area: float  # the component's share of the photo
    label: int  # the component's id in the labelled mask (to cut out just this product)

    def to_dict(self) -> dict:
        return {"box": list(self.box), "score": round(self.score, 4), "area": round(self.area, 4)}


def detections_from_mask(
    prob: np.ndarray, frame: Letterbox, threshold: float, min_area: float
) -> tuple[list[Detection], np.ndarray]:
    """Components of ``prob >= threshold`` (8-connected) as detections, the largest first (by
    the box's longer side: a flat sneaker beside a pullover is the bigger product when it is
    the wider one, as a shopper framing it would see it).

    ``prob`` is the ``side x side`` map over the letterboxed photo; padding is ignored. Returns
    the detections and the label map (0: background, ``Detection.label``: that product).
    """
    x0, y0, x1, y1 = frame.inner
    fg = np.zeros(prob.shape, dtype=bool)
    fg[y0:y1, x0:x1] = prob[y0:y1, x0:x1] >= threshold
    labels, count = ndimage.label(fg, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return [], labels
    inner_area = float((x1 - x0) * (y1 - y0))
    index = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(fg, labels, index)
    means = ndimage.mean(prob, labels, index)
    found = []
    for label, size, mean, slices in zip(
        index, sizes, means, ndimage.find_objects(labels), strict=True
    ):
        area = float(size) / inner_area
        if area < min_area:
            continue
        ys, xs = slices
        box = frame.to_photo((xs.start, ys.start, xs.stop, ys.stop))
        found.append(Detection(box, float(mean), area, int(label)))
    return sorted(found, key=lambda d: -max(d.box[2] - d.box[0], d.box[3] - d.box[1])), labels
