"""Image perturbations that make an "uninformative" copy I' of the visual input.

Two families:

* **Processed-pixel space** (default, used by the trainer): :func:`blacken_patches` works on
  the ``pixel_values`` tensor that a Hugging Face image processor already produced, so the
  blackened squares line up exactly with the vision encoder's patches and no second processor
  run is needed. "Black" is the normalised value of a 0-intensity pixel,
  ``(0 - image_mean[c]) / image_std[c]`` (:func:`black_value`), not 0.
* **Image space** (the official VPPO code's behaviour): functions on ``PIL.Image`` objects that
  return a perturbed RGB image, to be fed through the processor again. They are collected in
  :data:`IMAGE_PERTURBATIONS` and dispatched by :func:`perturb_image`.

Everything here is pure torch / numpy / PIL; nothing imports transformers or TRL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from vppo._tensor_checks import positive_int
from vppo.perception.no_image import NO_IMAGE

__all__ = [
    "IMAGE_PERTURBATIONS",
    "LAYOUTS",
    "PERTURBATIONS",
    "PIXEL_PERTURBATIONS",
    "black_value",
    "blacken_image_patches",
    "blacken_patches",
    "gaussian_blur",
    "gaussian_noise",
    "perturb_image",
    "perturb_pixel_values",
    "qwen_row_positions",
    "solid_grey",
]

LAYOUTS = ("qwen_flat", "nchw", "bnchw")
"""Names accepted by :func:`blacken_patches` for the ``layout`` argument."""

_DEFAULT_SQUARE_PATCH = 14
_DEFAULT_TEMPORAL_PATCH = 2


# --------------------------------------------------------------------------------------------
# Processed-pixel space
# --------------------------------------------------------------------------------------------


def black_value(
    image_mean: Sequence[float] | torch.Tensor, image_std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Normalised value of a black (0-intensity) pixel, per channel.

    Args:
        image_mean: per-channel mean used by the image processor, length C
            (e.g. CLIP ``[0.4815, 0.4578, 0.4082]`` for Qwen2/2.5-VL, ``[0.5]*3`` for SmolVLM).
        image_std: per-channel standard deviation, length C, all non-zero.

    Returns:
        float32 tensor [C] equal to ``(0 - image_mean) / image_std``, computed in float32 the
        way the processors' NumPy normalisation does, so a processed black pixel matches it
        bit for bit (CLIP statistics give ``[-1.7923, -1.7521, -1.4802]``).
    """
    mean = torch.as_tensor(image_mean, dtype=torch.float32).reshape(-1).cpu()
    std = torch.as_tensor(image_std, dtype=torch.float32).reshape(-1).cpu()
    if mean.numel() == 0 or mean.numel() != std.numel():
        raise ValueError(
            f"image_mean and image_std must be non-empty and of equal length, got "
            f"{mean.numel()} and {std.numel()} values."
        )
    if not bool(torch.isfinite(mean).all()) or not bool(torch.isfinite(std).all()):
        raise ValueError("image_mean and image_std must contain only finite values.")
    if bool((std == 0).any()):
        raise ValueError(f"image_std must be non-zero in every channel, got {std.tolist()}.")
    return (torch.zeros_like(mean) - mean) / std


