"""The shopper-photo benchmark: test-split products photographed the way phones photograph them.

Held apart from training on purpose. Products come from the *test* split only; scenes only
from the *evaluation* backgrounds (real photographs training never reads); and the photos are
made by this module, with Pillow and numpy, not by the training augmentation or its
copy-paste (torch code in ``shoplens.data``). Training simulates some of the same physics
with its own code and draws (the localizer's scenes: gamma, uneven light, sensor noise; the
embedder's crops: gamma), so what is held apart is the data, the backgrounds and the generator,
not every kind of effect: vignetting and this module's exposure and blur models are its own.

Each photo is one product of a known box and mask at a known scale, in one of four buckets:

* ``fill_50_90``: the product's longer side fills 50-90% of the photo's shorter side;
* ``fill_20_45``: it fills 20-45%;
* ``fill_20_45_distractor``: 20-45%, beside a smaller product of another category;
* ``small_photo``: a thumbnail-sized photo (longer side 64-112 px), product 40-90%.

The photos are saved as the JPEG bytes a shopper would upload; ground truth goes to
``photos.parquet`` (boxes, products, bucket) and ``masks/`` (0 background, 1 the product,
2 the distractor).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

PHOTOS_DIR, MASKS_DIR, TABLE_FILE = "photos", "masks", "photos.parquet"
PRODUCT, DISTRACTOR = 1, 2  # values in the instance masks


@dataclass(frozen=True)
class Bucket:
    name: str
    share: float
    scale: tuple[float, float]  # product box's longer side / photo's shorter side
    distractor: bool = False
    small: bool = False


BUCKETS: tuple[Bucket, ...] = (
    Bucket("fill_50_90", 0.3, (0.5, 0.9)),
    Bucket("fill_20_45", 0.2, (0.2, 0.45)),
    Bucket("fill_20_45_distractor", 0.3, (0.2, 0.45), distractor=True),
    Bucket("small_photo", 0.2, (0.4, 0.9), small=True),
)


@dataclass
class BenchmarkSettings:
    """``evaluate.photos`` in the config."""

    photos: int = 1000
    seed: int = 2024
    frame_side: tuple[int, int] = (192, 400)  # longer side of a normal photo, pixels
    small_side: tuple[int, int] = (64, 112)  # longer side of a thumbnail
    rotation: float = 25.0  # degrees either way
    jpeg_quality: tuple[int, int] = (35, 92)
    # Photos of things the shop does not sell (shoplens.evaluation.out_of_catalog), for the
    # "no confident match" threshold.
    out_of_catalog: int = 300


@dataclass
class Cutout:
    """A catalog product cut out: RGB and alpha, cropped to the product."""

    rgb: np.ndarray  # (h, w, 3) uint8
    alpha: np.ndarray  # (h, w) float32 in [0, 1]


def cut_out(image: np.ndarray, mask: np.ndarray) -> Cutout:
    """Crop a catalog shot and its product mask (uint8, 255 = product) to the product."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return Cutout(image[y0:y1, x0:x1], mask[y0:y1, x0:x1].astype(np.float32) / 255)


def frame_size(rng: np.random.Generator, side: tuple[int, int]) -> tuple[int, int]:
    longer = int(rng.integers(side[0], side[1] + 1))
    aspect = rng.choice([1.0, 4 / 3, 3 / 4, 16 / 9, 9 / 16])
    return (longer, round(longer / aspect)) if aspect >= 1 else (round(longer * aspect), longer)


