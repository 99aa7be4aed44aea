"""Placing objects in a scene's cells and drawing scenes to pixels and PNG bytes.

Pixels are drawn with our own numpy rasteriser and the 3×5 bitmap font of
:data:`~vppo.data.synthetic.common.GLYPHS`, without anti-aliasing, so the pixels are identical on
every machine and Pillow version and every pixel has an exact palette colour.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Mapping
from functools import cache
from typing import Any

import numpy as np

from vppo.data.synthetic.common import (
    BACKGROUND,
    CELL_MARGIN,
    CELL_SIZE,
    DIGIT_SCALE,
    GLYPHS,
    INK,
    PALETTE,
    SHAPE_KINDS,
    SHAPE_SIZES,
    _below,
    _choice,
)

_RGB: dict[str, np.ndarray] = {
    name: np.array(rgb, dtype=np.uint8)
    for name, rgb in {**PALETTE, "background": BACKGROUND, "ink": INK}.items()
}


# --------------------------------------------------------------------------------------------
# Scene objects: what is drawn where
# --------------------------------------------------------------------------------------------


def _offset(rng: random.Random, extent: int) -> int:
    """A random offset inside a cell for an object ``extent`` px long, keeping the margins."""
    return CELL_MARGIN + _below(rng, CELL_SIZE - extent - 2 * CELL_MARGIN + 1)


def _shape(rng: random.Random, kind: str, colour: str, cell: tuple[int, int]) -> dict[str, Any]:
    size = _choice(rng, SHAPE_SIZES)
    return {
        "kind": kind,
        "colour": colour,
        "row": cell[0],
        "col": cell[1],
        "size": size,
        "dx": _offset(rng, size),
        "dy": _offset(rng, size),
    }


def _digit(rng: random.Random, value: int, cell: tuple[int, int]) -> dict[str, Any]:
    return {
        "value": value,
        "row": cell[0],
        "col": cell[1],
        "dx": _offset(rng, 3 * DIGIT_SCALE),
        "dy": _offset(rng, 5 * DIGIT_SCALE),
    }


def _rejitter(rng: random.Random, scene: dict[str, Any]) -> None:
    """Redraw every object's offset inside its cell (in place); everything else stays."""
    for shape in scene["shapes"]:
        shape["dx"] = _offset(rng, shape["size"])
        shape["dy"] = _offset(rng, shape["size"])
    for digit in scene["digits"]:
        digit["dx"] = _offset(rng, 3 * DIGIT_SCALE)
        digit["dy"] = _offset(rng, 5 * DIGIT_SCALE)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@cache
def _shape_mask(kind: str, size: int) -> np.ndarray:
    """Boolean [size, size] mask of a solid shape, without anti-aliasing."""
    ys, xs = np.mgrid[0:size, 0:size]
    centre_x = xs + 0.5 - size / 2  # pixel-centre offsets from the box centre
    centre_y = ys + 0.5 - size / 2
    if kind == "square":
        mask = np.ones((size, size), dtype=bool)
    elif kind == "circle":
        mask = centre_x**2 + centre_y**2 <= (size / 2) ** 2
    elif kind == "triangle":  # apex up; the half-width grows by half a pixel per row
        mask = np.abs(centre_x) <= (ys + 1) / 2
    else:
        raise ValueError(f"shape kind must be one of {list(SHAPE_KINDS)}, got {kind!r}.")
    mask.setflags(write=False)
    return mask


@cache
def _digit_mask(value: int) -> np.ndarray:
    """Boolean [5·DIGIT_SCALE, 3·DIGIT_SCALE] mask of a bitmap digit."""
    if value not in GLYPHS:
        raise ValueError(f"digit value must be in 0..9, got {value!r}.")
    glyph = np.array([[ch == "#" for ch in row] for row in GLYPHS[value]], dtype=bool)
    mask = np.kron(glyph, np.ones((DIGIT_SCALE, DIGIT_SCALE), dtype=bool))
    mask.setflags(write=False)
    return mask


def render_scene(scene: Mapping[str, Any]) -> np.ndarray:
    """Draw a scene.

    Returns:
        uint8 array [H, W, 3] with H = W = grid·CELL_SIZE; every pixel is the background, the
        digit ink or a palette colour.
    """
    size = scene["grid"] * CELL_SIZE
    pixels = np.empty((size, size, 3), dtype=np.uint8)
    pixels[...] = _RGB["background"]  # numpy arrays, not tuples: ~10x faster to broadcast
    for shape in scene["shapes"]:
        mask = _shape_mask(shape["kind"], shape["size"])
        y0 = shape["row"] * CELL_SIZE + shape["dy"]
        x0 = shape["col"] * CELL_SIZE + shape["dx"]
        pixels[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]][mask] = _RGB[shape["colour"]]
    for digit in scene["digits"]:
        mask = _digit_mask(digit["value"])
        y0 = digit["row"] * CELL_SIZE + digit["dy"]
        x0 = digit["col"] * CELL_SIZE + digit["dx"]
        pixels[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]][mask] = _RGB["ink"]
    return pixels


def _png_bytes(pixels: np.ndarray) -> bytes:
    """Encode uint8 [H, W, 3] pixels as an 8-bit RGB PNG.

    A direct writer (no row filters, zlib level 6): much faster than going through PIL for these
    tiny images, and the bytes depend only on the pixels and zlib.
    """
    height, width, _ = pixels.shape
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # filter byte 0 (None) per row
    rows[:, 1:] = pixels.reshape(height, 3 * width)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit, truecolour RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )
