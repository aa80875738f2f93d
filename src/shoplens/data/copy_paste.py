"""Copy-paste training scenes: catalog products cut out and pasted on real photographs.

"Cut, Paste and Learn" (Dwibedi et al., 2017) and "Simple Copy-Paste" (Ghiasi et al., 2021):
a product's mask is known exactly from its studio shot (:mod:`shoplens.data.cutout`), so a
scene built from it comes with exact supervision - the localizer's mask target, and for the
embedder a product seen in front of a real scene. Training reads only the *train* split of
the catalog and the *train* backgrounds; the shopper-photo benchmark is made elsewhere
(:mod:`shoplens.evaluation.shopper_photos`, Pillow) from test products and eval backgrounds.

Torch ops on small tensors, one intra-op thread (as the shopper-photo augmentation), draws
from torch's RNG or a given generator so Lightning's per-worker seeding applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from shoplens.data.cutout import product_fill
from shoplens.data.draws import jpeg, randint, uniform


@dataclass
class SceneSettings:
    """``localizer.scenes`` in the config: what a training scene looks like."""

    products: tuple[float, ...] = (0.1, 0.5, 0.25, 0.15)  # P(0, 1, 2, 3 products)
    scale: tuple[float, float] = (0.05, 0.95)  # product's longer side / scene's longer side
    # "log": scales drawn log-uniformly, as many products between 5% and 10% of the side as
    # between 50% and 100% (a detector's scales are ratios; conf/localizer says what it
    # measured); "uniform": evenly in the range.
    scale_draw: str = "log"
    rotation: float = 30.0
    dye_p: float = 0.7  # colour a product with a random dye (catalog shots may be grey)
    wide_p: float = 0.5  # a non-square scene, letterboxed as the query pipeline does
    blur_p: float = 0.3
    jpeg_p: float = 0.3
    low_res_p: float = 0.4  # a thumbnail blown up: the small photos shoppers send
    low_res_factor: tuple[float, float] = (0.15, 0.6)  # the thumbnail's side / the scene's
    # Blur and compress the thumbnail at its own size, then blow it up (bilinear or bicubic):
    # a shopper's thumbnail is a small JPEG the query pipeline letterboxes up to the
    # localizer's input. False: blown up first, its blur and JPEG at the scene's size.
    low_res_first: bool = True
    # Decoys: patches of other photographs pasted like products but labelled background, so
    # the localizer learns what a product looks like, not what a pasted edge looks like.
    decoys: tuple[float, ...] = (0.4, 0.4, 0.2)  # P(0, 1, 2 decoys)
    background_jitter: float = 0.3  # hue / saturation / grey changes of the photograph
    light_p: float = 0.5  # light falling off across the scene and towards its corners
    noise_p: float = 0.3  # sensor noise
    # Thin products drawn more often: a product covering a share ``fill`` of its own bounding
    # square (sandals ~0.28, shirts ~0.62 in Fashion-MNIST) is pasted ``max(1, thin_repeat /
    # fill)`` times as often as a solid one; 0 draws every product equally. The localizer misses
    # thin, strappy products on busy photos most (README, "Shopper photos"); repeat-factor
    # sampling as LVIS does for rare categories (Gupta et al., 2019), by shape, not by label.
    thin_repeat: float = 0.0

    def __post_init__(self) -> None:
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"scenes.scale must be within (0, 1], got {self.scale}")
        if self.thin_repeat < 0:
            raise ValueError(f"scenes.thin_repeat must be >= 0, got {self.thin_repeat}")
        factor = self.low_res_factor
        if len(factor) != 2 or not 0 < factor[0] <= factor[1] <= 1:
            raise ValueError(
                f"scenes.low_res_factor must be [low, high], 0 < low <= high <= 1, got {factor}"
            )
        if self.scale_draw not in ("uniform", "log"):
            raise ValueError(
                f"scenes.scale_draw must be 'uniform' or 'log', got {self.scale_draw!r}"
            )

    def draw_scale(self, g: torch.Generator | None) -> float:
        """A product's (or decoy's) longer side as a share of the scene's."""
        low, high = self.scale
        if self.scale_draw == "log":
            return math.exp(uniform(g, math.log(low), math.log(high)))
        return uniform(g, low, high)


def thin_repeat_weights(masks: np.ndarray, threshold: float) -> np.ndarray:
    """How often to draw each product, from its cut-out masks (N, H, W; 0 = background).

    A product's fill is its mask's area over the square of its box's longer side (the box
    :func:`cut` crops to, measured by :func:`product_fill`): the share of a pasted product's
    square that is product, since scenes scale products by their longer side. Weight
    ``max(1, threshold / fill)``; an empty mask weighs 1.
    """
    weights = np.ones(len(masks))
    for i, mask in enumerate(masks):
        longer = product_fill(mask) * max(mask.shape)
        if longer:
            weights[i] = max(1.0, threshold * longer**2 / np.count_nonzero(mask))
    return weights


