"""TAS scales and per-token VPPO advantages."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vppo._tensor_checks import as_group_ids
from vppo.algorithm import tas_scale, tgf_mask, token_advantages

FAST = settings(max_examples=200, deadline=None)


def reference_u(scores: list[float]) -> list[float]:
    low, high = min(scores), max(scores)
    return [(s - low) / (high - low) for s in scores]


@st.composite
def trajectory_scores(draw):
    size = draw(st.integers(2, 24))
    scores = draw(st.lists(st.floats(0, 10, allow_nan=False), min_size=size, max_size=size))
    valid = draw(st.lists(st.booleans(), min_size=size, max_size=size))
    beta_min = draw(st.sampled_from([0.5, 0.8, 0.9, 0.95, 1.0]))
    return torch.tensor(scores, dtype=torch.float64), torch.tensor(valid), beta_min


@FAST
@given(trajectory_scores())
def test_dynamic_tas_has_mean_one_and_stays_in_range(case):
    scores, valid, beta_min = case
    # Invalid rows carry garbage that must neither be used nor cause an error.
    scores = scores.masked_fill(~valid, float("nan"))
    alpha = tas_scale(scores, beta_min, "dynamic", valid=valid)
    assert alpha.dtype == torch.float64
    assert (alpha[~valid] == 1).all()
    kept = scores[valid].tolist()
    if len(kept) < 2 or max(kept) - min(kept) <= 1e-6:
        assert (alpha == 1).all()
        return
    u = reference_u(kept)
    beta_max = beta_min + (1 - beta_min) / (sum(u) / len(u))
    a = alpha[valid]
    assert abs(float(a.mean()) - 1.0) < 1e-9
    assert float(a.min()) >= beta_min - 1e-9 and float(a.max()) <= beta_max + 1e-9
    assert abs(float(a[torch.tensor(kept).argmin()]) - beta_min) < 1e-9
    assert abs(float(a[torch.tensor(kept).argmax()]) - beta_max) < 1e-9
    # Affine and increasing in the score.
    expected = torch.tensor([beta_min + ui * (beta_max - beta_min) for ui in u], dtype=a.dtype)
    assert torch.allclose(a, expected, atol=1e-9)


def test_fixed_tas_maps_min_and_max_to_the_betas():
    scores = torch.tensor([0.2, 0.05, 0.3, 0.1])
    alpha = tas_scale(scores, 0.8, 1.2)
    assert alpha.dtype == torch.float32
    assert torch.allclose(alpha, torch.tensor([1.04, 0.8, 1.2, 0.88]), atol=1e-6)
    # The official setting: α = 0.9 + 0.1 u / mean(u).
    dynamic = tas_scale(scores)
    u = torch.tensor([0.6, 0.0, 1.0, 0.2])
    assert torch.allclose(dynamic, 0.9 + 0.1 * u / u.mean(), atol=1e-6)


@pytest.mark.parametrize("beta_max", ["dynamic", 1.1])
def test_degenerate_batches_give_unit_scale(beta_max):
    assert tas_scale(torch.tensor([0.3]), 0.9, beta_max).tolist() == [1.0]
    assert tas_scale(torch.tensor([0.3, 0.3, 0.3]), 0.9, beta_max).tolist() == [1.0] * 3
    assert tas_scale(torch.tensor([0.3, 0.3 + 5e-7]), 0.9, beta_max).tolist() == [1.0] * 2
    only_one_valid = tas_scale(
        torch.tensor([0.1, 0.9, 0.5]), 0.9, beta_max, valid=torch.tensor([True, False, False])
    )
    assert only_one_valid.tolist() == [1.0] * 3
    assert tas_scale(torch.zeros(0), 0.9, beta_max).shape == (0,)


def test_invalid_rows_are_excluded_from_statistics():
    scores = torch.tensor([0.1, 0.2, 0.3, 100.0, -50.0])
    valid = torch.tensor([True, True, True, False, False])
    alpha = tas_scale(scores, valid=valid)
    assert torch.allclose(alpha[:3], tas_scale(scores[:3]))
    assert alpha[3:].tolist() == [1.0, 1.0]
    # 0/1 vectors are accepted as valid masks.
    assert alpha.equal(tas_scale(scores, valid=valid.long()))


def test_group_scope_is_independent_per_group():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(12, generator=generator, dtype=torch.float64)
    group_ids = torch.tensor([7, 7, 7, 7, 3, 3, 3, 3, 3, -1, -1, 5])
    alpha = tas_scale(scores, 0.9, "dynamic", group_ids=group_ids)
    for group in group_ids.unique():
        members = group_ids == group
        assert torch.allclose(alpha[members], tas_scale(scores[members]), atol=1e-12)
        if int(members.sum()) >= 2:
            assert abs(float(alpha[members].mean()) - 1.0) < 1e-9
    assert alpha[11] == 1.0  # a group of one
    # Changing one group's scores leaves every other group untouched.
    changed = scores.clone()
    changed[:4] = torch.tensor([5.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    other = tas_scale(changed, 0.9, "dynamic", group_ids=group_ids)
    assert other[4:].equal(alpha[4:]) and not other[:4].equal(alpha[:4])
    # Fixed range: each group spans [β_min, β_max] on its own.
    fixed = tas_scale(scores, 0.8, 1.2, group_ids=group_ids)
    for group in (7, 3, -1):
        members = group_ids == group
        assert abs(float(fixed[members].min()) - 0.8) < 1e-9
        assert abs(float(fixed[members].max()) - 1.2) < 1e-9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta_min": 0.0}, "beta_min must be > 0"),
        ({"beta_min": -0.5, "beta_max": 1.0}, "beta_min must be > 0"),
        ({"beta_min": 1.2}, "beta_min must be <= 1"),
        ({"beta_min": 0.9, "beta_max": 0.9}, "beta_max must be finite and > beta_min"),
        ({"beta_min": 0.9, "beta_max": float("inf")}, "beta_max must be finite"),
        ({"beta_max": "dynamc"}, "beta_max must be a number or 'dynamic'"),
        ({"beta_max": None}, "beta_max must be a number or 'dynamic'"),
        ({"beta_min": float("nan")}, "beta_min must be finite"),
        ({"valid": torch.ones(3, dtype=torch.bool)}, "valid must be a 1-D tensor of length 4"),
        ({"group_ids": torch.zeros(4)}, "group_ids must be an integer tensor"),
        ({"group_ids": torch.zeros(3, dtype=torch.long)}, "group_ids must be a 1-D tensor"),
    ],
)
def test_tas_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tas_scale(torch.tensor([0.1, 0.2, 0.3, 0.4]), **kwargs)


def test_as_group_ids_relabels_integer_labels_and_names_bad_ones():
    labels = torch.tensor([7, -3, 7, 100, -3], dtype=torch.int32)
    got = as_group_ids(labels, 5)
    assert got.dtype == torch.long and got.tolist() == [1, 0, 1, 2, 0]
    assert as_group_ids(torch.zeros(0, dtype=torch.long), 0).tolist() == []
    bad = [
        ([0, 1, 2, 3], "group_ids must be a torch.Tensor, got list"),
        (torch.zeros(4), "group_ids must be an integer tensor, got dtype torch.float32"),
        (
            torch.zeros(4, dtype=torch.bool),
            "group_ids must be an integer tensor, got dtype torch.bool",
        ),
        (torch.zeros(4, dtype=torch.complex64), "group_ids must be an integer tensor"),
        (
            torch.zeros(3, dtype=torch.long),
            r"group_ids must be a 1-D tensor of length 4, got shape \(3,\)",
        ),
        (
            torch.zeros(2, 2, dtype=torch.long),
            r"must be a 1-D tensor of length 4, got shape \(2, 2\)",
        ),
    ]
    for value, message in bad:
        with pytest.raises(ValueError, match=message):
            as_group_ids(value, 4)
        with pytest.raises(ValueError, match=message):  # the same check, through tas_scale
            tas_scale(torch.tensor([0.1, 0.2, 0.3, 0.4]), group_ids=value)
    with pytest.raises(ValueError, match="prompt must be a torch.Tensor"):
        as_group_ids(None, 4, name="prompt")


def test_tas_rejects_nan_scores_naming_traj_dep():
    with pytest.raises(ValueError, match=r"traj_dep has a NaN or infinite value at row 1"):
        tas_scale(torch.tensor([0.1, float("nan"), 0.3]))
    with pytest.raises(ValueError, match="traj_dep must be a 1-D"):
        tas_scale(torch.ones(2, 2))


def _batch():
    generator = torch.Generator().manual_seed(1)
    lengths = torch.tensor([6, 3, 0, 8])
    mask = torch.arange(8).unsqueeze(0) < lengths.unsqueeze(-1)
    dep = torch.rand(4, 8, generator=generator).masked_fill(~mask, float("nan"))
    advantages = torch.tensor([1.5, -0.5, 2.0, -1.0])
    return advantages, dep, mask


def test_token_advantages_combine_tas_and_tgf():
    advantages, dep, mask = _batch()
    out = token_advantages(advantages, dep, mask)
    assert out.shape == mask.shape and out.dtype == torch.float32
    keep = tgf_mask(dep, mask, 0.4)
    trajectory = torch.where(mask, dep, 0.0).sum(-1) / mask.sum(-1).clamp(min=1)
    alpha = tas_scale(trajectory, valid=mask.any(-1))
    assert alpha[2] == 1.0  # the empty response is left out of the statistics
    assert abs(float(alpha[mask.any(-1)].mean()) - 1.0) < 1e-6
    expected = (advantages * alpha).unsqueeze(-1) * keep
    assert torch.allclose(out, expected)
    # Exact zeros at padding and at filtered tokens, non-zero elsewhere.
    assert (out[~keep] == 0).all() and (out[keep] != 0).all()
    assert keep.sum(-1).tolist() == [3, 2, 0, 4]


def test_token_advantages_switches_and_overrides():
    advantages, dep, mask = _batch()
    plain = token_advantages(advantages, None, mask, use_tas=False, use_tgf=False)
    assert plain.equal(torch.where(mask, advantages.unsqueeze(-1), 0.0))
    tgf_only = token_advantages(advantages, dep, mask, use_tas=False)
    assert tgf_only.equal(torch.where(tgf_mask(dep, mask), advantages.unsqueeze(-1), 0.0))
    scale = torch.tensor([2.0, 1.0, 1.0, 0.5])
    scaled = token_advantages(advantages, dep, mask, scale=scale, use_tgf=False)
    assert scaled.equal(torch.where(mask, (advantages * scale).unsqueeze(-1), 0.0))
    weights = torch.full((4, 8), 0.25)
    weighted = token_advantages(advantages, dep, mask, use_tas=False, token_weights=weights)
    assert weighted.equal(torch.where(mask, 0.25 * advantages.unsqueeze(-1), 0.0))
    fixed = token_advantages(advantages, dep, mask, beta_min=0.8, beta_max=1.2, ratio=1.0)
    trajectory = torch.where(mask, dep, 0.0).sum(-1) / mask.sum(-1).clamp(min=1)
    alpha = tas_scale(trajectory, 0.8, 1.2, valid=mask.any(-1))
    assert sorted(alpha[mask.any(-1)].tolist())[0] == pytest.approx(0.8)
    assert max(alpha.tolist()) == pytest.approx(1.2)
    assert torch.allclose(fixed, torch.where(mask, (advantages * alpha).unsqueeze(-1), 0.0))
    assert (fixed[mask] != 0).all()  # ratio 1 keeps every valid token
    assert token_advantages(advantages.double(), dep, mask).dtype == torch.float64


def test_token_advantages_validation():
    advantages, dep, mask = _batch()
    with pytest.raises(ValueError, match="dep is None"):
        token_advantages(advantages, None, mask)
    with pytest.raises(ValueError, match="dep is None"):
        token_advantages(advantages, None, mask, scale=torch.ones(4))
    with pytest.raises(ValueError, match="advantages must be a 1-D tensor of length 4"):
        token_advantages(advantages[:3], dep, mask)
    with pytest.raises(ValueError, match="advantages has a NaN"):
        token_advantages(torch.tensor([1.0, float("nan"), 0.0, 0.0]), dep, mask)
    with pytest.raises(ValueError, match="scale must be a 1-D tensor"):
        token_advantages(advantages, dep, mask, scale=torch.ones(4, 1))
    with pytest.raises(ValueError, match=r"token_weights must lie in \[0, 1\]"):
        token_advantages(advantages, dep, mask, token_weights=torch.full((4, 8), 1.5))
    with pytest.raises(ValueError, match="ratio"):
        token_advantages(advantages, dep, mask, ratio=0.0)
    with pytest.raises(ValueError, match="beta_max"):
        token_advantages(advantages, dep, mask, beta_max="fixed")
