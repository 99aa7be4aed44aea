"""Row selection across scored generation batches (used by dynamic sampling).

TRL's `_generate_and_score_completions` returns a dict of padded tensors for one generation batch.
Dynamic sampling generates several such batches and keeps some rows of each, so we need to pick
rows out of several dicts and pad them to common shapes. These functions know the padding side and
per-row layout of every key TRL 1.16 produces; an unknown tensor key is an error, not a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

# key -> (side, pad value); side is where padding goes along dim 1.
_LEFT_PADDED = {"prompt_ids": None, "prompt_mask": 0}  # None: the tokenizer's pad id
_RIGHT_PADDED = {
    "completion_ids": None,
    "completion_mask": 0,
    "old_per_token_logps": 0.0,
    "ref_per_token_logps": 0.0,
    "sampling_per_token_logps": 0.0,
    "tool_mask": 1,
    # VPPOTrainer's PAPO: the masked-image log-probs of each response token (θ_old, no grad).
    "papo_masked_logps": 0.0,
}
# Per-row over the full sequence [prompt | completion]: split at the prompt width.
_SEQUENCE_KEYS = ("token_type_ids", "mm_token_type_ids")
_PER_ROW_KEYS = ("advantages",)
_SCALAR_KEYS = ("num_items_in_batch",)
# Image tensors laid out like pixel_values: VPPOTrainer's PAPO with papo_masked_grad keeps the
# masked images of the rollout for the update.
_PIXEL_KEYS = ("pixel_values", "papo_masked_pixel_values")
_IMAGE_KEYS = (
    *_PIXEL_KEYS,
    "image_grid_thw",
    "pixel_attention_mask",
    "image_sizes",
    "num_images",
)
# vLLM importance-sampling correction: [B, T] in the token_* modes (right-padded like the completion),
# [B, 1] in the sequence_* modes. Each row's ratio depends on that row only, so rows can be moved.
_IMPORTANCE_SAMPLING_KEYS = ("importance_sampling_ratio",)
ROW_UNSPLITTABLE_KEYS = ("num_tiles", "spatial_shapes", "image_position_ids")
"""Keys of image layouts whose batches `take_rows` cannot cut by row (see `splits_by_row`)."""


def importance_sampling_pad_value(
    mode: str, clip_min: float | None, clip_max: float | None
) -> float:
    """The vLLM importance-sampling ratio TRL 1.16 gives a padding token, for `select_rows`.

    TRL masks the log-ratio to 0 outside the loss mask, so a padding token's ratio is exp(0) = 1
    after the mode's truncate (clamp to [clip_min, clip_max]) or mask (0 outside the bounds) step.
    The value matters: TRL's VESPO loss sums log-ratios over all positions without a mask.
    """
    if mode.endswith("_truncate"):
        value = 1.0 if clip_min is None else max(1.0, clip_min)
        return value if clip_max is None else min(value, clip_max)
    if mode.endswith("_mask"):
        inside = (clip_min is None or clip_min <= 1.0) and (clip_max is None or clip_max >= 1.0)
        return 1.0 if inside else 0.0
    raise ValueError(
        f"vllm_importance_sampling_mode is {mode!r}; choose token_truncate, token_mask, sequence_truncate "
        "or sequence_mask."
    )


def _pad_to(x: torch.Tensor, width: int, value: float, left: bool) -> torch.Tensor:
    """Pad dim 1 of `x` [B, W, ...] to `width` on the left or right with `value`."""
    missing = width - x.size(1)
    if missing <= 0:
        return x
    pad = x.new_full((x.size(0), missing, *x.shape[2:]), value)
    return torch.cat([pad, x] if left else [x, pad], dim=1)


def _image_spans(piece: dict[str, Any]) -> tuple[list[int], list[int]]:
    """Per row: (first image index, number of images), from `num_images` (default one per row)."""
    rows = piece["prompt_ids"].size(0)
    counts = list(piece.get("num_images") or [1] * rows)
    starts, total = [], 0
    for count in counts:
        starts.append(total)
        total += count
    return starts, counts


def _select_images(
    pieces: Sequence[dict[str, Any]], picks: Sequence[tuple[int, int]]
) -> dict[str, Any]:
    """Gather the image tensors of the picked rows, for Qwen-flat, per-image and per-row layouts."""
    if not any("pixel_values" in p for p in pieces):
        return {}
    if not all("pixel_values" in p for p in pieces):
        raise ValueError("Cannot merge generation batches where only some carry pixel_values.")
    out: dict[str, Any] = {}
    first = pieces[0]
    pixel_keys = [k for k in _PIXEL_KEYS if k in first]
    num_images: list[int] = []
    spans = [_image_spans(p) for p in pieces]
    for piece_idx, row in picks:
        num_images.append(spans[piece_idx][1][row])
    if "image_grid_thw" in first:
        # Qwen2/2.5/3-VL: pixel_values rows are concatenated per image; image_grid_thw [num_images, 3].
        pv_parts, grid_parts = {k: [] for k in pixel_keys}, []
        row_offsets = []
        for p in pieces:
            rows_per_image = p["image_grid_thw"].prod(dim=-1)
            row_offsets.append(torch.cat([rows_per_image.new_zeros(1), rows_per_image.cumsum(0)]))
        for piece_idx, row in picks:
            start, count = spans[piece_idx][0][row], spans[piece_idx][1][row]
            offs = row_offsets[piece_idx]
            for key in pixel_keys:
                pv_parts[key].append(pieces[piece_idx][key][offs[start] : offs[start + count]])
            grid_parts.append(pieces[piece_idx]["image_grid_thw"][start : start + count])
        for key in pixel_keys:
            out[key] = torch.cat(pv_parts[key], dim=0)
        out["image_grid_thw"] = torch.cat(grid_parts, dim=0)
    elif first["pixel_values"].dim() == 5:
        # Idefics3 / SmolVLM: [B, N_img, C, H, W], rows padded with all-zero images.
        n_max = max(p["pixel_values"].size(1) for p in pieces)
        for key in pixel_keys:
            pv = [_pad_to(pieces[i][key][r : r + 1], n_max, 0.0, left=False) for i, r in picks]
            out[key] = torch.cat(pv, dim=0)
        if "pixel_attention_mask" in first:
            pam = [
                _pad_to(pieces[i]["pixel_attention_mask"][r : r + 1], n_max, 0, left=False)
                for i, r in picks
            ]
            out["pixel_attention_mask"] = torch.cat(pam, dim=0)
    else:
        # One tensor entry per image (LLaVA-style [N_img, C, H, W]).
        for key in pixel_keys:
            parts = []
            for piece_idx, row in picks:
                start, count = spans[piece_idx][0][row], spans[piece_idx][1][row]
                parts.append(pieces[piece_idx][key][start : start + count])
            out[key] = torch.cat(parts, dim=0)
        if "pixel_attention_mask" in first:
            raise ValueError(
                "Cannot merge per-image pixel_values that also carry a pixel_attention_mask."
            )
    if "image_sizes" in first:
        sizes = []
        for piece_idx, row in picks:
            start, count = spans[piece_idx][0][row], spans[piece_idx][1][row]
            sizes.append(pieces[piece_idx]["image_sizes"][start : start + count])
        out["image_sizes"] = torch.cat(sizes, dim=0)
    if "num_images" in first:
        out["num_images"] = num_images
    return out


def _ratio_is_per_token(pieces: Sequence[dict[str, Any]], key: str) -> bool:
    """Whether `key` is a per-token [B, T] ratio (token_* modes) rather than per-row [B, 1] / [B].

    When every piece's ratio has one column the two readings give the same merge, so that case is
    treated as per-row; otherwise every piece's ratio must be as wide as its completion.
    """
    shapes = [(tuple(p[key].shape), tuple(p["completion_ids"].shape)) for p in pieces]
    if all(len(r) == 1 or (len(r) == 2 and r[1] == 1) for r, _ in shapes):
        return False
    if all(r == c for r, c in shapes):
        return True
    raise ValueError(
        f"Dynamic sampling cannot merge {key} of shapes {[r for r, _ in shapes]} with completions of shapes "
        f"{[c for _, c in shapes]} (neither per token nor per sequence); set dynamic_sampling=False."
    )


def select_rows(
    pieces: Sequence[dict[str, Any]],
    picks: Sequence[tuple[int, int]],
    pad_token_id: int,
    importance_sampling_pad: float = 1.0,
) -> dict[str, Any]:
    """Build one scored batch from rows of several.

    Args:
        pieces: outputs of `GRPOTrainer._generate_and_score_completions` (same process, same keys).
        picks: `(piece index, row index)` per output row, in output order.
        pad_token_id: the tokenizer's pad id, used to pad `prompt_ids` / `completion_ids`.
        importance_sampling_pad: the value TRL gives padding tokens in a per-token
            `importance_sampling_ratio` (see `importance_sampling_pad_value`).

    Returns:
        A dict with the same keys; `num_items_in_batch` is the number of picked loss tokens
        (completion × tool mask; the caller must make it global across processes, as TRL does).
    """
    if not pieces or not picks:
        raise ValueError("select_rows needs at least one batch and one picked row.")
    keys = set(pieces[0])
    for p in pieces[1:]:
        if set(p) != keys:
            raise ValueError(
                f"Cannot merge generation batches with different keys: {sorted(keys ^ set(p))}."
            )
    bad = sorted(k for k in keys if k in ROW_UNSPLITTABLE_KEYS)
    if bad:
        raise ValueError(
            f"Dynamic sampling cannot merge scored batches that carry {bad} (image layouts it cannot split by row); "
            "set dynamic_sampling=False for this model."
        )
    known = set(_LEFT_PADDED) | set(_RIGHT_PADDED) | set(_SEQUENCE_KEYS) | set(_PER_ROW_KEYS)
    known |= set(_SCALAR_KEYS) | set(_IMAGE_KEYS) | set(_IMPORTANCE_SAMPLING_KEYS)
    unknown = sorted(k for k in keys if k not in known)
    if unknown:
        raise ValueError(
            f"Rows of TRL's scored batch cannot be selected: vppo does not know its keys {unknown} (a TRL "
            "release newer than the pinned one?); set dynamic_sampling=False or install the pinned TRL."
        )

    out: dict[str, Any] = {}
    prompt_width = max(p["prompt_ids"].size(1) for p in pieces)
    completion_width = max(p["completion_ids"].size(1) for p in pieces)

    def gather(key: str, width: int, value: float | None, left: bool) -> torch.Tensor:
        value = pad_token_id if value is None else value
        rows = [_pad_to(pieces[i][key][r : r + 1], width, value, left) for i, r in picks]
        return torch.cat(rows, dim=0)

    for key, value in _LEFT_PADDED.items():
        if key in keys:
            out[key] = gather(key, prompt_width, value, left=True)
    for key, value in _RIGHT_PADDED.items():
        if key in keys:
            out[key] = gather(key, completion_width, value, left=False)
    for key in _IMPORTANCE_SAMPLING_KEYS:
        if key not in keys:
            continue
        if _ratio_is_per_token(pieces, key):
            out[key] = gather(key, completion_width, importance_sampling_pad, left=False)
        else:
            out[key] = torch.cat([pieces[i][key][r : r + 1] for i, r in picks], dim=0)
    for key in _SEQUENCE_KEYS:
        if key not in keys:
            continue
        rows = []
        for i, r in picks:
            width = pieces[i]["prompt_ids"].size(1)
            full = pieces[i][key][r : r + 1]
            prompt_part = _pad_to(full[:, :width], prompt_width, 0, left=True)
            completion_part = _pad_to(full[:, width:], completion_width, 0, left=False)
            rows.append(torch.cat([prompt_part, completion_part], dim=1))
        out[key] = torch.cat(rows, dim=0)
    for key in _PER_ROW_KEYS:
        if key in keys:
            out[key] = torch.cat([pieces[i][key][r : r + 1] for i, r in picks], dim=0)
    out.update(_select_images(pieces, picks))
    completion_mask = out["completion_mask"]
    if "tool_mask" in out:
        completion_mask = completion_mask * out["tool_mask"]
    out["num_items_in_batch"] = completion_mask.sum()
    return out


def group_pass_rates(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Mean reward of each consecutive group of `group_size` rows.

    Args:
        rewards: float [N], N a multiple of `group_size` (NaN rewards are ignored).

    Returns:
        float [N / group_size].
    """
    if rewards.numel() % group_size != 0:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}.")
    return torch.nanmean(rewards.view(-1, group_size).float(), dim=1)


