"""Image decoding, RGB conversion and pixel-budget resizing for training and evaluation data.

Every function here takes the image encodings found in the VPPO data sources (see docs/data.md):
``PIL.Image`` objects, ``{"bytes": ..., "path": ...}`` structs (how ``datasets`` stores its ``Image``
feature and how raw parquet holds images), raw encoded ``bytes``, file paths (absolute, or relative
to ``base_dir``) and numpy arrays of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).

Failures raise ``FileNotFoundError`` (missing file) or ``ValueError`` with one sentence that names
the row, the field and, where there is one, the file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

# The one default pixel range of every command (train, eval, analyze, plan) and of the library's
# loaders: PAPO-Eval's, which the paper's evaluation uses. The official training recipes set
# 256 x 28^2 .. 1280 x 28^2 themselves. A model folder's recorded vppo_prompt.json wins over both.
DEFAULT_MIN_PIXELS = 32 * 32
DEFAULT_MAX_PIXELS = 768 * 768

__all__ = [
    "ALPHA_MODES",
    "ROUNDING_MODES",
    "check_image_geometry",
    "describe_location",
    "image_size",
    "pixel_limited_size",
    "prepare_image",
    "resize_to_pixel_limits",
    "to_rgb_image",
]

ALPHA_MODES = ("white", "drop")
"""How transparency is removed: ``white`` composites onto a white background; ``drop`` discards
the alpha channel like the official ``process_image`` (``convert("RGB")``)."""

ROUNDING_MODES = ("bounded", "official")
"""How a rescaled side is rounded to whole pixels (see :func:`pixel_limited_size`)."""

_PIL_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)
_ALPHA_IMAGE_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def describe_location(
    row: int | str | None = None, source: str | os.PathLike | None = None, field: str | None = None
) -> str:
    """Build the prefix of an error message, e.g. ``"row 3 of data/train.jsonl, field 'images'"``."""
    parts = []
    if row is not None:
        parts.append(f"row {row}" if isinstance(row, int) else str(row))
    if source is not None:
        parts.append(f"of {source}" if parts else f"in {source}")
    where = " ".join(parts) if parts else "input"
    return f"{where}, field '{field}'" if field is not None else where


def _where(row, source, field, index) -> str:
    loc = describe_location(row, source, field)
    return f"{loc}, image {index}" if index is not None else loc


def _resolve_path(path: str | os.PathLike, base_dir: str | os.PathLike | None) -> Path:
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return p


def _open(value: Any, base_dir, where: str) -> tuple[Image.Image, str | None]:
    """Open ``value`` lazily (header only); returns the image and the file it came from, if any."""
    path: str | os.PathLike | None = None
    data: bytes | None = None
    if isinstance(value, Image.Image):
        return value, getattr(value, "filename", None) or None
    if isinstance(value, Mapping):
        data = value.get("bytes")
        path = value.get("path")
        if data is None and not path:
            raise ValueError(f"{where} is a struct with neither 'bytes' nor 'path'.")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, (str, os.PathLike)):
        path = value
    elif hasattr(value, "__array__"):
        return _array_to_image(np.asarray(value), where), None
    elif value is None:
        raise ValueError(f"{where} is null, not an image.")
    else:
        raise ValueError(
            f"{where} has unsupported type {type(value).__name__}; expected a PIL image, bytes, "
            "a {'bytes', 'path'} struct, a file path or a numpy array."
        )
    if data is not None:
        if len(data) == 0:
            raise ValueError(f"{where} holds zero bytes, not an image.")
        shown = f" ({path})" if path else ""
        try:
            return Image.open(BytesIO(data)), os.fspath(path) if path else None
        except _PIL_ERRORS as exc:
            raise ValueError(f"{where}{shown} could not be read as an image ({exc}).") from exc
    text = os.fspath(path)
    if text.startswith(("http://", "https://")):
        raise ValueError(f"{where} is a URL ({text}); download the image and pass a local path.")
    resolved = _resolve_path(text, base_dir)
    if resolved.is_dir():
        raise ValueError(f"{where} names a folder, not an image file: {resolved}.")
    if resolved.exists() and not resolved.is_file():
        raise ValueError(
            f"{where} names {resolved}, which is not a regular file (a device or a pipe)."
        )
    if not resolved.is_file():
        raise FileNotFoundError(f"{where} refers to a missing image file: {resolved}.")
    try:
        return Image.open(resolved), str(resolved)
    except _PIL_ERRORS as exc:
        raise ValueError(f"{where} could not be read as an image from {resolved} ({exc}).") from exc


def _array_to_image(arr: np.ndarray, where: str) -> Image.Image:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(
            f"{where} is an array of shape {tuple(arr.shape)}; expected (H, W), (H, W, 1), "
            "(H, W, 3) or (H, W, 4) (channels last)."
        )
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.float64) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"{where} is a float array containing NaN or infinity.")
        scale = 255.0 if arr.size and float(arr.max()) <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"{where} is an array of dtype {arr.dtype}, not a numeric image.")
    return Image.fromarray(np.ascontiguousarray(arr))


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer and float grayscale ("I;16", "I", "F") to 8-bit "L"."""
    arr = np.asarray(img)
    if img.mode == "F":
        scale = 255.0 if arr.size and float(np.nanmax(arr)) <= 1.0 else 1.0
        arr = np.nan_to_num(arr.astype(np.float64) * scale)
    elif arr.size and int(arr.max()) > 255:
        arr = arr.astype(np.float64) / 257.0  # 16-bit range onto 8 bits
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), mode="L")


