"""Train the embedder on what the query pipeline will hand it: a product cut out of a photo.

At search time the localizer finds the product in the shopper's photo, the pipeline crops its
box, paints what the mask calls background in the catalog's backdrop colour and letterboxes
the crop (:mod:`shoplens.query.pipeline`). This transform makes that input from a catalog shot
by copy-paste: the product (exact mask from :mod:`shoplens.data.cutout`) is tinted, shrunk to
a photo's resolution, rotated and pasted on a *train* background photograph; the photo's light
and camera effects apply; then a box around it (with a localizer's imprecision) is cropped and
the background painted out through a deliberately imperfect mask. Now and then the product
stays on its background (localization off, or nothing found: the whole frame is searched).

Measured against the synthetic-clutter augmentation (``augmentation=shopper_photo``) on the
shopper-photo benchmark: see the README's table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf
from torchvision.transforms.v2 import functional as F

from shoplens.data.copy_paste import Backgrounds, SceneSettings, camera, cut, paste
from shoplens.data.draws import randint, uniform


@dataclass
class CropSettings:
    """The copy-paste part of ``augmentation`` (conf/augmentation/copy_paste.yaml); the
    defaults switch it off, as conf/augmentation/base.yaml does."""

    probability: float = 0.0  # of shots with a clean mask; the rest: catalog-shot effects only
    resolution: tuple[int, int] = (14, 96)  # product's longer side in the photo, pixels
    rotation: float = 0.0
    tint: float = 0.0  # colour cast of the light on the product
    box_jitter: float = 0.0  # each box edge moves by up to this share of the box side
    mask_p: float = 0.0  # background painted out (query.mask_background), else kept
    mask_error: float = 0.0  # the mask grows or shrinks by up to this share of the crop side
    whole_frame_p: float = 0.0  # the product small in a whole scene, nothing cropped
    blur_p: float = 0.0
    jpeg_p: float = 0.0
    low_res_p: float = 0.0  # resolution already varies through ``resolution``


def _loguniform(g, lo: float, hi: float) -> float:
    return math.exp(uniform(g, math.log(lo), math.log(hi)))


def _morph(alpha: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow (pixels > 0) or shrink (< 0) a (1, H, W) mask: a localizer's edge errors."""
    if pixels == 0:
        return alpha
    k = 2 * abs(pixels) + 1
    if pixels > 0:
        return nnf.max_pool2d(alpha[None], k, 1, abs(pixels))[0]
    return -nnf.max_pool2d(-alpha[None], k, 1, abs(pixels))[0]