class Backgrounds:
    """The train background photographs as uint8 CHW tensors, and random crops of them."""

    def __init__(self, photos: dict[str, np.ndarray]):
        if not photos:
            raise ValueError("copy-paste needs at least one background photograph")
        self.names = sorted(photos)
        self.photos = [torch.from_numpy(np.array(photos[n])).permute(2, 0, 1) for n in self.names]

    def crop(self, height: int, width: int, g, jitter: float = 0.0) -> torch.Tensor:
        """A random region at the given aspect, resized to ``height x width``, float [0, 1];
        ``jitter`` also turns, greys or re-colours it (a few photographs, many scenes)."""
        photo = self.photos[randint(g, 0, len(self.photos) - 1)]
        if jitter and float(torch.rand((), generator=g)) < jitter:
            photo = torch.rot90(photo, randint(g, 1, 3), dims=(1, 2))
        _, ph, pw = photo.shape
        aspect = width / height
        max_w = min(pw, ph * aspect)
        cw = max(8.0, max_w * uniform(g, 0.15, 1.0))
        ch = cw / aspect
        x0, y0 = uniform(g, 0, pw - cw), uniform(g, 0, ph - ch)
        region = photo[:, int(y0) : int(y0 + ch) + 1, int(x0) : int(x0 + cw) + 1]
        out = F.resize(region, [height, width], antialias=True).float().div_(255)
        if jitter and float(torch.rand((), generator=g)) < jitter:
            out = F.adjust_hue(out, uniform(g, -0.5, 0.5))
        if jitter and float(torch.rand((), generator=g)) < jitter / 2:
            out = F.rgb_to_grayscale(out, num_output_channels=3).contiguous()
        return F.horizontal_flip(out) if float(torch.rand((), generator=g)) < 0.5 else out


