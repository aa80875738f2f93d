"""Cut each catalog product out of its shot: a mask of the product, or a reason why not.

Catalog shots put one product on a plain studio backdrop (Fashion-MNIST: black; a shop: white
or light grey). The method, chosen to be predictable rather than clever:

1. the backdrop colour is the median of the border pixels; a border that is not near-uniform
   (median absolute deviation above ``max_border_spread``) is no studio shot: refused;
2. pixels within ``tolerance`` of the backdrop colour (per channel) *and connected to the
   border* are background; everything else is product, so a dark lining or a white logo
   enclosed by the product stays product (a flood fill from the edges, not a threshold);
3. holes are filled and specks under 1% of the product's area dropped;
4. a mask covering less than ``min_area`` or more than ``max_area`` of the shot is refused:
   a white shirt on white leaks into the backdrop, a shot cropped to the product has no
   backdrop to remove. Refused shots stay in the catalog (search still finds them); they
   are only never pasted into a composite, where a wrong mask would teach wrong edges.

Masks are computed on the decoded cache (the letterboxed squares training reads), so they
line up with its pixels exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class CutoutSettings:
    """``preprocess.cutout`` in the config."""

    tolerance: int = 24  # per-channel distance (0..255) from the backdrop still backdrop
    max_border_spread: float = 12.0  # border MAD above this: not a plain backdrop
    min_area: float = 0.03
    max_area: float = 0.97


def backdrop_colour(image: np.ndarray) -> tuple[np.ndarray, float]:
    """Median border colour (3,) and the border's median absolute deviation (worst channel)."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    colour = np.median(border, axis=0)
    spread = float(np.median(np.abs(border - colour), axis=0).max())
    return colour, spread


def product_mask(image: np.ndarray, settings: CutoutSettings) -> tuple[np.ndarray | None, str]:
    """``(mask, "")`` with mask uint8 (H, W), 255 on the product; or ``(None, reason)``."""
    colour, spread = backdrop_colour(image)
    if spread > settings.max_border_spread:
        return (
            None,
            f"backdrop not uniform (border spread {spread:.0f} > {settings.max_border_spread:g})",
        )
    near = np.abs(image.astype(np.float32) - colour).max(axis=2) <= settings.tolerance
    labels, _ = ndimage.label(near)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    background = np.isin(labels, edge[edge > 0])
    product = ndimage.binary_fill_holes(~background)
    parts, count = ndimage.label(product)
    if count > 1:
        sizes = ndimage.sum_labels(product, parts, np.arange(1, count + 1))
        keep = np.flatnonzero(sizes >= 0.01 * sizes.sum()) + 1
        product = np.isin(parts, keep)
    area = float(product.mean())
    if area < settings.min_area:
        return (
            None,
            f"product covers {area:.1%} of the shot (< {settings.min_area:.0%}): cannot tell it from the backdrop",
        )
    if area > settings.max_area:
        return (
            None,
            f"product covers {area:.1%} of the shot (> {settings.max_area:.0%}): no backdrop to remove",
        )
    return product.astype(np.uint8) * 255, ""


def product_fill(mask: np.ndarray) -> float:
    """The product box's longer side as a share of the shot's longer side."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return 0.0
    return max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) / max(mask.shape)


def cut_catalog(images: np.ndarray, settings: CutoutSettings) -> tuple[np.ndarray, list[str]]:
    """Masks ``(N, H, W)`` uint8 for a cache ``(N, H, W, 3)`` (zeros where refused), and the
    refusal reason per image ("" when cut cleanly)."""
    masks = np.zeros(images.shape[:3], np.uint8)
    reasons = []
    for i, image in enumerate(images):
        mask, reason = product_mask(np.asarray(image), settings)
        if mask is not None:
            masks[i] = mask
        reasons.append(reason)
    return masks, reasons
