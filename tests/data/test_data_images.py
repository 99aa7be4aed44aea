"""vppo.data.images: decoding every supported encoding, RGB conversion, pixel-budget resizing."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vppo.data.images import (
    check_image_geometry,
    image_size,
    pixel_limited_size,
    prepare_image,
    resize_to_pixel_limits,
    to_rgb_image,
)


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


RED = Image.new("RGB", (40, 30), (255, 0, 0))


# ----------------------------------------------------------------------------- encodings


def test_all_encodings_decode_to_the_same_rgb_pixels(tmp_path):
    data = _encode(RED)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "red.png").write_bytes(data)
    values = [
        RED,
        data,
        {"bytes": data, "path": None},
        {"bytes": data, "path": "ignored-when-bytes-are-set.png"},
        {"bytes": None, "path": "sub/red.png"},
        "sub/red.png",
        tmp_path / "sub" / "red.png",
        np.asarray(RED),
    ]
    for value in values:
        img = to_rgb_image(value, base_dir=tmp_path)
        assert img.mode == "RGB" and img.size == (40, 30)
        assert np.array_equal(np.asarray(img), np.asarray(RED)), type(value)


def test_numpy_arrays_of_each_layout_and_dtype():
    gray = np.full((5, 7), 100, dtype=np.uint8)
    assert np.asarray(to_rgb_image(gray))[0, 0].tolist() == [100, 100, 100]
    assert to_rgb_image(gray[:, :, None]).size == (7, 5)
    unit = np.full((5, 7, 3), 0.5, dtype=np.float32)
    assert np.asarray(to_rgb_image(unit))[0, 0].tolist() == [128, 128, 128]
    deep = np.full((5, 7), 65535, dtype=np.uint16)
    assert np.asarray(to_rgb_image(deep))[0, 0].tolist() == [255, 255, 255]
    rgba = np.zeros((5, 7, 4), dtype=np.uint8)  # fully transparent black
    assert np.asarray(to_rgb_image(rgba))[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match=r"shape \(3, 5, 7\).*channels last"):
        to_rgb_image(np.zeros((3, 5, 7), dtype=np.uint8))


def test_mode_conversions():
    # RGBA: transparent pixels composite onto white by default; "drop" keeps the stored colour.
    rgba = Image.new("RGBA", (30, 30), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    white = to_rgb_image(rgba)
    assert white.getpixel((5, 5)) == (255, 255, 255) and white.getpixel((0, 0)) == (10, 20, 30)
    assert to_rgb_image(rgba, alpha="drop").getpixel((5, 5)) == (0, 0, 0)
    half = to_rgb_image(Image.new("RGBA", (2, 2), (0, 0, 0, 128)))
    assert half.getpixel((0, 0)) == (127, 127, 127)
    # grayscale, 1-bit, palette (with and without transparency), CMYK, 16-bit grayscale
    assert to_rgb_image(Image.new("L", (3, 3), 77)).getpixel((1, 1)) == (77, 77, 77)
    assert to_rgb_image(Image.new("1", (3, 3), 1)).getpixel((1, 1)) == (255, 255, 255)
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 0, 128, 255] + [0, 0, 0] * 254)
    assert to_rgb_image(_encode(pal)).getpixel((0, 0)) == (0, 128, 255)
    pal_t = Image.new("P", (4, 4), 3)
    pal_t.putpalette([0, 0, 0] * 3 + [200, 10, 10] + [0, 0, 0] * 252)
    pal_t.info["transparency"] = 3
    assert to_rgb_image(pal_t).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb_image(pal_t, alpha="drop").getpixel((0, 0)) == (200, 10, 10)
    cmyk = Image.new("CMYK", (3, 3), (0, 255, 255, 0))
    assert to_rgb_image(cmyk).getpixel((0, 0)) == (255, 0, 0)
    deep = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert to_rgb_image(_encode(deep)).getpixel((0, 0)) == (255, 255, 255)


def test_bad_values_name_the_row_field_and_file(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"row 4 of train\.jsonl, field 'images', image 1 .*nope\.png"
    ):
        to_rgb_image("nope.png", base_dir=tmp_path, row=4, source="train.jsonl", index=1)
    with pytest.raises(ValueError, match=r"row 2, field 'pic' could not be read as an image"):
        to_rgb_image(b"not an image at all", row=2, field="pic")
    with pytest.raises(ValueError, match="zero bytes"):
        to_rgb_image(b"")
    with pytest.raises(ValueError, match="neither 'bytes' nor 'path'"):
        to_rgb_image({"bytes": None, "path": None})
    with pytest.raises(ValueError, match="is null"):
        to_rgb_image(None)
    with pytest.raises(ValueError, match="URL"):
        to_rgb_image("https://example.com/a.png")
    with pytest.raises(ValueError, match="unsupported type int"):
        to_rgb_image(3)
    with pytest.raises(ValueError, match="alpha must be one of"):
        to_rgb_image(RED, alpha="black")


def test_truncated_image_passes_the_header_check_but_not_decoding(tmp_path):
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = _encode(noisy)[:400]
    assert image_size(data) == (64, 64)
    with pytest.raises(ValueError, match="corrupt"):
        image_size(data, decode=True, row=7)
    with pytest.raises(ValueError, match=r"row 7, field 'images' could not be decoded"):
        to_rgb_image(data, row=7)


# ----------------------------------------------------------------------------- resizing

LIMIT_MIN, LIMIT_MAX = 256 * 28 * 28, 1280 * 28 * 28


@settings(max_examples=100, deadline=None)
@given(
    w=st.integers(1, 5000),
    h=st.integers(1, 5000),
    lo=st.integers(1, 400_000),
    span=st.integers(0, 2_000_000),
)
def test_bounded_size_lands_in_range_and_keeps_aspect(w, h, lo, span):
    hi = lo + span
    nw, nh = pixel_limited_size(w, h, lo, hi)
    area = w * h
    if lo <= area <= hi:
        assert (nw, nh) == (w, h)
        return
    # each side is the side scaled by sqrt(bound / area), rounded one way or the other; growing
    # falls back to the max_pixels scale when rounding up would overshoot a narrow range
    scales = [math.sqrt(hi / area)] + ([math.sqrt(lo / area)] if area < lo else [])
    assert any(abs(nw - w * f) < 1 + 1e-6 and abs(nh - h * f) < 1 + 1e-6 for f in scales)
    f = scales[-1]
    if w * f >= 1 and h * f >= 1:  # below one pixel a side is clamped to 1 and the bound can break
        assert nw * nh <= hi
    if area < lo and math.ceil(w * f) * math.ceil(h * f) <= hi:
        assert nw * nh >= lo


def test_official_rounding_truncates_and_may_fall_short_of_min_pixels():
    # 3x7 needs f = sqrt(200704/21) = 97.76: sides 293.28 and 684.33
    assert pixel_limited_size(3, 7, LIMIT_MIN, LIMIT_MAX, rounding="official") == (293, 684)
    assert 293 * 684 < LIMIT_MIN
    assert pixel_limited_size(3, 7, LIMIT_MIN, LIMIT_MAX) == (294, 685)
    # shrinking: 2000x1000 scales by sqrt(1003520/2e6) to 1416.70 x 708.35
    assert pixel_limited_size(2000, 1000, LIMIT_MIN, LIMIT_MAX, rounding="official") == (1416, 708)
    assert pixel_limited_size(2000, 1000, LIMIT_MIN, LIMIT_MAX) == (1416, 708)
    assert pixel_limited_size(100, 100, LIMIT_MIN, LIMIT_MAX) == (448, 448)  # exact, no overshoot


def test_resize_to_pixel_limits_on_images():
    big = Image.new("RGB", (2000, 1000), (1, 2, 3))
    small = Image.new("RGB", (50, 20), (1, 2, 3))
    inside = Image.new("RGB", (500, 500))
    out = resize_to_pixel_limits(big, LIMIT_MIN, LIMIT_MAX)
    assert out.size == (1416, 708) and out.getpixel((700, 300)) == (1, 2, 3)
    up = resize_to_pixel_limits(small, LIMIT_MIN, LIMIT_MAX)
    assert LIMIT_MIN <= up.width * up.height <= LIMIT_MAX
    assert abs(up.width / up.height - 2.5) < 0.01
    assert resize_to_pixel_limits(inside, LIMIT_MIN, LIMIT_MAX) is inside
    assert resize_to_pixel_limits(small, None, None) is small
    with pytest.raises(ValueError, match=r"min_pixels \(10\) must not exceed max_pixels \(5\)"):
        resize_to_pixel_limits(small, 10, 5)
    with pytest.raises(ValueError, match="rounding must be one of"):
        resize_to_pixel_limits(small, 10, 50, rounding="nearest")


def test_geometry_checks_and_prepare_image():
    with pytest.raises(
        ValueError, match=r"row 3, field 'images', image 0 is 20x20 px .* 28-px patch"
    ):
        check_image_geometry(20, 20, row=3, index=0)
    with pytest.raises(ValueError, match="aspect ratio above the limit of 200"):
        check_image_geometry(28 * 201, 28)
    check_image_geometry(28, 28)
    tiny = Image.new("L", (20, 20), 9)
    # no lower pixel bound: the 20x20 image stays below one patch and is refused
    with pytest.raises(ValueError, match="smaller than one 28-px patch"):
        prepare_image(tiny, min_pixels=None)
    # with the official recipes' lower bound it is upscaled to 448x448 and accepted
    img = prepare_image(tiny, min_pixels=256 * 28 * 28)
    assert img.mode == "RGB" and img.size == (448, 448)
    # the default range is every command's (32^2 .. 768^2): upscaled to 32x32
    assert prepare_image(tiny).size == (32, 32)
