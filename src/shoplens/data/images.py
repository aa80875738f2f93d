"""Decode any image a shop may upload into one predictable RGB picture, or say why not.

Used by the preprocess stage on files and by the search service on request bodies, so every
function takes bytes as well as paths. A bad image raises :class:`InvalidImageError` whose
``reason`` is a short sentence fit for a quarantine report or an HTTP 400 body.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats we decode. Others are refused without trying: some PIL plugins hand the data to
# external programs (EPS runs Ghostscript), which a photo upload must never trigger.
# (Multi-picture JPEGs, MPO, come in through the JPEG opener.)
ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# Modes holding more than 8 bits per sample; PIL's convert("L") clips them instead of scaling.
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class ImageLimits:
    """What we accept: guards against thumbnails too small to learn from and against bombs."""

    min_size: int = 16  # shorter side, pixels
    max_pixels: int = 40_000_000  # width * height, checked from the header before decoding
    max_file_bytes: int = 50_000_000

    @classmethod
    def from_config(cls, preprocess_cfg: Any) -> ImageLimits:
        """Build from the ``preprocess`` config node (or anything with the same attributes)."""
        return cls(
            min_size=int(preprocess_cfg.min_size),
            max_pixels=int(preprocess_cfg.max_pixels),
            max_file_bytes=int(preprocess_cfg.max_file_bytes),
        )


class InvalidImageError(ValueError):
    """The input is not a usable image; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ImageTooLarge(InvalidImageError):
    """Over a byte or pixel limit (HTTP 413 rather than 400)."""


def read_image_bytes(path: str | Path, limits: ImageLimits) -> bytes:
    """The file's bytes, after checking (without reading) that its size is acceptable."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InvalidImageError("file not found") from None
    except OSError as err:
        raise InvalidImageError(f"cannot read file ({err.strerror})") from None
    if not path.is_file():
        raise InvalidImageError("not a regular file")
    _check_byte_count(size, limits)
    try:
        return path.read_bytes()
    except OSError as err:
        raise InvalidImageError(f"cannot read file ({err.strerror})") from None


def load_rgb(source: str | Path | bytes, limits: ImageLimits) -> Image.Image:
    """Validate and fully decode ``source``; return it upright, in 8-bit RGB.

    Raises :class:`InvalidImageError` for empty, oversized, non-image, truncated, too large
    (in pixels) or too small input. Animated images yield their first frame.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        _check_byte_count(len(data), limits)
    else:
        data = read_image_bytes(source, limits)
    with warnings.catch_warnings():
        # PIL only *warns* between MAX_IMAGE_PIXELS and twice that; we refuse outright.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = _open(data)
        width, height = img.size
        if width * height > limits.max_pixels:
            raise ImageTooLarge(
                f"too large: {width}x{height} = {width * height} pixels > limit {limits.max_pixels}"
            )
        if min(width, height) < limits.min_size:
            raise InvalidImageError(
                f"too small: {width}x{height}, shorter side < {limits.min_size}"
            )
        _decode(img)
    return to_rgb(_upright(img))


def _check_byte_count(size: int, limits: ImageLimits) -> None:
    if size == 0:
        raise InvalidImageError("empty file (0 bytes)")
    if size > limits.max_file_bytes:
        raise ImageTooLarge(f"file too large: {size} bytes > limit {limits.max_file_bytes}")


def _open(data: bytes) -> Image.Image:
    """Read the header only: format, mode and size, no pixel data yet."""
    try:
        return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise InvalidImageError("not an image (cannot identify image file)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLarge(f"too large: decompression-bomb guard ({err})") from None
    except Exception as err:
        # The format was recognised but its header is cut short or malformed.
        raise InvalidImageError(f"truncated or corrupt image data ({err})") from None


def _decode(img: Image.Image) -> None:
    """Decode every pixel now, so truncation is found here and not in a training worker."""
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLarge(f"too large: decompression-bomb guard ({err})") from None
    except Exception as err:
        # PIL's decoders raise OSError, SyntaxError, ValueError, struct.error, EOFError, ...
        # on damaged data; for a single decode call every one of them means "bad file".
        raise InvalidImageError(f"truncated or corrupt image data ({err})") from None


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (phones store portrait shots sideways plus a tag)."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        # A malformed EXIF block must not cost us an otherwise good photo: keep it unrotated.
        return img.copy()


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB: transparency composited on white, high bit depths scaled, not clipped."""
    if img.mode == "RGB":
        return img
    if img.mode in _HIGH_DEPTH_MODES:
        return Image.fromarray(_scale_to_uint8(img)).convert("RGB")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")  # L, 1, P, CMYK, YCbCr
    except ValueError as err:
        raise InvalidImageError(f"unsupported colour mode {img.mode} ({err})") from None


def _scale_to_uint8(img: Image.Image) -> np.ndarray:
    """Map 16-bit, 32-bit or float samples to 0..255 by their nominal range.

    Our own logic because PIL has no such conversion. 16-bit modes use the full 0..65535
    scale; ``I``/``F`` carry no bit depth, so we infer it from the value range (0..1 floats,
    8-bit or 16-bit integers) and stretch min..max only when nothing nominal fits.
    """
    values = np.nan_to_num(np.asarray(img, dtype=np.float64))
    low, high = float(values.min()), float(values.max())
    if img.mode.startswith("I;16"):
        scaled = values / 65535.0
    elif low >= 0 and high <= 1 and img.mode == "F":
        scaled = values
    elif low >= 0 and high <= 255:
        scaled = values / 255.0
    elif low >= 0 and high <= 65535:
        scaled = values / 65535.0
    else:
        scaled = (values - low) / (high - low)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def border_colour(img: Image.Image) -> tuple[int, int, int]:
    """Median colour of the outermost pixels: the product shot's backdrop, usually."""
    rgb = np.asarray(img.convert("RGB"))
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    red, green, blue = np.median(border, axis=0)
    return int(red), int(green), int(blue)


def letterbox(img: Image.Image, size: int) -> np.ndarray:
    """Fit ``img`` into a ``size`` square without distortion; pad with its border colour.

    Padding with the backdrop colour (not black) keeps the padding from looking like part of
    the product. Returns a ``(size, size, 3)`` uint8 array.
    """
    img = to_rgb(img)
    width, height = img.size
    scale = size / max(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # reducing_gap: a fast box reduction first, then Lanczos; same quality for big photos.
    resized = img.resize(new_size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    canvas = Image.new("RGB", (size, size), border_colour(resized))
    canvas.paste(resized, ((size - new_size[0]) // 2, (size - new_size[1]) // 2))
    return np.asarray(canvas, dtype=np.uint8)