def plan_dynamic_sampling(
    keep_per_piece: Sequence[torch.Tensor], group_size: int, rows_needed: int
) -> tuple[list[tuple[int, int]], int]:
    """Choose which rows form the batch: kept groups first, in generation order, then dropped ones.

    Args:
        keep_per_piece: bool [n_groups_i] per generated piece: whether each group passed the filter.
        group_size: rows per group (G).
        rows_needed: rows in the output batch (a multiple of G).

    Returns:
        (picks, n_filler_groups): `(piece, row)` pairs and how many dropped groups had to fill in.
    """
    kept, dropped = [], []
    for piece_idx, keep in enumerate(keep_per_piece):
        for group_idx, ok in enumerate(keep.tolist()):
            rows = [(piece_idx, group_idx * group_size + j) for j in range(group_size)]
            (kept if ok else dropped).append(rows)
    groups_needed = rows_needed // group_size
    chosen = kept[:groups_needed]
    filler = max(0, groups_needed - len(chosen))
    chosen += dropped[:filler]
    return [row for group in chosen for row in group], filler


# ---------------------------------------------------------------------------------- padding-free passes
def length_sorted_chunks(
    prompt_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    rows_per_chunk: int,
    max_padding: float = 0.10,
    num_chunks: int | None = None,
) -> list[list[int]]:
    """Row indices of a scored batch in chunks of similar length, longest first.

    Rows are sorted by unpadded length. A chunk ends when it holds `rows_per_chunk` rows or when
    one more row would make the chunk, trimmed to its own prompt and completion widths, compute more
    than `max_padding` × its real tokens in padding.

    Args:
        prompt_mask: [B, P] 0/1, left-padded.
        completion_mask: [B, T] 0/1, right-padded.
        rows_per_chunk: the most rows in one chunk.
        max_padding: the padding a chunk may add, as a fraction of its real tokens. Every extra
            chunk is one more forward with its own fixed cost: 10% keeps the no-grad tokens within
            5% of the floor on benchmarks/bench_step_overhead.py; 2% split on-policy batches into
            more forwards than the saved padding paid for on a CPU (VPPO k3 1.35-1.36x of DAPO's
            step time, against 1.27-1.31x at 10%).
        num_chunks: if given (at least the natural number of chunks, at most B), the chunk with the
            most padded tokens is halved until there are this many, so that every process of a
            sharded run can run the same number of forwards.

    Returns:
        chunks of row indices; together they hold every row once.
    """
    if rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk must be at least 1, got {rows_per_chunk}.")
    prompt_lengths = prompt_mask.sum(-1).tolist()
    completion_lengths = completion_mask.sum(-1).tolist()
    # Stable sort: rows of equal length keep their order, so the chunks are deterministic.
    order = sorted(
        range(len(prompt_lengths)), key=lambda r: -(prompt_lengths[r] + completion_lengths[r])
    )

    def cost(rows: list[int]) -> int:
        return len(rows) * (
            max(prompt_lengths[r] for r in rows) + max(completion_lengths[r] for r in rows)
        )

    chunks: list[list[int]] = []
    for row in order:
        chunk = chunks[-1] if chunks else None
        if chunk is not None and len(chunk) < rows_per_chunk:
            grown = [*chunk, row]
            real = sum(prompt_lengths[r] + completion_lengths[r] for r in grown)
            if cost(grown) <= (1 + max_padding) * real:
                chunk.append(row)
                continue
        chunks.append([row])
    if num_chunks is not None:
        if not len(chunks) <= num_chunks <= len(order):
            raise ValueError(
                f"num_chunks must be in [{len(chunks)}, {len(order)}], got {num_chunks}."
            )
        while len(chunks) < num_chunks:
            index = max(
                (i for i, c in enumerate(chunks) if len(c) > 1), key=lambda i: cost(chunks[i])
            )
            chunk = chunks[index]
            chunks[index : index + 1] = [chunk[: len(chunk) // 2], chunk[len(chunk) // 2 :]]
    return chunks


def trim_padding(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch without the prompt columns that are padding in every row (left) and the
    completion columns that are padding in every row (right).

    Positions come from the attention mask, so a forward on the trimmed batch gives the same
    values at every kept position; the trimmed completion columns are padding, whose log-probs
    TRL sets to 0.
    """
    prompt_keep = batch["prompt_mask"].any(dim=0).nonzero()
    completion_keep = batch["completion_mask"].any(dim=0).nonzero()
    prompt_width = batch["prompt_ids"].size(1)
    start = int(prompt_keep[0]) if prompt_keep.numel() else prompt_width
    stop = int(completion_keep[-1]) + 1 if completion_keep.numel() else 0
    stop = max(stop, 1)  # keep one completion column so shapes stay [B, >=1]
    completion_width = batch["completion_ids"].size(1)
    out = dict(batch)
    for key in _LEFT_PADDED:
        if key in out:
            out[key] = out[key][:, start:]
    for key in _RIGHT_PADDED:
        if key in out:
            out[key] = out[key][:, :stop]
    # Per-token [B, T] advantages (VPPO's) and vLLM ratios (token_* modes); [B] / [B, 1] stay as they are.
    for key in (*_PER_ROW_KEYS, *_IMPORTANCE_SAMPLING_KEYS):
        value = out.get(key)
        if (
            isinstance(value, torch.Tensor)
            and value.dim() == 2
            and value.size(1) == completion_width > 1
        ):
            out[key] = value[:, :stop]
    for key in _SEQUENCE_KEYS:
        if key in out:
            out[key] = torch.cat(
                [out[key][:, start:prompt_width], out[key][:, prompt_width : prompt_width + stop]],
                dim=1,
            )
    return out


def update_window(steps_per_generation: int, gradient_accumulation_steps: int) -> int:
    """How many consecutive update micro-batches of one generation batch always share an optimizer step.

    Micro-batch i of a generation batch is trained at steps base + i + k * steps_per_generation
    (k over the iterations); optimizer steps close every `gradient_accumulation_steps` steps.
    Rows may move between micro-batches of one window without changing any optimizer step's rows.
    """
    if steps_per_generation % gradient_accumulation_steps == 0:
        return gradient_accumulation_steps
    if gradient_accumulation_steps % steps_per_generation == 0:
        return steps_per_generation
    return 1


def update_micro_batches(
    batch: dict[str, Any],
    order: Sequence[int],
    rows_per_micro_batch: int,
    window: int,
    pad_token_id: int,
) -> list[dict[str, Any]]:
    """The update micro-batches of one scored generation batch, each trimmed to its own widths.

    TRL cuts the shuffled batch (rows in `order`) into micro-batches of `rows_per_micro_batch` rows,
    all as wide as the whole batch. Here each run of `window` micro-batches (see `update_window`; 1
    keeps TRL's rows per micro-batch) is regrouped by length: its rows sorted by unpadded length,
    longest first, and cut into micro-batches of the same size. Each micro-batch is then trimmed to
    its own prompt and completion widths, every per-token tensor with it.

    Args:
        batch: the scored generation batch (TRL's keys; VPPO's [B, T] advantages allowed).
        order: a permutation of the batch's B rows (TRL: `torch.randperm(B)`).
        rows_per_micro_batch: per_device_train_batch_size; B must be a multiple of it.
        window: micro-batches whose rows may be regrouped together.
        pad_token_id: the tokenizer's pad id.

    Returns:
        B / rows_per_micro_batch micro-batches in training order; `num_items_in_batch` stays the
        generation batch's (TRL normalises the dapo-family losses by it).
    """
    rows = batch["prompt_ids"].size(0)
    if len(order) != rows or rows % rows_per_micro_batch:
        raise ValueError(
            f"update_micro_batches needs a permutation of {rows} rows in micro-batches of "
            f"{rows_per_micro_batch}; got {len(order)} rows."
        )
    lengths = (batch["prompt_mask"].sum(-1) + batch["completion_mask"].sum(-1)).tolist()
    span = rows_per_micro_batch * window
    groups: list[list[int]] = []
    for start in range(0, rows, span):
        part = list(order[start : start + span])
        if window > 1:
            part.sort(key=lambda r: -lengths[r])  # stable: equal lengths keep the shuffled order
        groups.extend(
            part[i : i + rows_per_micro_batch] for i in range(0, len(part), rows_per_micro_batch)
        )
    micro_batches = []
    for group in groups:
        micro = take_rows(batch, group, pad_token_id)
        if "num_items_in_batch" in batch:
            micro["num_items_in_batch"] = batch["num_items_in_batch"]
        micro_batches.append(micro)
    return micro_batches


def take_rows(batch: dict[str, Any], rows: Sequence[int], pad_token_id: int) -> dict[str, Any]:
    """The given rows of one scored batch (images included), trimmed to their own widths."""
    return trim_padding(select_rows([batch], [(0, r) for r in rows], pad_token_id))


def splits_by_row(batch: dict[str, Any]) -> bool:
    """Whether `take_rows` can split this batch (its image layout can be cut by row)."""
    return not any(key in batch for key in ROW_UNSPLITTABLE_KEYS)
