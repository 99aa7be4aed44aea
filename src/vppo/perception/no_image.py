"""The no-image reference: the prompt with the image and every one of its placeholder tokens removed.

Against a perturbed image I', the reference "no image at all" is the text-only prompt: the vision
tower does not run, and the language model sees the prompt's text tokens only. For a batch laid
out like TRL's (prompts left-padded) :func:`remove_image_tokens` drops every vision token id of
each row (Qwen2/2.5/3-VL: ``<|vision_start|>``, the ``<|image_pad|>`` run, ``<|vision_end|>``;
SmolVLM/Idefics3: ``<fake_token_around_image>``, ``<global-img>``, ``<row_i_col_j>``, ``<image>``)
and left-pads the rows again to the widest of them. Which ids those are depends on the processor
(``vppo.models.vision_layout(processor).pad_token_ids_to_ban``); here they are an argument.

:func:`text_only_positions` gives the kept input column of every output column, so any other
per-token tensor of the prompt (token type ids) can follow with :func:`take_positions`.

Pure torch; nothing imports transformers or TRL.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from vppo._tensor_checks import as_bool_mask

__all__ = ["NO_IMAGE", "remove_image_tokens", "take_positions", "text_only_positions"]

# The perturbation name of the no-image reference.
NO_IMAGE = "none"


def _check_ids(input_ids: object, attention_mask: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError("input_ids must be a 2-D [B, P] tensor of token ids.")
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise ValueError(f"input_ids must hold integer token ids, got {input_ids.dtype}.")
    mask = as_bool_mask(attention_mask, "attention_mask")
    if mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(mask.shape)} but input_ids has "
            f"{tuple(input_ids.shape)}."
        )
    return input_ids, mask.to(input_ids.device)


def text_only_positions(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, image_token_ids: Iterable[int]
) -> torch.Tensor:
    """For each column of the text-only prompt, the column of ``input_ids`` it takes.

    Args:
        input_ids: [B, P] prompt ids (any padding side; padding is where the mask is 0).
        attention_mask: [B, P] 0/1 or bool.
        image_token_ids: every vision token id to drop (placeholders, start/end markers, ...).

    Returns:
        [B, W] long on ``input_ids``' device, W the most kept tokens of any row (0 for an empty
        batch): the kept (unmasked, non-vision) columns of each row in their order, right-aligned,
        and -1 at the left padding in front of them.
    """
    input_ids, mask = _check_ids(input_ids, attention_mask)
    vision = torch.tensor(sorted({int(i) for i in image_token_ids}), dtype=input_ids.dtype)
    keep = mask & ~torch.isin(input_ids, vision.to(input_ids.device))
    counts = keep.sum(dim=1)
    width = int(counts.max()) if counts.numel() else 0
    positions = torch.full((input_ids.size(0), width), -1, dtype=torch.long, device=keep.device)
    rows, cols = keep.nonzero(as_tuple=True)
    rank = keep.long().cumsum(dim=1)[rows, cols] - 1  # order of each kept column in its row
    positions[rows, (width - counts)[rows] + rank] = cols
    return positions


def take_positions(values: torch.Tensor, positions: torch.Tensor, fill: float = 0) -> torch.Tensor:
    """``values`` [B, P, ...] at ``positions`` [B, W] (:func:`text_only_positions`), ``fill`` at -1."""
    if values.dim() < 2 or values.shape[0] != positions.shape[0]:
        raise ValueError(
            f"values of shape {tuple(values.shape)} do not have the {positions.shape[0]} rows of "
            "positions."
        )
    index = positions.clamp(min=0).to(values.device)
    index = index.view(*index.shape, *([1] * (values.dim() - 2))).expand(-1, -1, *values.shape[2:])
    taken = values.gather(1, index)
    pad = (positions < 0).to(values.device).view(*positions.shape, *([1] * (values.dim() - 2)))
    return taken.masked_fill(pad, fill)


def remove_image_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    image_token_ids: Iterable[int],
    pad_token_id: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts without any vision token, left-padded again to a common width.

    Args:
        input_ids: [B, P] prompt ids, padding where ``attention_mask`` is 0.
        attention_mask: [B, P] 0/1 or bool.
        image_token_ids: every vision token id to drop.
        pad_token_id: the id written at the new left padding.

    Returns:
        ``(input_ids [B, W], attention_mask [B, W])``, W the most kept tokens of any row, dtypes
        as given: each row's text tokens in order, right-aligned, after ``pad_token_id`` / 0.
        A row without vision tokens keeps its tokens (only its padding width can change), so a
        left-padded batch without any image is returned trimmed to its longest row.
    """
    positions = text_only_positions(input_ids, attention_mask, image_token_ids)
    ids = take_positions(input_ids, positions, fill=pad_token_id)
    mask = take_positions(torch.as_tensor(attention_mask).to(input_ids.device), positions, fill=0)
    return ids, mask