def scene_crop(rng: np.random.Generator, photo: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A random crop of a background photograph at the frame's aspect, resized to it."""
    w, h = size
    ph, pw = photo.shape[:2]
    aspect = w / h
    max_w = min(pw, ph * aspect)
    crop_w = max_w * rng.uniform(0.35, 1.0)
    crop_h = crop_w / aspect
    x0 = rng.uniform(0, pw - crop_w)
    y0 = rng.uniform(0, ph - crop_h)
    scene = Image.fromarray(photo).resize(
        size, Image.Resampling.BILINEAR, box=(x0, y0, x0 + crop_w, y0 + crop_h)
    )
    if rng.random() < 0.5:
        scene = scene.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(scene, dtype=np.float32)


def tint(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A colour cast of the light on the product (the white balance the camera did not fix):
    mild, so the photographed product is still the catalog's product, not a recoloured one."""
    cast = 1 + rng.uniform(-0.2, 0.2, 3)
    return np.clip(rgb.astype(np.float32) * cast / cast.mean(), 0, 255)


def place_cutout(cut: Cutout, longer_side: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Resize the cut-out so its longer side is ``longer_side`` px, rotate it; RGB and alpha."""
    h, w = cut.alpha.shape
    scale = longer_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    rgb = Image.fromarray(np.clip(cut.rgb, 0, 255).astype(np.uint8)).resize(
        size, Image.Resampling.LANCZOS
    )
    alpha = Image.fromarray((cut.alpha * 255).astype(np.uint8)).resize(
        size, Image.Resampling.BILINEAR
    )
    rgb = rgb.rotate(angle, Image.Resampling.BICUBIC, expand=True)
    alpha = alpha.rotate(angle, Image.Resampling.BILINEAR, expand=True)
    return np.asarray(rgb, dtype=np.float32), np.asarray(alpha, dtype=np.float32) / 255


def free_position(
    rng: np.random.Generator, frame: tuple[int, int], size: tuple[int, int], avoid=None
) -> tuple[int, int] | None:
    """A free top-left corner inside the frame, not overlapping the ``avoid`` box."""
    fw, fh = frame
    w, h = size
    for _ in range(50):
        x, y = int(rng.integers(0, max(1, fw - w + 1))), int(rng.integers(0, max(1, fh - h + 1)))
        if avoid is None:
            return x, y
        ax0, ay0, ax1, ay1 = avoid
        if x + w <= ax0 or x >= ax1 or y + h <= ay0 or y >= ay1:
            return x, y
    return None


def paste_cutout(scene, mask, rgb, alpha, xy, value) -> tuple[int, int, int, int]:
    """Alpha-composite onto the scene in place; returns the product's tight box."""
    x, y = xy
    h, w = alpha.shape
    h, w = min(h, scene.shape[0] - y), min(w, scene.shape[1] - x)
    a = alpha[:h, :w, None]
    scene[y : y + h, x : x + w] = scene[y : y + h, x : x + w] * (1 - a) + rgb[:h, :w] * a
    solid = alpha[:h, :w] >= 0.5
    mask[y : y + h, x : x + w][solid] = value
    ys, xs = np.nonzero(solid)
    return int(x + xs.min()), int(y + ys.min()), int(x + xs.max() + 1), int(y + ys.max() + 1)


def photograph(scene: np.ndarray, rng: np.random.Generator, quality: tuple[int, int]) -> bytes:
    """Light, lens and sensor: exposure, gamma, directional light, vignetting, white balance,
    noise, focus blur, then the JPEG an upload is."""
    h, w = scene.shape[:2]
    img = scene / 255
    img = img ** rng.uniform(0.7, 1.5) * rng.uniform(0.65, 1.25)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(theta) * (xx / w - 0.5) + np.sin(theta) * (yy / h - 0.5)) * 2
    img *= (1 + rng.uniform(0, 0.3) * ramp)[..., None]
    r2 = ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) * 2
    img *= (1 - rng.uniform(0, 0.35) * r2)[..., None]
    img *= rng.uniform(0.85, 1.15, 3)
    img += rng.normal(0, rng.uniform(0, 5 / 255), img.shape)
    photo = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    if rng.random() < 0.6:
        photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5) * max(w, h) / 256))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=int(rng.integers(quality[0], quality[1] + 1)))
    return buffer.getvalue()


def compose_photo(
    rng: np.random.Generator,
    bucket: Bucket,
    product: Cutout,
    background: np.ndarray,
    settings: BenchmarkSettings,
    distractor: Cutout | None = None,
) -> tuple[bytes, np.ndarray, dict]:
    """One shopper photo: JPEG bytes, the instance mask and the ground-truth record."""
    frame = frame_size(rng, settings.small_side if bucket.small else settings.frame_side)
    scene = scene_crop(rng, background, frame)
    mask = np.zeros(scene.shape[:2], np.uint8)
    short = min(frame)
    scale = rng.uniform(*bucket.scale)
    rgb, alpha = place_cutout(
        Cutout(tint(product.rgb, rng), product.alpha),
        scale * short,
        rng.uniform(-settings.rotation, settings.rotation),
    )
    xy = free_position(rng, frame, alpha.shape[::-1])
    box = paste_cutout(scene, mask, rgb, alpha, xy, PRODUCT)
    record = {"bucket": bucket.name, "width": frame[0], "height": frame[1], "box": box}
    record["scale"] = max(box[2] - box[0], box[3] - box[1]) / short
    if distractor is not None:
        d_rgb, d_alpha = place_cutout(
            Cutout(tint(distractor.rgb, rng), distractor.alpha),
            scale * short * rng.uniform(0.45, 0.75),
            rng.uniform(-settings.rotation, settings.rotation),
        )
        d_xy = free_position(rng, frame, d_alpha.shape[::-1], avoid=box)
        if d_xy is not None:
            record["distractor_box"] = paste_cutout(scene, mask, d_rgb, d_alpha, d_xy, DISTRACTOR)
    return photograph(scene, rng, settings.jpeg_quality), mask, record


