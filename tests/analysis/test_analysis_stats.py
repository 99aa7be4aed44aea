"""vppo.analysis.stats: statistics with known answers on constructed inputs (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vppo.analysis import (
    correlation_summary,
    distribution_summary,
    gini,
    mass_share_top,
    pearson,
    perception_statistics,
    spearman,
)


def _one_row(values, t=None):
    values = torch.tensor([values], dtype=torch.float64)
    mask = torch.ones_like(values, dtype=torch.bool)
    return values, mask


def test_all_mass_on_one_token_gives_full_top_shares_and_maximal_gini():
    dep = torch.zeros(1, 20, dtype=torch.float64)
    dep[0, 5] = 3.0
    stats = perception_statistics(dep, torch.ones(1, 20, dtype=torch.bool))
    tok = stats["token_dependency"]
    assert tok["mass_share_top"]["top_10%"] == pytest.approx(1.0)
    assert tok["mass_share_top"]["top_40%"] == pytest.approx(1.0)
    assert tok["mass_share_top_per_response"]["top_10%"] == pytest.approx(1.0)
    assert tok["gini"] == pytest.approx(19 / 20)
    assert tok["share_zero"] == pytest.approx(19 / 20)
    assert stats["selection"]["dependency_share_selected"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "n, top10, top40", [(10, 0.1, 0.4), (7, 1 / 7, 3 / 7), (25, 3 / 25, 10 / 25)]
)
def test_uniform_dependency_shares_equal_the_kept_fraction(n, top10, top40):
    dep, mask = _one_row([0.5] * n)
    tok = perception_statistics(dep, mask)["token_dependency"]
    assert tok["mass_share_top"]["top_10%"] == pytest.approx(top10)
    assert tok["mass_share_top"]["top_40%"] == pytest.approx(top40)
    assert tok["gini"] == pytest.approx(0.0, abs=1e-12)


def test_quantiles_thresholds_and_clip_share():
    values = np.arange(0, 101, dtype=np.float64) / 10.0  # 0.0, 0.1, ..., 10.0
    dep, mask = _one_row(values.tolist())
    tok = perception_statistics(dep, mask, clip=10.0, thresholds=(0.5, 5.0))["token_dependency"]
    assert tok["quantiles"]["p50"] == pytest.approx(5.0)
    assert tok["quantiles"]["p90"] == pytest.approx(9.0)
    assert tok["median"] == pytest.approx(5.0)
    assert tok["max"] == pytest.approx(10.0)
    assert tok["share_above"]["0.5"] == pytest.approx(95 / 101)
    assert tok["share_above"]["5"] == pytest.approx(50 / 101)
    assert tok["share_at_clip"] == pytest.approx(1 / 101)


def test_padding_is_ignored_even_when_it_holds_garbage():
    dep = torch.tensor([[1.0, 2.0, float("nan")], [3.0, float("inf"), -5.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    stats = perception_statistics(dep, mask)
    assert stats["num_tokens"] == 3
    assert stats["token_dependency"]["mean"] == pytest.approx(2.0)
    assert stats["trajectory_dependency"]["mean"] == pytest.approx((1.5 + 3.0) / 2)


def test_numpy_and_torch_inputs_agree():
    rng = np.random.default_rng(0)
    dep = rng.exponential(0.2, size=(4, 9))
    mask = rng.random((4, 9)) > 0.2
    a = perception_statistics(dep, mask, entropy=dep[::-1].copy())
    b = perception_statistics(
        torch.tensor(dep), torch.tensor(mask), entropy=torch.tensor(dep[::-1].copy())
    )
    assert a == b


def test_empty_response_counts_but_does_not_enter_trajectory_statistics():
    dep = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    mask = torch.tensor([[True, True], [False, False]])
    stats = perception_statistics(dep, mask, correct=[1, 0])
    assert stats["num_empty_responses"] == 1
    assert stats["trajectory_dependency"]["count"] == 1
    assert stats["trajectory_dependency"]["mean"] == pytest.approx(2.0)
    assert stats["correctness"]["n"] == 1


def test_point_biserial_and_spearman_have_the_constructed_sign_and_value():
    traj = [1.0, 2.0, 3.0, 4.0]
    up = correlation_summary(traj, [0, 0, 1, 1])
    assert up["point_biserial"] == pytest.approx(2 / math.sqrt(5))
    assert up["spearman"] == pytest.approx(2 / math.sqrt(5))
    assert up["accuracy"] == pytest.approx(0.5)
    assert up["mean_dependency_correct"] == pytest.approx(3.5)
    assert up["mean_dependency_incorrect"] == pytest.approx(1.5)
    z, half = math.atanh(2 / math.sqrt(5)), 1.959963984540054  # Fisher z, se = 1/sqrt(4 - 3)
    assert up["point_biserial_ci95"] == pytest.approx([math.tanh(z - half), math.tanh(z + half)])
    assert correlation_summary(traj[:3], [0, 1, 1])["point_biserial_ci95"] is None  # needs n > 3
    down = correlation_summary(traj, [1, 1, 0, 0])
    assert down["point_biserial"] == pytest.approx(-2 / math.sqrt(5))
    assert down["spearman"] < 0


def test_correlation_through_perception_statistics_uses_trajectory_dependency():
    rng = np.random.default_rng(1)
    correct = np.array([i % 2 for i in range(40)], dtype=float)
    dep = rng.exponential(0.05, size=(40, 12)) + correct[:, None] * 0.3
    stats = perception_statistics(dep, np.ones_like(dep, dtype=bool), correct=correct)
    corr = stats["correctness"]
    assert corr["point_biserial"] > 0.8
    lo, hi = corr["point_biserial_ci95"]
    assert lo < corr["point_biserial"] < hi


@pytest.mark.parametrize(
    "traj, correct, note",
    [
        ([0.1, 0.2, 0.3], [0, 0, 0], "all incorrect"),
        ([0.1, 0.2, 0.3], [1, 1, 1], "all correct"),
        ([0.2, 0.2, 0.2], [0, 1, 0], "trajectory dependency is constant"),
        ([0.2], [1], "fewer than 2"),
    ],
)
def test_constant_inputs_give_no_correlation_and_say_why(traj, correct, note):
    out = correlation_summary(traj, correct)
    assert out["point_biserial"] is None and out["spearman"] is None
    assert note in out["note"]


def test_spearman_ranks_ties_and_is_invariant_to_monotone_transforms():
    x = np.array([0.3, 1.0, 5.0, 0.01, 2.0])
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)
    # ties get average ranks: y ranks are [1.5, 1.5, 3], x ranks [1, 2, 3]
    assert spearman([1, 2, 3], [5, 5, 9]) == pytest.approx(pearson([1, 2, 3], [1.5, 1.5, 3]))
    assert pearson([1, 1, 1], [1, 2, 3]) is None


def test_dependency_vs_entropy_overlap_identical_reversed_and_chance():
    dep = torch.arange(1, 11, dtype=torch.float64).view(1, 10)
    mask = torch.ones(1, 10, dtype=torch.bool)
    same = perception_statistics(dep, mask, entropy=dep.clone())["entropy"]
    assert same["jaccard"] == pytest.approx(1.0)
    assert same["overlap_fraction"] == pytest.approx(1.0)
    assert same["spearman_tokens"] == pytest.approx(1.0)
    reversed_ = perception_statistics(dep, mask, entropy=dep.flip(-1))["entropy"]
    assert reversed_["jaccard"] == pytest.approx(0.0)
    assert reversed_["spearman_tokens"] == pytest.approx(-1.0)
    assert reversed_["random_overlap_fraction"] == pytest.approx(0.4)
    # top 4 by dep = positions 6..9; by entropy = 5..8 -> |∩| = 3, |∪| = 5
    shifted = torch.roll(dep, 1, dims=-1)
    part = perception_statistics(dep, mask, entropy=shifted)["entropy"]
    assert part["jaccard"] == pytest.approx(3 / 5)
    assert part["overlap_fraction"] == pytest.approx(3 / 4)


def test_token_strings_aggregate_by_stripped_text_and_count_tgf_selection():
    dep = torch.tensor([[5.0, 0.1, 0.2, 0.0, 4.0], [6.0, 0.1, 0.0, 0.3, 0.0]], dtype=torch.float64)
    mask = torch.ones_like(dep, dtype=torch.bool)
    tokens = [[" 25", " the", " is", "\n", "25"], ["25", " the", "\n", " is", " x"]]
    stats = perception_statistics(dep, mask, tokens=tokens, min_token_count=2)
    table = stats["token_strings"]["by_mean_dependency"]
    assert [r["token"] for r in table] == ["25", "is", "the", "'\\n'"]
    first = table[0]
    assert first["count"] == 3 and first["mean_dependency"] == pytest.approx(5.0)
    assert first["selected_share"] == pytest.approx(1.0)  # ceil(0.4 * 5) = 2 kept per response
    assert table[2]["selected_share"] == pytest.approx(0.0)
    assert "x" not in [r["token"] for r in table]  # occurs once < min_token_count
    totals = stats["token_strings"]["by_total_dependency"]
    assert totals[0]["token"] == "25" and totals[0]["total_dependency"] == pytest.approx(15.0)


def test_tokens_may_be_aligned_with_t_or_list_only_valid_tokens():
    dep = torch.tensor([[1.0, 2.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    a = perception_statistics(dep, mask, tokens=[["a", "b", "<pad>"]], min_token_count=1)
    b = perception_statistics(dep, mask, tokens=[["a", "b"]], min_token_count=1)
    assert a["token_strings"] == b["token_strings"]
    with pytest.raises(ValueError, match=r"tokens\[0\] has 1 strings"):
        perception_statistics(dep, mask, tokens=[["a"]])


def test_trajectory_distribution_skew_sign():
    right = distribution_summary([0.0] * 20 + [1.0, 5.0])
    assert right["skewness"] > 1
    assert distribution_summary([1.0, 1.0, 1.0])["skewness"] is None
    empty = distribution_summary([])
    assert empty["count"] == 0 and empty["mean"] is None


def test_undefined_shares_are_none():
    assert mass_share_top([0.0, 0.0], 0.1) is None
    assert mass_share_top([], 0.4) is None
    assert gini([0.0, 0.0]) is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dep": [[float("nan"), 1.0]]}, "dep has 1 NaN/inf"),
        ({"dep": [[-0.5, 1.0]]}, "non-negative"),
        ({"dep": [[1.0, 1.0, 1.0]]}, "shape of mask"),
        ({"ratio": 0.0}, "ratio must be in"),
        ({"correct": [1, 0]}, r"correct must have shape \(1,\)"),
        ({"correct": [0.5]}, "only 0/1"),
        ({"entropy": [[1.0, float("inf")]]}, "entropy has 1 NaN/inf"),
    ],
)
def test_bad_inputs_raise_one_clear_sentence(kwargs, match):
    args = {"dep": [[0.5, 1.0]], "mask": [[True, True]], **kwargs}
    dep, mask = args.pop("dep"), args.pop("mask")
    with pytest.raises(ValueError, match=match):
        perception_statistics(dep, mask, **args)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=60),
    st.sampled_from([0.1, 0.25, 0.4, 0.8, 1.0]),
)
def test_top_share_is_at_least_the_kept_fraction_and_monotone(values, fraction):
    share = mass_share_top(values, fraction)
    if sum(values) == 0:
        assert share is None
        return
    k = math.ceil(round(fraction * len(values), 9))
    assert k / len(values) - 1e-9 <= share <= 1.0 + 1e-12
    assert mass_share_top(values, 1.0) == pytest.approx(1.0)
    if fraction < 1.0:
        assert mass_share_top(values, min(1.0, fraction * 2)) >= share - 1e-12
