"""Row selection across scored generation batches (dynamic sampling), on hand-built TRL-like batches."""

from __future__ import annotations

import pytest
import torch

from vppo.trainer.batching import importance_sampling_pad_value, select_rows

PAD_ID = 0
IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")


def _is_ratio(old, sampling, mask, mode, clip_min, clip_max):
    """The vLLM importance-sampling ratio as TRL 1.16 defines it: exp of the masked log-ratio (summed per
    sequence in the sequence_* modes), then clamped (truncate) or zeroed outside [clip_min, clip_max] (mask)."""
    diff = torch.nan_to_num((old - sampling) * mask, nan=0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(-1, keepdim=True)
    ratio = diff.exp()
    if mode.endswith("truncate"):
        return ratio.clamp(min=clip_min, max=clip_max)
    low = -float("inf") if clip_min is None else clip_min
    high = float("inf") if clip_max is None else clip_max
    return torch.where((ratio < low) | (ratio > high), torch.zeros_like(ratio), ratio)


def _piece(index, prompt_lengths, lengths, mode=None, clip=(None, 3.0), tool_mask=False):
    """A scored batch: every real token carries a value unique to (piece, row, position)."""
    rows, width, prompt_width = len(lengths), max(lengths), max(prompt_lengths)
    generator = torch.Generator().manual_seed(index)
    prompt_ids = torch.full((rows, prompt_width), PAD_ID)
    prompt_mask = torch.zeros(rows, prompt_width, dtype=torch.long)
    completion_ids = torch.full((rows, width), PAD_ID)
    completion_mask = torch.zeros(rows, width, dtype=torch.long)
    for r, (p, n) in enumerate(zip(prompt_lengths, lengths, strict=True)):
        prompt_ids[r, prompt_width - p :] = 1000 * (index + 1) + 100 * r + torch.arange(p)
        prompt_mask[r, prompt_width - p :] = 1
        completion_ids[r, :n] = 1000 * (index + 1) + 100 * r + 50 + torch.arange(n)
        completion_mask[r, :n] = 1
    real = completion_mask.bool()
    # Model log-probs are defined at padding too; vLLM's sampling log-probs are padded with 0.
    old = -torch.rand(rows, width, generator=generator) * 0.5
    sampling = torch.where(
        real, old + (torch.rand(rows, width, generator=generator) - 0.5) * 0.6, 0.0
    )
    piece = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": torch.arange(rows, dtype=torch.float32) + 10.0 * index,
        "num_items_in_batch": torch.tensor(999),  # global in TRL: select_rows must recompute it
        "old_per_token_logps": old,
        "sampling_per_token_logps": sampling,
    }
    if tool_mask:
        piece["tool_mask"] = torch.ones(rows, width, dtype=torch.long)
        piece["tool_mask"][:, 1] = 0
    if mode is not None:
        loss_mask = completion_mask * piece.get("tool_mask", 1)
        piece["importance_sampling_ratio"] = _is_ratio(old, sampling, loss_mask, mode, *clip)
    return piece