class PhotoCrop:
    """(catalog shot HWC uint8, product mask HW uint8) -> what the query pipeline would embed
    for a photo of that product: float CHW in [0, 1] at ``out_size`` (the cache's side)."""

    def __init__(self, backgrounds: Backgrounds, settings: CropSettings, out_size: int,
                 backdrop: tuple[int, int, int], margin: float = 0.0):  # fmt: skip
        self.backgrounds, self.s, self.size = backgrounds, settings, int(out_size)
        self.backdrop = torch.tensor(backdrop, dtype=torch.float32)[:, None, None] / 255
        self.margin = float(margin)
        # The embedder's crops keep the thumbnail camera they were measured with (README,
        # "How the training defaults were chosen"); the localizer's scenes changed theirs.
        self.camera = SceneSettings(blur_p=settings.blur_p, jpeg_p=settings.jpeg_p,
                                    low_res_p=settings.low_res_p, low_res_factor=(0.25, 0.6),
                                    low_res_first=False, light_p=0.0, noise_p=0.0)  # fmt: skip

    def __call__(self, image: np.ndarray, mask: np.ndarray, g=None) -> torch.Tensor:
        s = self.s
        rgb, alpha = cut(image, mask)
        cast = 1 + s.tint * (2 * torch.rand(3, generator=g) - 1)
        rgb = (rgb * (cast / cast.mean())[:, None, None]).clamp_(0, 1)
        if float(torch.rand((), generator=g)) < 0.5:
            rgb, alpha = F.horizontal_flip(rgb), F.horizontal_flip(alpha)
        longer = round(_loguniform(g, *s.resolution))
        _, h, w = alpha.shape
        scale = longer / max(h, w)
        rgba = F.resize(torch.cat([rgb, alpha]), [max(2, round(h * scale)), max(2, round(w * scale))],
                        antialias=True)  # fmt: skip
        angle = uniform(g, -s.rotation, s.rotation)
        rgba = F.rotate(rgba, angle, interpolation=F.InterpolationMode.BILINEAR, expand=True)
        rgb, alpha = rgba[:3].clamp(0, 1), rgba[3:].clamp(0, 1)
        whole = float(torch.rand((), generator=g)) < s.whole_frame_p
        _, ph, pw = alpha.shape
        # The scene: just large enough around the product (or a whole frame around it).
        side = round(max(ph, pw) / uniform(g, 0.3, 0.9)) if whole else round(max(ph, pw) * 1.6)
        scene = self.backgrounds.crop(side, side, g)
        scene_mask = torch.zeros(1, side, side)
        box = (
            paste(scene, scene_mask, rgb, alpha, g)
            if whole
            else self._centre(scene, scene_mask, rgb, alpha)
        )
        scene = camera(scene, self.camera, g)
        if whole:
            return self._letterbox(scene)
        crop, crop_mask = self._crop(scene, scene_mask, box, g)
        if float(torch.rand((), generator=g)) < s.mask_p:
            most = int(s.mask_error * max(crop.shape[-2:]))
            keep = _morph(crop_mask, randint(g, -most, most))
            keep = F.gaussian_blur(keep, [3, 3], [0.6, 0.6]) if crop.shape[-1] >= 3 else keep
            crop = crop * keep + self.backdrop * (1 - keep)
        return self._letterbox(crop)

    def _centre(self, scene, scene_mask, rgb, alpha):
        """Paste in the middle of a scene built around the product; returns its visible box."""
        _, side, _ = scene.shape
        _, h, w = alpha.shape
        y, x = (side - h) // 2, (side - w) // 2
        region = scene[:, y : y + h, x : x + w]
        region.mul_(1 - alpha).add_(rgb * alpha)
        scene_mask[:, y : y + h, x : x + w] = (alpha >= 0.5).float()
        ys, xs = torch.nonzero(alpha[0] >= 0.5, as_tuple=True)
        if len(ys) == 0:
            return x, y, x + w, y + h
        return x + int(xs.min()), y + int(ys.min()), x + int(xs.max()) + 1, y + int(ys.max()) + 1

    def _crop(self, scene, scene_mask, box, g):
        """The box with the catalog's framing margin and a localizer's imprecision."""
        x0, y0, x1, y1 = box
        bw, bh = max(1, x1 - x0), max(1, y1 - y0)
        j, m = self.s.box_jitter, self.margin

        def edge(v, span, sign):
            return v + sign * m * span + uniform(g, -j, j) * span

        _, H, W = scene.shape
        cx0 = int(min(max(0, edge(x0, bw, -1)), W - 2))
        cy0 = int(min(max(0, edge(y0, bh, -1)), H - 2))
        cx1 = int(max(cx0 + 2, min(W, math.ceil(edge(x1, bw, 1)))))
        cy1 = int(max(cy0 + 2, min(H, math.ceil(edge(y1, bh, 1)))))
        return scene[:, cy0:cy1, cx0:cx1], scene_mask[:, cy0:cy1, cx0:cx1]

    def _letterbox(self, img: torch.Tensor) -> torch.Tensor:
        """Into an ``out_size`` square, padded with the border's median colour, as
        :func:`shoplens.data.images.letterbox` does for a query crop."""
        _, h, w = img.shape
        scale = self.size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        img = F.resize(img, [nh, nw], antialias=True).clamp_(0, 1)
        border = torch.cat([img[:, 0], img[:, -1], img[:, :, 0], img[:, :, -1]], dim=1)
        out = border.median(dim=1).values[:, None, None].expand(3, self.size, self.size).clone()
        y0, x0 = (self.size - nh) // 2, (self.size - nw) // 2
        out[:, y0 : y0 + nh, x0 : x0 + nw] = img
        return out


class CropTransform:
    """Dataset transform: (catalog shot, its mask or None) -> normalised tensor at the model's
    input size. ``probability`` of the shots with a clean mask go through :class:`PhotoCrop`,
    the rest (and shots without a mask) through ``fallback`` (the shopper-photo augmentation).
    Picklable, for DataLoader workers."""

    def __init__(self, crop: PhotoCrop, fallback, image_size: int, mean, std, probability: float):
        self.crop, self.fallback, self.size = crop, fallback, int(image_size)
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        self.p = float(probability)

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None) -> torch.Tensor:
        if mask is None or float(torch.rand(())) >= self.p:
            return self.fallback(image)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny tensors: OpenMP wake-ups cost more than they save
        try:
            img = self.crop(image, mask)
        finally:
            torch.set_num_threads(threads)
        img = F.resize(img, [self.size, self.size], antialias=True)
        return F.normalize(img, self.mean, self.std)


class TwoViews:
    """A photo-like view and the clean catalog view of one shot, stacked ``(2, C, H, W)``: an
    instance loss pulls a product's photo towards its own catalog shot, away from look-alikes."""

    def __init__(self, photo, catalog):
        self.photo, self.catalog = photo, catalog

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None) -> torch.Tensor:
        return torch.stack([self.photo(image, mask), self.catalog(image)])


def build_photo_transform(aug_cfg, fallback, catalog, backgrounds, framing, cache_side: int,
                          image_size: int, mean, std, views: int = 1):  # fmt: skip
    """The embedder's train transform with copy-paste: ``fallback`` is the shopper-photo
    transform (image -> tensor), ``catalog`` the clean eval transform (the second view)."""
    cp = aug_cfg.copy_paste
    settings = CropSettings(
        **{k: tuple(v) if isinstance(v, list | tuple) else v for k, v in cp.items()}
    )
    crop = PhotoCrop(Backgrounds(backgrounds), settings, cache_side, framing.backdrop,
                     framing.crop_margin)  # fmt: skip
    photo = CropTransform(crop, fallback, image_size, mean, std, settings.probability)
    return TwoViews(photo, catalog) if views > 1 else photo