def qwen_row_positions(
    grid_thw: torch.Tensor | Sequence[Sequence[int]], merge_size: int = 2
) -> torch.Tensor:
    """Map each row of Qwen2/2.5/3-VL ``pixel_values`` to its patch position in its image.

    Qwen-VL processors flatten the patches of every image into rows ordered
    ``(t, h // m, w // m, mh, mw)`` with ``m = merge_size``, so that each run of ``m*m``
    consecutive rows is one merged LLM image token. Images are concatenated along the rows in
    the order of ``grid_thw``.

    Args:
        grid_thw: integer tensor or nested list [num_images, 3] with ``(t, h, w)`` in patches per
            image (the processor's ``image_grid_thw``); ``h`` and ``w`` divisible by
            ``merge_size``.
        merge_size: the processor's ``merge_size`` (2 for Qwen2/2.5/3-VL).

    Returns:
        LongTensor [sum(t*h*w), 3]: ``(t_idx, h_idx, w_idx)`` per row, where ``h_idx``/``w_idx``
        index ``patch_size``-pixel squares of the resized image from its top-left corner. Use it
        to see which image squares a row mask from :func:`blacken_patches` blackened.
    """
    grid = torch.as_tensor(grid_thw, dtype=torch.long).cpu()
    if grid.ndim != 2 or grid.shape[1] != 3:
        raise ValueError(f"grid_thw must have shape [num_images, 3], got {tuple(grid.shape)}.")
    positive_int(merge_size, "merge_size")
    pieces = []
    for i, (t, h, w) in enumerate(grid.tolist()):
        if t < 1 or h < 1 or w < 1 or h % merge_size or w % merge_size:
            raise ValueError(
                f"grid_thw row {i} is {(t, h, w)}: t, h and w must be positive and h, w "
                f"divisible by merge_size={merge_size}."
            )
        ti, bh, bw, mh, mw = torch.meshgrid(
            torch.arange(t),
            torch.arange(h // merge_size),
            torch.arange(w // merge_size),
            torch.arange(merge_size),
            torch.arange(merge_size),
            indexing="ij",
        )
        h_idx = bh * merge_size + mh
        w_idx = bw * merge_size + mw
        pieces.append(torch.stack([ti, h_idx, w_idx], dim=-1).reshape(-1, 3))
    if not pieces:
        return torch.zeros(0, 3, dtype=torch.long)
    return torch.cat(pieces, dim=0)


def _draw_mask(
    shape: tuple[int, ...], prob: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Bernoulli(prob) boolean mask of ``shape`` on ``device``, drawn from ``generator``."""
    draw_device = generator.device if generator is not None else device
    mask = torch.rand(shape, generator=generator, device=draw_device) < prob
    return mask.to(device)


def _check_prob(prob: float) -> float:
    prob = float(prob)
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}.")
    return prob


def _blacken_qwen_flat(
    pixel_values: torch.Tensor,
    black: torch.Tensor,
    prob: float,
    generator: torch.Generator | None,
    patch_size: int | None,
    temporal_patch_size: int | None,
    num_channels: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    if pixel_values.ndim != 2:
        raise ValueError(
            "pixel_values for layout 'qwen_flat' must have shape [rows, C*T*P*P], got "
            f"{tuple(pixel_values.shape)}."
        )
    num_channels = positive_int(num_channels, "num_channels")
    temporal = positive_int(
        _DEFAULT_TEMPORAL_PATCH if temporal_patch_size is None else temporal_patch_size,
        "temporal_patch_size",
    )
    features = pixel_values.shape[1]
    if patch_size is None:
        per_pixel = features / (num_channels * temporal)
        patch_size = math.isqrt(int(per_pixel)) if per_pixel == int(per_pixel) else 0
        if patch_size < 1:
            raise ValueError(
                f"pixel_values has {features} features per row, which is not "
                f"num_channels*temporal_patch_size*P*P for any integer P "
                f"(num_channels={num_channels}, temporal_patch_size={temporal})."
            )
    patch_size = positive_int(patch_size, "patch_size")
    expected = num_channels * temporal * patch_size * patch_size
    if expected != features:
        raise ValueError(
            f"pixel_values has {features} features per row but num_channels*temporal_patch_size*"
            f"patch_size**2 = {num_channels}*{temporal}*{patch_size}**2 = {expected}."
        )
    if black.numel() != num_channels:
        raise ValueError(
            f"image_mean/image_std have {black.numel()} channels but num_channels is "
            f"{num_channels}."
        )
    # Features are channel-major [C][T][P][P]: each channel's value fills T*P*P slots.
    black_row = black.repeat_interleave(temporal * patch_size * patch_size)
    black_row = black_row.to(device=pixel_values.device, dtype=pixel_values.dtype)
    mask = _draw_mask((pixel_values.shape[0],), prob, generator, pixel_values.device)
    perturbed = torch.where(mask[:, None], black_row[None, :], pixel_values)
    return perturbed, mask


def _blacken_squares(
    pixel_values: torch.Tensor,
    black: torch.Tensor,
    prob: float,
    generator: torch.Generator | None,
    patch_size: int | None,
    pixel_attention_mask: torch.Tensor | None,
    layout: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    expected_ndim = 4 if layout == "nchw" else 5
    if pixel_values.ndim != expected_ndim:
        shape_name = "[N, C, H, W]" if layout == "nchw" else "[B, N, C, H, W]"
        raise ValueError(
            f"pixel_values for layout '{layout}' must have shape {shape_name}, got "
            f"{tuple(pixel_values.shape)}."
        )
    patch = positive_int(_DEFAULT_SQUARE_PATCH if patch_size is None else patch_size, "patch_size")
    *lead, channels, height, width = pixel_values.shape
    if black.numel() != channels:
        raise ValueError(
            f"image_mean/image_std have {black.numel()} channels but pixel_values has "
            f"{channels} channels (dimension -3)."
        )
    if height == 0 or width == 0:
        raise ValueError(f"pixel_values images are empty: H={height}, W={width}.")
    grid_h, grid_w = -(-height // patch), -(-width // patch)

    # A padding image is all zeros or fully masked out; it must stay exactly as it is so the
    # model still recognises it as padding.
    is_padding = (pixel_values == 0).flatten(start_dim=-3).all(dim=-1)
    pixel_valid = None
    if pixel_attention_mask is not None:
        if tuple(pixel_attention_mask.shape) != (*lead, height, width):
            raise ValueError(
                f"pixel_attention_mask must have shape {(*lead, height, width)} to match "
                f"pixel_values {tuple(pixel_values.shape)}, got "
                f"{tuple(pixel_attention_mask.shape)}."
            )
        pixel_valid = pixel_attention_mask.to(device=pixel_values.device) != 0
        is_padding = is_padding | ~pixel_valid.flatten(start_dim=-2).any(dim=-1)

    mask = _draw_mask((*lead, grid_h, grid_w), prob, generator, pixel_values.device)
    mask = mask & ~is_padding[..., None, None]
    pixel_mask = mask.repeat_interleave(patch, dim=-2).repeat_interleave(patch, dim=-1)
    pixel_mask = pixel_mask[..., :height, :width]
    if pixel_valid is not None:
        # Pixels outside the attention mask are padding inside a real image; leave them be.
        pixel_mask = pixel_mask & pixel_valid
    fill = black.to(device=pixel_values.device, dtype=pixel_values.dtype)[:, None, None]
    perturbed = torch.where(pixel_mask.unsqueeze(-3), fill, pixel_values)
    return perturbed, mask


def blacken_patches(
    pixel_values: torch.Tensor,
    layout: str,
    image_mean: Sequence[float] | torch.Tensor,
    image_std: Sequence[float] | torch.Tensor,
    prob: float = 0.5,
    generator: torch.Generator | None = None,
    *,
    patch_size: int | None = None,
    temporal_patch_size: int | None = None,
    num_channels: int = 3,
    pixel_attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly blacken patches of processed ``pixel_values`` (VPPO's default perturbation I').

    Each patch is replaced, independently with probability ``prob``, by the processor's
    normalised black value ``(0 - image_mean[c]) / image_std[c]`` (see :func:`black_value`).
    The input is never modified; a new tensor of the same shape, dtype and device is returned.

    Layouts:
        ``"qwen_flat"``: Qwen2/2.5/3-VL ``pixel_values`` [rows, C*T*P*P], one ViT patch per row,
            features channel-major ``[C][T][P][P]``. One Bernoulli draw per row, so the
            blackened squares are exactly the ViT patches (14 px for Qwen2/2.5-VL, 16 px for
            Qwen3-VL). ``temporal_patch_size`` T defaults to 2 and ``patch_size`` P to
            ``sqrt(features / (C*T))``; ``num_channels`` C defaults to 3. Map rows to image
            positions with :func:`qwen_row_positions`. Returned mask: bool [rows].
        ``"nchw"``: [N, C, H, W] images (LLaVA-style). ``"bnchw"``: [B, N, C, H, W] (Idefics3 /
            SmolVLM). Independent ``patch_size`` x ``patch_size`` squares (default 14; pass the
            vision encoder's patch size to align with it), grid anchored at (0, 0), edge
            squares truncated. Returned mask: bool [N, gh, gw] or [B, N, gh, gw] with
            ``gh = ceil(H / patch_size)``, ``gw = ceil(W / patch_size)``.
            Padding images (every value exactly 0, or ``pixel_attention_mask`` all False) are
            never touched and get an all-False mask row; pixels where ``pixel_attention_mask``
            (shape [N, H, W] / [B, N, H, W]) is False are left unchanged as well.

    Per-response masks: every row / image gets its own draw, so when each completion carries
    its own copy of the image rows (as TRL's GRPO batches do), each response gets its own mask.
    A seeded ``generator`` makes the masks reproducible; the mask is drawn on the generator's
    device and moved to ``pixel_values``' device.

    Args:
        pixel_values: floating tensor in the layout named by ``layout``.
        layout: one of ``"qwen_flat"``, ``"nchw"``, ``"bnchw"``.
        image_mean: processor ``image_mean`` (length C).
        image_std: processor ``image_std`` (length C).
        prob: probability of blackening each patch, in [0, 1] (paper: 0.5).
        generator: optional ``torch.Generator`` for the Bernoulli draws.
        patch_size: patch side in pixels (see layouts for defaults).
        temporal_patch_size: ``"qwen_flat"`` only; default 2.
        num_channels: ``"qwen_flat"`` only; default 3.
        pixel_attention_mask: ``"nchw"``/``"bnchw"`` only; optional valid-pixel mask.

    Returns:
        ``(perturbed, mask)``: the perturbed copy and the boolean patch mask (True = blackened).
    """
    if not isinstance(pixel_values, torch.Tensor) or not pixel_values.is_floating_point():
        raise ValueError("pixel_values must be a floating-point torch.Tensor.")
    if layout not in LAYOUTS:
        raise ValueError(f"Unknown layout {layout!r}; valid layouts are {', '.join(LAYOUTS)}.")
    prob = _check_prob(prob)
    black = black_value(image_mean, image_std)
    if layout == "qwen_flat":
        if pixel_attention_mask is not None:
            raise ValueError(
                "pixel_attention_mask is only meaningful for layouts 'nchw' and 'bnchw', "
                "not 'qwen_flat'."
            )
        return _blacken_qwen_flat(
            pixel_values, black, prob, generator, patch_size, temporal_patch_size, num_channels
        )
    if temporal_patch_size is not None:
        raise ValueError(f"temporal_patch_size is only used by layout 'qwen_flat', not {layout!r}.")
    return _blacken_squares(
        pixel_values, black, prob, generator, patch_size, pixel_attention_mask, layout
    )


# --------------------------------------------------------------------------------------------
# Image space (PIL), as in the official code
# --------------------------------------------------------------------------------------------


def _as_rgb(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL.Image.Image, got {type(image).__name__}.")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"image is empty ({image.width}x{image.height} pixels).")
    # Alpha is dropped, not composited: the same as ``Image.convert("RGB")`` in the official
    # code's image loading.
    return image if image.mode == "RGB" else image.convert("RGB")


def blacken_image_patches(
    image: Image.Image,
    patch_size: int = 14,
    prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> Image.Image:
    """Set random ``patch_size`` x ``patch_size`` squares of a PIL image to black (0, 0, 0).

    The official VPPO perturbation: squares on a grid anchored at (0, 0), edge squares
    truncated, each blackened independently with probability ``prob``. Run the image processor
    on the result afterwards; the squares align with the ViT patches only if the image is
    already on the processor's resize grid (multiples of patch*merge, e.g. 28 px for
    Qwen2.5-VL).

    Args:
        image: any PIL image; converted to RGB first (alpha dropped).
        patch_size: square side in pixels (paper: 14).
        prob: blackening probability per square, in [0, 1] (paper: 0.5).
        generator: optional ``torch.Generator`` (CPU) for reproducible masks.

    Returns:
        A new RGB image of the same size.
    """
    patch_size = positive_int(patch_size, "patch_size")
    prob = _check_prob(prob)
    pixels = np.array(_as_rgb(image), dtype=np.uint8)
    height, width = pixels.shape[:2]
    grid = _draw_mask(
        (-(-height // patch_size), -(-width // patch_size)), prob, generator, torch.device("cpu")
    )
    pixel_mask = grid.repeat_interleave(patch_size, 0).repeat_interleave(patch_size, 1)
    pixels[pixel_mask[:height, :width].numpy()] = 0
    return Image.fromarray(pixels, mode="RGB")


def gaussian_noise(
    image: Image.Image, sigma: float = 189.0, generator: torch.Generator | None = None
) -> Image.Image:
    """Add i.i.d. Gaussian noise N(0, sigma^2) to every channel of every pixel.

    The result is rounded and clipped to [0, 255]. The paper's sigma = 189 (on the 0-255
    scale) saturates roughly half of the pixels.

    Args:
        image: any PIL image; converted to RGB first.
        sigma: noise standard deviation in intensity units, >= 0.
        generator: optional ``torch.Generator`` (CPU) for reproducible noise.

    Returns:
        A new RGB image of the same size.
    """
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}.")
    pixels = torch.from_numpy(np.array(_as_rgb(image), dtype=np.uint8)).to(torch.float32)
    noise = torch.randn(pixels.shape, generator=generator, device="cpu") * sigma
    noisy = (pixels + noise).round().clamp(0, 255).to(torch.uint8)
    return Image.fromarray(noisy.numpy(), mode="RGB")


def gaussian_blur(
    image: Image.Image, radius: float = 6.0, generator: torch.Generator | None = None
) -> Image.Image:
    """Blur the image with ``PIL.ImageFilter.GaussianBlur(radius)`` (paper: radius 6).

    Deterministic; ``generator`` is accepted for a uniform perturbation signature and unused.

    Returns:
        A new RGB image of the same size.
    """
    radius = float(radius)
    if not math.isfinite(radius) or radius < 0:
        raise ValueError(f"radius must be a finite number >= 0, got {radius}.")
    return _as_rgb(image).filter(ImageFilter.GaussianBlur(radius))


def solid_grey(
    image: Image.Image, value: int = 128, generator: torch.Generator | None = None
) -> Image.Image:
    """Replace the whole image with a uniform grey (value, value, value) of the same size.

    The paper's "complete masking" uses 128. Deterministic; ``generator`` is unused.

    Returns:
        A new RGB image of the same size.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise ValueError(f"value must be an integer in [0, 255], got {value!r}.")
    rgb = _as_rgb(image)
    return Image.new("RGB", rgb.size, (value, value, value))


IMAGE_PERTURBATIONS: dict[str, Callable[..., Image.Image]] = {
    "blacken": blacken_image_patches,
    "noise": gaussian_noise,
    "blur": gaussian_blur,
    "grey": solid_grey,
}
"""Image-space perturbations by name; each is ``fn(image, generator=None, **params) -> RGB``."""


def perturb_image(
    image: Image.Image,
    name: str,
    generator: torch.Generator | None = None,
    **params: object,
) -> Image.Image:
    """Apply the image-space perturbation ``name`` from :data:`IMAGE_PERTURBATIONS`.

    Args:
        image: any PIL image (converted to RGB).
        name: ``"blacken"`` (14-px squares, p=0.5), ``"noise"`` (sigma 189), ``"blur"``
            (radius 6) or ``"grey"`` (solid 128).
        generator: optional ``torch.Generator`` for the random ones.
        **params: overrides of the perturbation's own keyword arguments, e.g. ``prob=0.3``.

    Returns:
        The perturbed RGB image.
    """
    if name not in IMAGE_PERTURBATIONS:
        raise ValueError(
            f"Unknown image perturbation {name!r}; valid names are "
            f"{', '.join(sorted(IMAGE_PERTURBATIONS))}."
        )
    return IMAGE_PERTURBATIONS[name](image, generator=generator, **params)


# Perturbations of a processor's pixel_values: "blacken" works on the tensor itself; the others
# perturb the PIL images and re-run the image processor (name in IMAGE_PERTURBATIONS for each).
PIXEL_PERTURBATIONS: tuple[str, ...] = ("blacken", "blacken_image", "noise", "blur", "grey")
_IMAGE_SPACE = {"blacken_image": "blacken", "noise": "noise", "blur": "blur", "grey": "grey"}
# Every reference the dependency can be measured against, the choices of the trainer and of
# `vppo analyze`: the pixel perturbations, and "none", no image at all (the image and its
# placeholder tokens removed from the prompt, see vppo.perception.no_image).
PERTURBATIONS: tuple[str, ...] = (*PIXEL_PERTURBATIONS, NO_IMAGE)


def perturb_pixel_values(
    pixel_values: torch.Tensor,
    vision: Any,
    perturbation: str = "blacken",
    prob: float = 0.5,
    generator: torch.Generator | None = None,
    pixel_attention_mask: torch.Tensor | None = None,
    *,
    patch_size: int | None = None,
    images: Sequence[Sequence[Image.Image]] | None = None,
    image_processor: Any = None,
) -> torch.Tensor:
    """``pixel_values`` of the uninformative image I', laid out exactly like the input.

    Args:
        pixel_values: the processor's output for the real images, in ``vision.layout``
            (``qwen_flat`` [rows, C·T·P·P], ``bnchw`` [B, N, C, H, W] or ``nchw`` [N, C, H, W]).
        vision: any object with ``layout``, ``patch_size``, ``temporal_patch_size``,
            ``image_mean`` and ``image_std`` (e.g. :class:`vppo.models.VisionLayout`).
        perturbation: ``"blacken"`` (default: processed patches set to the normalised black,
            see :func:`blacken_patches`), or an image-space one that perturbs
            the PIL ``images`` and re-runs ``image_processor``: ``"blacken_image"`` (official:
            black squares of ``patch_size`` px, default 14), ``"noise"`` (σ 189), ``"blur"``
            (radius 6), ``"grey"`` (solid 128).
        prob: probability that each patch is blackened (the two blacken variants).
        generator: seeded ``torch.Generator``; every row / image gets its own draw.
        pixel_attention_mask: ``bnchw``/``nchw`` valid-pixel mask (SmolVLM), passed through.
        patch_size: blackening patch side in pixels; ``None`` means the processor's ViT patch
            (``blacken``) or 14 (``blacken_image``). For ``qwen_flat`` ``blacken`` it must equal
            the ViT patch size, since rows are whole patches.
        images: image-space perturbations only: the PIL images behind ``pixel_values``, one
            list per prompt row in processor order.
        image_processor: image-space perturbations only: the processor's image processor.

    Returns:
        A new tensor with the shape, dtype and device of ``pixel_values``.
    """
    if perturbation == NO_IMAGE:
        raise ValueError(
            f"perturbation={NO_IMAGE!r} has no pixel_values: it removes the image and its "
            "placeholder tokens from the prompt (vppo.perception.remove_image_tokens)."
        )
    if perturbation not in PIXEL_PERTURBATIONS:
        raise ValueError(
            f"perturbation is {perturbation!r}; choose one of {', '.join(PIXEL_PERTURBATIONS)}."
        )
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}.")
    if perturbation == "blacken":
        patch = patch_size or vision.patch_size
        if vision.layout == "qwen_flat" and patch != vision.patch_size:
            raise ValueError(
                f"patch_size={patch} differs from the processor's patch size {vision.patch_size}; "
                "pixel-space blackening works on whole ViT patches, so use "
                "perturbation='blacken_image' for squares of another size."
            )
        temporal = vision.temporal_patch_size if vision.layout == "qwen_flat" else None
        perturbed, _ = blacken_patches(
            pixel_values.detach(),
            vision.layout,
            vision.image_mean,
            vision.image_std,
            prob=prob,
            generator=generator,
            patch_size=patch,
            temporal_patch_size=temporal,
            pixel_attention_mask=pixel_attention_mask,
        )
        return perturbed
    if images is None or image_processor is None:
        raise ValueError(
            f"perturbation={perturbation!r} perturbs the PIL images and re-runs the processor; "
            "pass images= and image_processor=."
        )
    name = _IMAGE_SPACE[perturbation]
    params: dict[str, Any] = {}
    if name == "blacken":
        params = {"patch_size": patch_size or 14, "prob": prob}
    perturbed_images = [
        [perturb_image(img, name, generator=generator, **params) for img in row] for row in images
    ]
    batch = (
        perturbed_images
        if vision.layout == "bnchw"
        else [i for row in perturbed_images for i in row]
    )
    processed = image_processor(images=batch, return_tensors="pt")["pixel_values"]
    if processed.shape != pixel_values.shape:
        raise ValueError(
            f"re-processing the perturbed images gave pixel_values of shape {tuple(processed.shape)}, "
            f"not {tuple(pixel_values.shape)}; use perturbation='blacken' for this processor."
        )
    return processed.to(pixel_values.device, pixel_values.dtype)