def _convert_rgb(img: Image.Image, alpha: str, where: str) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return _high_bit_depth_to_l(img).convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    try:
        if mode in _ALPHA_IMAGE_MODES:
            if alpha == "drop":
                return img.convert("RGB")
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ValueError(
            f"{where} has image mode {mode!r}, which cannot be converted to RGB ({exc})."
        ) from exc


def to_rgb_image(
    value: Any,
    *,
    base_dir: str | os.PathLike | None = None,
    row: int | str | None = None,
    field: str = "images",
    source: str | os.PathLike | None = None,
    index: int | None = None,
    alpha: str = "white",
) -> Image.Image:
    """Decode one image from any supported encoding and return it as an 8-bit RGB ``PIL.Image``.

    Args:
        value: a PIL image, ``{"bytes", "path"}`` struct (bytes win when both are set), raw encoded
            bytes, a file path, or a numpy array (H, W[, C]) with C in {1, 3, 4}; float arrays with
            max <= 1 are scaled by 255, uint16 arrays by 255/65535.
        base_dir: directory that relative paths are resolved against (default: the working dir).
        row, field, source, index: where the value came from, used only in error messages.
        alpha: ``"white"`` composites transparent images (RGBA, LA, palette with transparency) onto
            white; ``"drop"`` discards alpha like the official code, which turns transparent pixels
            into whatever colour they store (often black).

    Returns:
        ``PIL.Image`` in mode ``"RGB"``, fully loaded (no open file handle left behind).

    Grayscale, palette, CMYK, YCbCr and 16-bit images are converted; 16-bit values are mapped
    onto 0..255.
    """
    if alpha not in ALPHA_MODES:
        raise ValueError(f"alpha must be one of {ALPHA_MODES}, got {alpha!r}.")
    where = _where(row, source, field, index)
    img, path = _open(value, base_dir, where)
    shown = f" ({path})" if path else ""
    try:
        img.load()
    except _PIL_ERRORS as exc:
        raise ValueError(
            f"{where}{shown} could not be decoded; the image data is corrupt ({exc})."
        ) from exc
    return _convert_rgb(img, alpha, where + shown)


def image_size(
    value: Any,
    *,
    base_dir: str | os.PathLike | None = None,
    decode: bool = False,
    row: int | str | None = None,
    field: str = "images",
    source: str | os.PathLike | None = None,
    index: int | None = None,
) -> tuple[int, int]:
    """(width, height) of an image, reading only its header unless ``decode=True``.

    Missing files and data that is not an image fail here, so a dataset can be checked without
    decoding every pixel; ``decode=True`` also catches truncated or corrupt pixel data.
    """
    where = _where(row, source, field, index)
    img, path = _open(value, base_dir, where)
    if decode:
        try:
            img.load()
        except _PIL_ERRORS as exc:
            shown = f" ({path})" if path else ""
            raise ValueError(
                f"{where}{shown} could not be decoded; the image data is corrupt ({exc})."
            ) from exc
    width, height = img.size
    if path is not None and not isinstance(value, Image.Image):
        img.close()
    return int(width), int(height)


def _check_limits(min_pixels: int | None, max_pixels: int | None) -> None:
    for name, val in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if val is not None and (isinstance(val, bool) or not isinstance(val, int) or val <= 0):
            raise ValueError(f"{name} must be a positive integer or None, got {val!r}.")
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels}).")