def assign_buckets(n: int, rng: np.random.Generator) -> list[Bucket]:
    counts = np.floor(np.array([b.share for b in BUCKETS]) * n).astype(int)
    counts[0] += n - counts.sum()
    buckets = [b for b, c in zip(BUCKETS, counts, strict=True) for _ in range(c)]
    return [buckets[i] for i in rng.permutation(n)]


def make_benchmark(
    products: pd.DataFrame,
    images: np.ndarray,
    masks: np.ndarray,
    backgrounds: dict[str, np.ndarray],
    out_dir: str | Path,
    settings: BenchmarkSettings,
) -> pd.DataFrame:
    """Photograph ``products`` (test-split rows with a clean cut-out; ``cache_index`` indexes
    ``images`` and ``masks``) onto ``backgrounds`` (name -> photograph: evaluation only)."""
    if products.empty:
        raise ValueError("no test products with a clean cut-out to photograph")
    if not backgrounds:
        raise ValueError("no evaluation backgrounds")
    out_dir = Path(out_dir)
    (out_dir / PHOTOS_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / MASKS_DIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(settings.seed)
    names = sorted(backgrounds)
    # Categories in turn, so every category gets its share of photos.
    by_category = [
        g.sample(frac=1, random_state=settings.seed) for _, g in products.groupby("category")
    ]
    order = [g.iloc[i % len(g)] for i in range(settings.photos) for g in by_category][
        : settings.photos
    ]
    rows = []
    for i, (bucket, product) in enumerate(
        zip(assign_buckets(settings.photos, rng), order, strict=True)
    ):
        others = products[products["category"] != product["category"]]
        distractor = None
        if bucket.distractor and not others.empty:
            other = others.iloc[int(rng.integers(len(others)))]
            distractor = cut_out(images[other["cache_index"]], masks[other["cache_index"]])
        else:
            other = None
        bg = names[int(rng.integers(len(names)))]
        jpeg, mask, record = compose_photo(
            rng,
            bucket,
            cut_out(images[product["cache_index"]], masks[product["cache_index"]]),
            backgrounds[bg],
            settings,
            distractor,
        )
        name = f"{i:05d}"
        (out_dir / PHOTOS_DIR / f"{name}.jpg").write_bytes(jpeg)
        Image.fromarray(mask).save(out_dir / MASKS_DIR / f"{name}.png")
        rows.append(
            {
                "photo": name,
                "product_id": str(product["product_id"]),
                "category": str(product["category"]),
                "cache_index": int(product["cache_index"]),
                "background": bg,
                **{k: v for k, v in record.items() if k not in ("box", "distractor_box")},
                **dict(zip(("x0", "y0", "x1", "y1"), record["box"], strict=True)),
                "distractor_category": (
                    str(other["category"]) if "distractor_box" in record else None
                ),
                "distractor_box": list(record.get("distractor_box", ())) or None,
            }
        )
    table = pd.DataFrame(rows)
    table.to_parquet(out_dir / TABLE_FILE, index=False)
    return table


def read_benchmark(out_dir: str | Path) -> pd.DataFrame:
    path = Path(out_dir) / TABLE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no shopper-photo benchmark at {path}: run `shoplens shopper_photos`"
        )
    return pd.read_parquet(path)


def read_photo(out_dir: str | Path, name: str) -> bytes:
    """The photo exactly as a shopper would upload it (JPEG bytes)."""
    return (Path(out_dir) / PHOTOS_DIR / f"{name}.jpg").read_bytes()


def read_mask(out_dir: str | Path, name: str) -> np.ndarray:
    """Instance mask (H, W) uint8: 0 background, 1 the product, 2 the distractor."""
    return np.asarray(Image.open(Path(out_dir) / MASKS_DIR / f"{name}.png"))
