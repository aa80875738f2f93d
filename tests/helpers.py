"""Tiny generated images and catalogs for the data tests (no downloads, milliseconds each)."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance


def pattern(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A smooth random RGB image: distinct seeds give clearly distinct perceptual hashes."""
    rng = np.random.default_rng(seed)
    blobs = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return blobs.resize(size, Image.Resampling.BICUBIC)


def near_copy(img: Image.Image) -> Image.Image:
    """What a re-upload does to a photo: a bit brighter, resized, JPEG re-encoded."""
    brighter = ImageEnhance.Brightness(img).enhance(1.05)
    resized = brighter.resize((img.width * 9 // 10, img.height * 9 // 10))
    buffer = io.BytesIO()
    resized.save(buffer, "JPEG", quality=85)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def save(img: Image.Image, path: Path, **params) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **params)
    return path


def jpeg_bytes(img: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", **params)
    return buffer.getvalue()


def folder_catalog(
    root: Path, categories: dict[str, int], seed: int = 0, ext: str = "png"
) -> dict[str, list[Path]]:
    """``root/<category>/<category>-<i>.<ext>``: ``n`` one-photo products per category."""
    written: dict[str, list[Path]] = {}
    offset = seed * 10_000
    for c, (category, n) in enumerate(sorted(categories.items())):
        written[category] = [
            save(pattern(offset + 100 * c + i), root / category / f"{category}-{i}.{ext}")
            for i in range(n)
        ]
    return written


def bad_files(folder: Path) -> dict[str, str]:
    """One file per kind of bad input in ``folder``; maps path -> expected reason prefix.

    The pixel-limit case assumes ``max_pixels`` below 120*100 = 12,000 and ``min_size`` 16.
    """
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    truncated = folder / "truncated.jpg"
    whole = jpeg_bytes(pattern(901, (64, 64)), quality=95)
    truncated.write_bytes(whole[: len(whole) // 2])  # an interrupted download
    text = folder / "notes.jpg"
    text.write_text("this is a text file, not a photo\n")
    huge = save(pattern(902, (120, 100)), folder / "huge.png")
    tiny = save(pattern(903, (8, 8)), folder / "tiny.png")
    return {
        str(empty): "empty file",
        str(truncated): "truncated or corrupt",
        str(text): "not an image",
        str(huge): "too large",
        str(tiny): "too small",
    }


@functools.cache
def _default_config():
    from shoplens.config import compose_config

    return compose_config()


def node(path: str, **values):
    """A config node as ``conf/`` composes it by default, with ``values`` changed: tests use
    the real configuration, not values of their own."""
    from omegaconf import OmegaConf

    return OmegaConf.merge(OmegaConf.select(_default_config(), path), values)