@pytest.mark.parametrize(
    "clip", [(None, 3.0), (1.05, 3.0), (0.5, 0.95)], ids=["default", "min>1", "max<1"]
)
@pytest.mark.parametrize("mode", IS_MODES)
def test_importance_sampling_ratio_follows_the_picked_rows(mode, clip):
    pieces = [
        _piece(0, [2, 3, 1, 2], [3, 2, 1, 3], mode, clip),
        _piece(1, [4, 1, 2, 2], [5, 1, 4, 2], mode, clip),
    ]
    picks = [(1, 2), (1, 3), (0, 0), (0, 1), (1, 0), (0, 3)]
    pad = importance_sampling_pad_value(mode, *clip)
    out = select_rows(pieces, picks, PAD_ID, importance_sampling_pad=pad)

    ratio = out["importance_sampling_ratio"]
    per_token = mode.startswith("token")
    assert ratio.shape == ((len(picks), 5) if per_token else (len(picks), 1))
    for k, (i, r) in enumerate(picks):
        n = int(pieces[i]["completion_mask"][r].sum())
        source = pieces[i]["importance_sampling_ratio"][r]
        if per_token:
            assert torch.equal(ratio[k, :n], source[:n])
            # Beyond the row's own completion: TRL's value for a padding token, wherever the padding came from.
            assert (ratio[k, n:] == pad).all()
        else:
            assert torch.equal(ratio[k], source)
    # Merging the scored rows equals scoring the merged rows, padding included.
    expected = _is_ratio(
        out["old_per_token_logps"],
        out["sampling_per_token_logps"],
        out["completion_mask"],
        mode,
        *clip,
    )
    torch.testing.assert_close(ratio, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask"])
def test_per_token_ratio_respects_the_tool_mask(mode):
    pieces = [
        _piece(0, [2, 2], [3, 2], mode, tool_mask=True),
        _piece(1, [1, 3], [4, 4], mode, tool_mask=True),
    ]
    out = select_rows(
        pieces, [(0, 1), (1, 0)], PAD_ID, importance_sampling_pad_value(mode, None, 3.0)
    )
    loss_mask = out["completion_mask"] * out["tool_mask"]
    expected = _is_ratio(
        out["old_per_token_logps"], out["sampling_per_token_logps"], loss_mask, mode, None, 3.0
    )
    torch.testing.assert_close(out["importance_sampling_ratio"], expected, rtol=0, atol=1e-6)
    assert out["tool_mask"][0, 2:].tolist() == [1, 1]  # TRL pads tool_mask with 1
    assert out["num_items_in_batch"].item() == int(loss_mask.sum())


def test_per_row_ratio_without_a_column_dimension():
    pieces = [_piece(0, [2, 2], [3, 2]), _piece(1, [1, 3], [4, 4])]
    for index, piece in enumerate(pieces):
        piece["importance_sampling_ratio"] = torch.tensor([1.0, 2.0]) + 10 * index
    out = select_rows(pieces, [(1, 1), (0, 0)], PAD_ID)
    assert out["importance_sampling_ratio"].tolist() == [12.0, 1.0]


def test_token_ratios_with_one_token_completions_are_padded():
    """A round whose completions are all one token wide still holds a per-token ratio."""
    pieces = [
        _piece(0, [2, 2], [1, 1], "token_truncate"),
        _piece(1, [1, 3], [4, 2], "token_truncate"),
    ]
    out = select_rows(pieces, [(0, 0), (1, 0)], PAD_ID, importance_sampling_pad=0.7)
    assert out["importance_sampling_ratio"].shape == (2, 4)
    assert out["importance_sampling_ratio"][0, 1:].tolist() == pytest.approx([0.7] * 3)
    assert torch.equal(
        out["importance_sampling_ratio"][1], pieces[1]["importance_sampling_ratio"][0]
    )


def test_ratio_of_unexpected_width_is_refused():
    pieces = [
        _piece(0, [2, 2], [3, 2], "token_truncate"),
        _piece(1, [1, 3], [4, 4], "token_truncate"),
    ]
    pieces[1]["importance_sampling_ratio"] = pieces[1]["importance_sampling_ratio"][:, :2]
    with pytest.raises(ValueError, match="importance_sampling_ratio.*dynamic_sampling=False"):
        select_rows(pieces, [(0, 0), (1, 0)], PAD_ID)


def test_every_row_key_follows_the_picks_and_is_padded_like_trl():
    # The first round's completions are one token wide: its per-token log-probs must still be merged.
    pieces = [_piece(0, [2, 1], [1, 1]), _piece(1, [3, 1], [4, 2])]
    for piece in pieces:
        piece["ref_per_token_logps"] = piece["old_per_token_logps"] - 0.1
    picks = [(1, 1), (0, 0), (1, 0), (0, 1)]
    out = select_rows(pieces, picks, PAD_ID)
    assert set(out) == set(pieces[0])
    assert out["prompt_ids"].shape == (4, 3) and out["completion_ids"].shape == (4, 4)
    for k, (i, r) in enumerate(picks):
        p, n = int(pieces[i]["prompt_mask"][r].sum()), int(pieces[i]["completion_mask"][r].sum())
        assert torch.equal(out["prompt_ids"][k, 3 - p :], pieces[i]["prompt_ids"][r, -p:])
        assert (out["prompt_ids"][k, : 3 - p] == PAD_ID).all() and out["prompt_mask"][k].sum() == p
        assert torch.equal(out["completion_ids"][k, :n], pieces[i]["completion_ids"][r, :n])
        assert (out["completion_ids"][k, n:] == PAD_ID).all() and out["completion_mask"][
            k
        ].sum() == n
        for key in ("old_per_token_logps", "sampling_per_token_logps", "ref_per_token_logps"):
            assert torch.equal(out[key][k, :n], pieces[i][key][r, :n])
        assert (out["sampling_per_token_logps"][k, n:] == 0).all()
        assert out["advantages"][k] == pieces[i]["advantages"][r]
    # Local token count of the merged rows; the trainer sums it over processes as TRL does.
    assert out["num_items_in_batch"].item() == int(out["completion_mask"].sum()) == 2 + 1 + 4 + 1


def test_sequence_type_ids_are_split_at_each_prompt_width():
    pieces = [_piece(0, [2, 1], [2, 1]), _piece(1, [3, 1], [4, 2])]
    for piece in pieces:
        piece["mm_token_type_ids"] = torch.cat(
            [piece["prompt_mask"], 2 * piece["completion_mask"]], dim=1
        )
    out = select_rows(pieces, [(0, 0), (1, 0)], PAD_ID)
    expected = torch.cat([out["prompt_mask"], 2 * out["completion_mask"]], dim=1)
    assert torch.equal(out["mm_token_type_ids"], expected)


@pytest.mark.parametrize(
    "key", ["spatial_shapes", "image_position_ids", "num_tiles", "something_new"]
)
def test_keys_it_cannot_merge_are_refused_by_name(key):
    pieces = [_piece(0, [2, 2], [3, 2]), _piece(1, [1, 3], [4, 4])]
    for piece in pieces:
        piece[key] = torch.zeros(2, 2)
    with pytest.raises(ValueError, match=rf"'{key}'.*set dynamic_sampling=False"):
        select_rows(pieces, [(0, 0), (1, 0)], PAD_ID)


@pytest.mark.parametrize(
    ("mode", "clip_min", "clip_max", "expected"),
    [
        ("token_truncate", None, 3.0, 1.0),
        ("sequence_truncate", 0.5, 2.0, 1.0),
        ("token_truncate", 1.5, 3.0, 1.5),
        ("token_truncate", None, 0.8, 0.8),
        ("token_mask", None, 3.0, 1.0),
        ("token_mask", 0.5, 1.0, 1.0),
        ("token_mask", 1.5, None, 0.0),
        ("sequence_mask", None, 0.5, 0.0),
    ],
)
def test_importance_sampling_pad_value(mode, clip_min, clip_max, expected):
    assert importance_sampling_pad_value(mode, clip_min, clip_max) == expected
    one = torch.zeros(1, 1)
    assert _is_ratio(one, one, one, mode, clip_min, clip_max).item() == pytest.approx(expected)


def test_importance_sampling_pad_value_rejects_unknown_modes():
    with pytest.raises(ValueError, match="vllm_importance_sampling_mode"):
        importance_sampling_pad_value("token_clip", None, 3.0)


def _with_images(piece, layout, images_per_row):
    """`piece` with pixel_values in one of the three layouts select_rows knows, every image's values
    unique, and PAPO's masked copy (`papo_masked_pixel_values`, the negated values) beside them."""
    counts = list(images_per_row)
    total = sum(counts)
    piece = dict(piece, num_images=counts)
    base = 1000.0 * (piece["advantages"][0].item() + 1)
    if layout == "qwen":  # flat patches, image i has i + 1 of them
        grid = torch.tensor([[1, 1, i + 1] for i in range(total)])
        patches = int(grid.prod(-1).sum())
        piece["pixel_values"] = base + torch.arange(patches * 3, dtype=torch.float).view(patches, 3)
        piece["image_grid_thw"] = grid
    elif layout == "idefics":  # [B, N_img, C, H, W], rows padded with zero images
        n_max = max(counts)
        pv = torch.zeros(len(counts), n_max, 1, 2, 2)
        for r, c in enumerate(counts):
            pv[r, :c] = base + 10 * r + torch.arange(c * 4, dtype=torch.float).view(c, 1, 2, 2)
        piece["pixel_values"] = pv
    else:  # one entry per image
        piece["pixel_values"] = base + torch.arange(total * 4, dtype=torch.float).view(
            total, 1, 2, 2
        )
    piece["papo_masked_pixel_values"] = -piece["pixel_values"]
    return piece


@pytest.mark.parametrize("layout", ["qwen", "idefics", "per_image"])
def test_papo_masked_pixel_values_follow_their_rows_in_every_layout(layout):
    pieces = [
        _with_images(_piece(0, [2, 1, 2], [2, 1, 3]), layout, [1, 2, 1]),
        _with_images(_piece(1, [3, 1], [4, 2]), layout, [2, 1]),
    ]
    picks = [(1, 0), (0, 2), (0, 1), (1, 1)]
    out = select_rows(pieces, picks, PAD_ID)
    # The masked copy is cut exactly like the real images, row for row and image for image.
    assert torch.equal(out["papo_masked_pixel_values"], -out["pixel_values"])
    reference = select_rows(
        [{k: v for k, v in p.items() if k != "papo_masked_pixel_values"} for p in pieces],
        picks,
        PAD_ID,
    )
    assert torch.equal(out["pixel_values"], reference["pixel_values"])
    assert out["num_images"] == [2, 1, 2, 1]