def cut(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Product RGB (3, h, w) float and alpha (1, h, w), cropped to the mask's box."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    rgb = torch.from_numpy(np.array(image[y0:y1, x0:x1])).permute(2, 0, 1)  # a writable copy
    alpha = torch.from_numpy(np.array(mask[y0:y1, x0:x1]))[None]
    return rgb.float().div_(255), alpha.float().div_(255)


def transform_product(rgb, alpha, longer: int, settings: SceneSettings, g):
    """Dye, scale (longer side ``longer`` px) and rotate a cut-out; returns RGB and alpha."""
    if float(torch.rand((), generator=g)) < settings.dye_p:
        dye = torch.rand(3, generator=g) * 0.85 + 0.15
        strength = uniform(g, 0.2, 0.9)
        rgb = rgb * ((1 - strength) + strength * dye / dye.max())[:, None, None]
    _, h, w = alpha.shape
    scale = longer / max(h, w)
    size = [max(2, round(h * scale)), max(2, round(w * scale))]
    rgba = F.resize(torch.cat([rgb, alpha]), size, antialias=True)
    if settings.rotation > 0:
        angle = uniform(g, -settings.rotation, settings.rotation)
        rgba = F.rotate(rgba, angle, interpolation=F.InterpolationMode.BILINEAR, expand=True)
    return rgba[:3].clamp_(0, 1), rgba[3:].clamp_(0, 1)


def paste(scene, mask, rgb, alpha, g) -> tuple[int, int, int, int]:
    """Paste at a random place (partly outside the scene is fine); returns the visible box."""
    _, sh, sw = scene.shape
    _, h, w = alpha.shape
    y = randint(g, -h // 4, max(-h // 4, sh - h + h // 4))
    x = randint(g, -w // 4, max(-w // 4, sw - w + w // 4))
    ty0, tx0, ty1, tx1 = max(0, y), max(0, x), min(sh, y + h), min(sw, x + w)
    if ty1 <= ty0 or tx1 <= tx0:
        return (0, 0, 0, 0)
    a = alpha[:, ty0 - y : ty1 - y, tx0 - x : tx1 - x]
    region = scene[:, ty0:ty1, tx0:tx1]
    region.mul_(1 - a).add_(rgb[:, ty0 - y : ty1 - y, tx0 - x : tx1 - x] * a)
    mask[:, ty0:ty1, tx0:tx1] = torch.maximum(mask[:, ty0:ty1, tx0:tx1], (a >= 0.5).float())
    return tx0, ty0, tx1, ty1


def decoy(backgrounds: Backgrounds, longer: int, g) -> tuple[torch.Tensor, torch.Tensor]:
    """A patch of a photograph in a random blob shape (ellipse or rotated rectangle): pasted
    like a product, labelled background."""
    h = max(3, round(longer * uniform(g, 0.3, 1.0)))
    rgb = backgrounds.crop(h, longer, g, jitter=0.5)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, longer), indexing="ij")
    if float(torch.rand((), generator=g)) < 0.5:
        alpha = ((xx**2 + yy**2) <= 1).float()[None]
    else:
        alpha = F.rotate(torch.ones(1, h, longer), uniform(g, -40, 40), expand=False)
    return rgb, alpha


def _uneven_light(img: torch.Tensor, g) -> torch.Tensor:
    """Light falling off across the scene (a lamp to one side) and towards the corners."""
    _, h, w = img.shape
    yy = torch.linspace(-1, 1, h)[:, None]
    xx = torch.linspace(-1, 1, w)[None, :]
    angle = uniform(g, 0, 2 * math.pi)
    ramp = 1 + uniform(g, 0, 0.35) * (math.cos(angle) * xx + math.sin(angle) * yy) / 2
    corners = 1 - uniform(g, 0, 0.4) * (xx**2 + yy**2) / 2
    return img * (ramp * corners)


def camera(img: torch.Tensor, settings: SceneSettings, g) -> torch.Tensor:
    """Exposure, gamma, uneven light, colour cast, sensor noise, focus, thumbnail resolution
    and chat-app JPEG (torchvision's kernels, our own draws)."""
    img = F.adjust_brightness(img, uniform(g, 0.6, 1.4))
    img = F.adjust_contrast(img, uniform(g, 0.7, 1.3))
    img = F.adjust_saturation(img, uniform(g, 0.6, 1.4))
    img = F.adjust_gamma(img, uniform(g, 0.7, 1.4))
    if float(torch.rand((), generator=g)) < settings.light_p:
        img = _uneven_light(img, g)
    gains = 1 + 0.15 * (2 * torch.rand(3, generator=g) - 1)
    img = (img * gains[:, None, None]).clamp_(0, 1)
    _, h, w = img.shape
    if float(torch.rand((), generator=g)) < settings.noise_p:
        img = (img + torch.randn(img.shape, generator=g) * uniform(g, 0.005, 0.03)).clamp_(0, 1)
    thumbnail = False
    if float(torch.rand((), generator=g)) < settings.low_res_p:
        f = uniform(g, *settings.low_res_factor)
        small = F.resize(img, [max(8, round(h * f)), max(8, round(w * f))], antialias=True)
        thumbnail = settings.low_res_first
        img = small if thumbnail else F.resize(small, [h, w], antialias=False)
    if float(torch.rand((), generator=g)) < settings.blur_p:
        sigma = uniform(g, 0.3, 1.5) * max(img.shape[-2:]) / 128
        img = F.gaussian_blur(img, [2 * math.ceil(2 * sigma) + 1] * 2, [sigma, sigma])
    if float(torch.rand((), generator=g)) < settings.jpeg_p:
        u8 = img.clamp(0, 1).mul_(255).round_().to(torch.uint8)
        img = jpeg(u8, randint(g, 30, 90)).float().div_(255)
    if thumbnail:
        bicubic = float(torch.rand((), generator=g)) < 0.5
        mode = F.InterpolationMode.BICUBIC if bicubic else F.InterpolationMode.BILINEAR
        img = F.resize(img, [h, w], interpolation=mode, antialias=False)
    return img.clamp_(0, 1)


def letterbox_scene(img: torch.Tensor, mask: torch.Tensor, side: int):
    """Pad a non-square scene into a ``side`` square with its border's median colour, as
    :func:`shoplens.data.images.letterbox` pads query photos; the mask pads with 0."""
    _, h, w = img.shape
    border = torch.cat([img[:, 0], img[:, -1], img[:, :, 0], img[:, :, -1]], dim=1)
    colour = border.median(dim=1).values[:, None, None]
    out = colour.expand(3, side, side).clone()
    out_mask = torch.zeros(1, side, side)
    y0, x0 = (side - h) // 2, (side - w) // 2
    out[:, y0 : y0 + h, x0 : x0 + w] = img
    out_mask[:, y0 : y0 + h, x0 : x0 + w] = mask
    return out, out_mask


def compose_scene(products, backgrounds: Backgrounds, side: int, settings: SceneSettings, g):
    """A ``side`` square scene (float CHW in [0, 1]) and its product mask (1, side, side).

    ``products`` is a callable returning a random (RGB, alpha) cut-out of a train product.
    """
    h = w = side
    if float(torch.rand((), generator=g)) < settings.wide_p:
        short = round(side * uniform(g, 0.56, 0.95))
        h, w = (short, side) if float(torch.rand((), generator=g)) < 0.5 else (side, short)
    scene = backgrounds.crop(h, w, g, jitter=settings.background_jitter)
    mask = torch.zeros(1, h, w)
    ignored = torch.zeros(1, h, w)
    for _ in range(int(torch.multinomial(torch.tensor(settings.decoys), 1, generator=g))):
        longer = max(3, round(max(h, w) * settings.draw_scale(g)))
        rgb, alpha = decoy(backgrounds, longer, g)
        paste(scene, ignored, rgb, alpha, g)
    counts = torch.tensor(settings.products, dtype=torch.float)
    for _ in range(int(torch.multinomial(counts, 1, generator=g))):
        rgb, alpha = products(g)
        longer = max(3, round(max(h, w) * settings.draw_scale(g)))
        rgb, alpha = transform_product(rgb, alpha, longer, settings, g)
        paste(scene, mask, rgb, alpha, g)
    scene = camera(scene, settings, g)
    if (h, w) != (side, side):
        scene, mask = letterbox_scene(scene, mask, side)
    if float(torch.rand((), generator=g)) < 0.5:
        scene, mask = F.horizontal_flip(scene), F.horizontal_flip(mask)
    return scene, mask
