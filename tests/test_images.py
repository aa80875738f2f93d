"""Image validation and normalisation: every bad input is refused with a reason, every good
one comes out upright, 8-bit RGB, and letterboxed without distortion."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from helpers import bad_files, jpeg_bytes, pattern, save
from PIL import Image

from shoplens.data.images import (
    ImageLimits,
    InvalidImageError,
    letterbox,
    load_rgb,
)

LIMITS = ImageLimits(min_size=16, max_pixels=10_000, max_file_bytes=1_000_000)


@pytest.mark.parametrize(
    "name", ["empty.jpg", "truncated.jpg", "notes.jpg", "huge.png", "tiny.png"]
)
def test_bad_inputs_are_refused_with_their_reason(tmp_path, name):
    expected = bad_files(tmp_path)
    path = str(tmp_path / name)
    with pytest.raises(InvalidImageError) as caught:
        load_rgb(path, LIMITS)
    assert caught.value.reason.startswith(expected[path]), caught.value.reason
    with pytest.raises(InvalidImageError):  # the same verdict on bytes (the service's input)
        load_rgb(Path(path).read_bytes(), LIMITS)


def test_missing_file_and_unsupported_format(tmp_path):
    with pytest.raises(InvalidImageError, match="file not found"):
        load_rgb(tmp_path / "missing.jpg", LIMITS)
    buffer = io.BytesIO()
    pattern(8, (32, 32)).save(buffer, "PPM")  # an image, but not a format we accept
    assert Image.open(io.BytesIO(buffer.getvalue())).size == (32, 32)
    with pytest.raises(InvalidImageError, match="not an image"):
        load_rgb(buffer.getvalue(), LIMITS)


def test_header_cut_short_is_corrupt():
    data = jpeg_bytes(pattern(7, (64, 64)), quality=95)[:300]
    with pytest.raises(InvalidImageError, match="truncated or corrupt"):
        load_rgb(data, LIMITS)


def test_pixel_limit_message_names_size_and_limit(tmp_path):
    path = save(pattern(1, (200, 100)), tmp_path / "big.png")
    with pytest.raises(InvalidImageError, match=r"too large: 200x100 = 20000 pixels > limit 10000"):
        load_rgb(path, LIMITS)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    # Header says 200x100, but the data is cut short: it must fail on size, not on truncation.
    data = save(pattern(2, (200, 100)), tmp_path / "big.png").read_bytes()[:200]
    with pytest.raises(InvalidImageError, match="too large"):
        load_rgb(data, LIMITS)


def test_file_byte_limit(tmp_path):
    data = jpeg_bytes(pattern(3, (64, 64)))
    with pytest.raises(InvalidImageError, match="file too large"):
        load_rgb(data, ImageLimits(max_file_bytes=len(data) - 1))
    assert load_rgb(data, ImageLimits(max_file_bytes=len(data))).size == (64, 64)


def test_pil_decompression_bomb_guard_is_reported(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = jpeg_bytes(pattern(4, (40, 40)))  # 1,600 px: PIL warns, we refuse
    with pytest.raises(InvalidImageError, match="too large"):
        load_rgb(data, ImageLimits())


def test_bytes_and_path_give_the_same_image(tmp_path):
    path = save(pattern(5, (30, 20)), tmp_path / "a.png")
    assert np.array_equal(
        np.asarray(load_rgb(path, LIMITS)), np.asarray(load_rgb(path.read_bytes(), LIMITS))
    )


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways; display rotated 90 degrees clockwise
    data = jpeg_bytes(pattern(6, (60, 30)), exif=exif)
    assert Image.open(io.BytesIO(data)).size == (60, 30)
    assert load_rgb(data, LIMITS).size == (30, 60)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    path = save(Image.fromarray(ramp), tmp_path / "gray16.png")
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(load_rgb(path, LIMITS))
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 32, 3)
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255
    assert 100 < rgb.mean() < 155  # a clipping convert would make almost all of it 255


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:, :10] = (200, 0, 0, 255)  # opaque red left half, transparent black right half
    rgb = np.asarray(load_rgb(save(Image.fromarray(rgba), tmp_path / "a.png"), LIMITS))
    assert tuple(rgb[5, 2]) == (200, 0, 0)
    assert tuple(rgb[5, 15]) == (255, 255, 255)


def test_palette_transparency_is_white(tmp_path):
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (0, 0, 10, 20))
    path = save(palette, tmp_path / "p.png", transparency=0)
    rgb = np.asarray(load_rgb(path, LIMITS))
    assert tuple(rgb[5, 2]) == (0, 0, 255) and tuple(rgb[5, 15]) == (255, 255, 255)


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = save(frames[0], tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert Image.open(path).n_frames == 2
    red, green, blue = np.asarray(load_rgb(path, LIMITS))[10, 10]
    assert red > 200 and blue < 50


def test_cmyk_and_one_bit_become_rgb():
    cmyk = Image.new("CMYK", (20, 20), (0, 255, 255, 0))  # red in CMYK
    red, green, blue = np.asarray(load_rgb(jpeg_bytes(cmyk), LIMITS))[10, 10]
    assert red > 200 and green < 60 and blue < 60
    buffer = io.BytesIO()
    Image.new("1", (20, 20), 1).save(buffer, "PNG")
    assert load_rgb(buffer.getvalue(), LIMITS).mode == "RGB"


def test_letterbox_keeps_aspect_and_pads_with_border_colour():
    img = Image.new("RGB", (40, 20), (10, 200, 30))
    img.paste((255, 0, 0), (15, 5, 25, 15))  # a red product on a green backdrop
    boxed = letterbox(img, 32)
    assert boxed.shape == (32, 32, 3) and boxed.dtype == np.uint8
    assert tuple(boxed[0, 0]) == (10, 200, 30)  # padding: backdrop colour, not black
    assert tuple(boxed[-1, 16]) == (10, 200, 30)
    assert boxed[16, 16, 0] > 200 and boxed[16, 16, 1] < 60  # product still centred
    # 40x20 fits as 32x16: rows 8..23 hold the image, the rest is padding of equal size
    assert not np.array_equal(boxed[8:24], np.broadcast_to(boxed[0, 0], (16, 32, 3)))