def pixel_limited_size(
    width: int,
    height: int,
    min_pixels: int | None,
    max_pixels: int | None,
    rounding: str = "bounded",
) -> tuple[int, int]:
    """Target (width, height) whose area lies in [min_pixels, max_pixels], same aspect ratio.

    Both sides are multiplied by one factor f = sqrt(limit / (width * height)), as in the official
    ``process_image``: by sqrt(max_pixels / area) when the image is too large, by
    sqrt(min_pixels / area) when it is too small; images already inside the range keep their size.

    rounding:
        ``"bounded"`` (default) rounds down when shrinking and up when growing, so the result is
        always inside the range (when the range is narrower than one rounding step, max_pixels wins).
        ``"official"`` truncates both sides with ``int()`` like the official code; a grown image can
        then end a few pixels short of min_pixels.

    Returns:
        (new_width, new_height), each >= 1.
    """
    _check_limits(min_pixels, max_pixels)
    if rounding not in ROUNDING_MODES:
        raise ValueError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}.")
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}.")
    w, h = int(width), int(height)
    if rounding == "official":
        if max_pixels is not None and w * h > max_pixels:
            f = math.sqrt(max_pixels / (w * h))
            w, h = max(1, int(w * f)), max(1, int(h * f))
        if min_pixels is not None and w * h < min_pixels:
            f = math.sqrt(min_pixels / (w * h))
            w, h = int(w * f), int(h * f)
        return w, h
    if max_pixels is not None and w * h > max_pixels:
        return _shrink(w, h, max_pixels)
    if min_pixels is not None and w * h < min_pixels:
        f = math.sqrt(min_pixels / (w * h))
        # the epsilon keeps an exact product such as 447.99999999 from rounding up to 449
        nw, nh = math.ceil(w * f - 1e-6), math.ceil(h * f - 1e-6)
        if nw * nh < min_pixels:
            nw, nh = math.ceil(w * f), math.ceil(h * f)
        if max_pixels is not None and nw * nh > max_pixels:
            return _shrink(w, h, max_pixels)
        return nw, nh
    return w, h


def _shrink(w: int, h: int, max_pixels: int) -> tuple[int, int]:
    f = math.sqrt(max_pixels / (w * h))
    nw, nh = math.floor(w * f + 1e-6), math.floor(h * f + 1e-6)
    if nw * nh > max_pixels:
        nw, nh = math.floor(w * f), math.floor(h * f)
    return max(1, nw), max(1, nh)


def resize_to_pixel_limits(
    img: Image.Image,
    min_pixels: int | None,
    max_pixels: int | None,
    *,
    rounding: str = "bounded",
    resample: Image.Resampling = Image.Resampling.BICUBIC,
) -> Image.Image:
    """Rescale ``img`` so that min_pixels <= width * height <= max_pixels, keeping aspect ratio.

    The target size comes from :func:`pixel_limited_size`; ``None`` disables a bound. Bicubic
    resampling is Pillow's default for ``Image.resize``, which the official code relies on.
    Returns ``img`` itself when no resize is needed.
    """
    size = pixel_limited_size(img.width, img.height, min_pixels, max_pixels, rounding)
    if size == img.size:
        return img
    return img.resize(size, resample=resample)


def check_image_geometry(
    width: int,
    height: int,
    *,
    min_side: int | None = 28,
    max_aspect_ratio: float | None = 200.0,
    row: int | str | None = None,
    field: str = "images",
    source: str | os.PathLike | None = None,
    index: int | None = None,
    path: str | None = None,
) -> None:
    """Reject images a vision encoder cannot use: a side shorter than ``min_side`` (one 28-px
    Qwen2.5-VL merged patch by default) or a long/short side ratio above ``max_aspect_ratio``
    (Qwen-VL processors refuse ratios above 200). Call it with the size after resizing."""
    where = _where(row, source, field, index) + (f" ({path})" if path else "")
    if min_side is not None and min(width, height) < min_side:
        raise ValueError(
            f"{where} is {width}x{height} px after resizing, smaller than one {min_side}-px patch "
            "on its short side; raise min_pixels or drop the image."
        )
    if max_aspect_ratio is not None and max(width, height) > max_aspect_ratio * min(width, height):
        raise ValueError(
            f"{where} is {width}x{height} px, an aspect ratio above the limit of {max_aspect_ratio:g}."
        )


def prepare_image(
    value: Any,
    *,
    min_pixels: int | None = DEFAULT_MIN_PIXELS,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_side: int | None = 28,
    max_aspect_ratio: float | None = 200.0,
    alpha: str = "white",
    rounding: str = "bounded",
    base_dir: str | os.PathLike | None = None,
    row: int | str | None = None,
    field: str = "images",
    source: str | os.PathLike | None = None,
    index: int | None = None,
) -> Image.Image:
    """Decode, convert to RGB, resize into the pixel range and check the geometry of one image.

    This is what the training loader applies to every image when a row is read; the evaluation
    layer uses it too, so train and eval images are prepared identically.
    """
    img = to_rgb_image(
        value, base_dir=base_dir, row=row, field=field, source=source, index=index, alpha=alpha
    )
    img = resize_to_pixel_limits(img, min_pixels, max_pixels, rounding=rounding)
    check_image_geometry(
        img.width,
        img.height,
        min_side=min_side,
        max_aspect_ratio=max_aspect_ratio,
        row=row,
        field=field,
        source=source,
        index=index,
    )
    return img
