"""Token selection: TGF top-k, soft weights, entropy/random/union baselines and the registry."""

from __future__ import annotations

import ast
import math
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vppo.algorithm
import vppo.algorithm.selection
from vppo.algorithm import (
    TOKEN_SELECTIONS,
    entropy_mask,
    kept_token_counts,
    random_token_mask,
    register_token_selection,
    select_tokens,
    soft_tgf_weights,
    tgf_mask,
    union_mask,
)

FAST = settings(max_examples=200, deadline=None)


@st.composite
def scored_batches(draw, max_rows: int = 5, max_len: int = 12):
    """(scores [B,T], arbitrary bool mask [B,T] incl. empty rows, ratio as an exact Fraction)."""
    rows = draw(st.integers(1, max_rows))
    length = draw(st.integers(0, max_len))
    # One bitmask per row (any pattern, empty rows included) and seeded scores keep drawing cheap.
    bits = draw(st.lists(st.integers(0, 2**length - 1), min_size=rows, max_size=rows))
    mask = (torch.tensor(bits).unsqueeze(-1) >> torch.arange(length)) & 1 == 1
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    # Few distinct levels make ties common; "continuous" draws give distinct scores instead.
    levels = draw(st.sampled_from([2, 3, 5, 0]))
    scores = torch.rand(rows, length, generator=generator) * 10 - 5
    if levels:
        scores = torch.floor(scores / 10 * levels)
    denominator = draw(st.integers(1, 20))
    ratio = Fraction(draw(st.integers(1, denominator)), denominator)
    return scores, mask, ratio


def exact_count(n: int, ratio: Fraction) -> int:
    return math.ceil(ratio * n)


@FAST
@given(scored_batches())
def test_tgf_keeps_exactly_ceil_ratio_n_top_tokens(batch):
    scores, mask, ratio = batch
    # Padding holds garbage that would win if it were ever considered.
    scores = scores.masked_fill(~mask, float("nan"))
    kept = tgf_mask(scores, mask, float(ratio))
    assert kept.dtype == torch.bool and kept.shape == mask.shape
    assert not (kept & ~mask).any()
    for row in range(mask.shape[0]):
        n = int(mask[row].sum())
        assert int(kept[row].sum()) == exact_count(n, ratio)
        kept_scores = scores[row][kept[row]]
        dropped = mask[row] & ~kept[row]
        dropped_scores = scores[row][dropped]
        if len(kept_scores) and len(dropped_scores):
            assert kept_scores.min() >= dropped_scores.max()
            # Tie-break: among tokens scoring exactly the threshold, the earlier ones are kept.
            threshold = kept_scores.min()
            tied_kept = (kept[row] & (scores[row] == threshold)).nonzero().flatten()
            tied_dropped = (dropped & (scores[row] == threshold)).nonzero().flatten()
            if len(tied_dropped):
                assert tied_kept.max() < tied_dropped.min()


def test_tgf_tie_break_prefers_earlier_positions():
    dep = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 1.0, 2.0, 2.0]])
    mask = torch.ones(2, 5, dtype=torch.bool)
    kept = tgf_mask(dep, mask, 0.4)
    assert kept.tolist() == [
        [True, True, False, False, False],
        [False, True, False, True, False],
    ]


def test_tgf_never_selects_padding_even_with_large_padding_scores():
    dep = torch.tensor([[0.1, 0.2, 100.0, 100.0]])
    mask = torch.tensor([[True, True, False, False]])
    assert tgf_mask(dep, mask, 1.0).tolist() == [[True, True, False, False]]


FLOAT32_0_4 = torch.tensor(0.4, dtype=torch.float32).item()  # 0.4000000059604645


@pytest.mark.parametrize(
    ("n", "ratio", "expected"),
    [
        (5, 0.4, 2),
        (10, 0.4, 4),
        (10, 0.3, 3),
        (100, 0.07, 7),
        (50, 0.14, 7),
        (25, 0.28, 7),
        (50, 0.3, 15),
        (25, 0.6, 15),
        (5, FLOAT32_0_4, 2),
        (10, FLOAT32_0_4, 4),
        (30, 0.1, 3),
        (7, 0.7, 5),
        (3, 0.4, 2),
        (5, 0.41, 3),
        (1, 0.4, 1),
        (5, 1e-12, 1),
        (0, 0.4, 0),
        (1_000_000, 0.4, 400_000),
        (1_000_001, 0.4, 400_001),
        (10, 1.0, 10),
    ],
)
def test_kept_token_counts_ceil_is_robust_to_float_noise(n, ratio, expected):
    assert kept_token_counts(torch.tensor([n]), ratio).tolist() == [expected]
    if 0 < n <= 100:
        dep = torch.arange(n, dtype=torch.float32).unsqueeze(0)
        mask = torch.ones(1, n, dtype=torch.bool)
        assert int(tgf_mask(dep, mask, ratio).sum()) == expected


def test_naive_float_ceiling_really_overcounts():
    # Some cases above keep one token too many with a plain float ceiling, in float64 or float32.
    assert math.ceil(0.07 * 100) == 8
    assert math.ceil(FLOAT32_0_4 * 5) == 3
    assert int(torch.ceil(torch.tensor(50) * 0.3)) == 16


def test_kept_token_counts_rejects_bad_counts():
    with pytest.raises(ValueError, match="n_valid"):
        kept_token_counts(torch.tensor([1.5]), 0.4)
    with pytest.raises(ValueError, match="n_valid"):
        kept_token_counts(torch.tensor([-1]), 0.4)


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.01, float("nan"), True, "0.4", None])
def test_ratio_out_of_range_names_ratio(ratio):
    dep, mask = torch.ones(1, 3), torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="ratio"):
        tgf_mask(dep, mask, ratio)


def test_bad_dep_and_mask_inputs_are_named():
    mask = torch.tensor([[True, True, False]])
    with pytest.raises(ValueError, match=r"dep .*row 0, token 1"):
        tgf_mask(torch.tensor([[0.0, float("nan"), 0.0]]), mask)
    with pytest.raises(ValueError, match="dep must have the shape of mask"):
        tgf_mask(torch.ones(1, 4), mask)
    with pytest.raises(ValueError, match="mask must be boolean or contain only 0 and 1"):
        tgf_mask(torch.ones(1, 3), torch.tensor([[1, 2, 0]]))
    with pytest.raises(ValueError, match=r"mask must be a 2-D"):
        tgf_mask(torch.ones(3), torch.ones(3, dtype=torch.bool))
    # Non-finite values at padding are ignored, and 0/1 integer masks behave like bool masks.
    dep = torch.tensor([[0.3, 0.1, float("inf")]])
    assert tgf_mask(dep, mask.long(), 0.5).equal(tgf_mask(dep, mask, 0.5))


@st.composite
def soft_batches(draw):
    rows = draw(st.integers(1, 4))
    length = draw(st.integers(1, 16))
    lengths = draw(st.lists(st.integers(0, length), min_size=rows, max_size=rows))
    mask = torch.arange(length).unsqueeze(0) < torch.tensor(lengths).unsqueeze(-1)
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    # Heavy-tailed scores in [0, 10] like clamped k3 dependencies, sometimes with ties.
    dep = (torch.rand(rows, length, generator=generator, dtype=torch.float64) ** 4) * 10
    if draw(st.booleans()):
        dep = dep.round()
    ratio = draw(st.sampled_from([0.1, 0.2, 0.4, 0.5, 0.6, 0.8, 0.95]))
    return dep, mask, ratio


@FAST
@given(soft_batches())
def test_soft_weights_mean_equals_ratio_and_are_monotone(batch):
    dep, mask, ratio = batch
    weights = soft_tgf_weights(dep, mask, ratio)
    assert weights.dtype == torch.float64
    assert (weights[~mask] == 0).all()
    assert ((weights >= 0) & (weights <= 1)).all()
    for row in range(dep.shape[0]):
        valid = mask[row]
        if not valid.any():
            continue
        assert abs(float(weights[row][valid].mean()) - ratio) < 1e-4
        order = torch.argsort(dep[row][valid])
        sorted_weights = weights[row][valid][order]
        assert (sorted_weights[1:] >= sorted_weights[:-1] - 1e-12).all()


def test_soft_weights_special_rows():
    dep = torch.tensor([[2.0, 2.0, 2.0, 9.0], [5.0, 0.0, 0.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    for eps in (1e-6, 0.0):
        weights = soft_tgf_weights(dep, mask, 0.4, eps=eps)
        assert weights.dtype == torch.float32
        assert torch.allclose(weights[0, :3], torch.full((3,), 0.4))  # constant row
        assert weights[0, 3] == 0 and torch.isclose(weights[1, 0], torch.tensor(0.4))
        assert (weights[2] == 0).all()  # empty row
    assert soft_tgf_weights(dep, mask, 1.0).equal(mask.float())
    # A spread row: high-dependency tokens get more weight than the ratio, low ones less.
    spread = soft_tgf_weights(
        torch.tensor([[0.0, 0.0, 0.0, 0.0, 10.0]]), torch.ones(1, 5, dtype=torch.bool), 0.4
    )
    assert spread[0, 4] > 0.8 and (spread[0, :4] < 0.4).all()
    with pytest.raises(ValueError, match="eps"):
        soft_tgf_weights(dep, mask, 0.4, eps=-1.0)


def test_entropy_mask_uses_the_same_top_k_path():
    generator = torch.Generator().manual_seed(3)
    scores = torch.rand(6, 9, generator=generator).round(decimals=1)
    mask = torch.rand(6, 9, generator=generator) > 0.3
    assert entropy_mask(scores, mask, 0.4).equal(tgf_mask(scores, mask, 0.4))
    with pytest.raises(ValueError, match="entropy"):
        entropy_mask(torch.full((6, 9), float("nan")), mask, 0.4)


def test_random_token_mask_is_seeded_exact_and_uniform():
    lengths = torch.tensor([0, 1, 5, 7, 10])
    mask = torch.arange(10).unsqueeze(0) < lengths.unsqueeze(-1)
    first = random_token_mask(mask, 0.4, torch.Generator().manual_seed(0))
    again = random_token_mask(mask, 0.4, torch.Generator().manual_seed(0))
    other = random_token_mask(mask, 0.4, torch.Generator().manual_seed(1))
    assert first.equal(again)
    assert first.sum(-1).tolist() == [0, 1, 2, 3, 4]
    assert not (first & ~mask).any()
    assert not first.equal(other)
    # Every position of a length-5 row is kept with probability 2/5.
    many = random_token_mask(
        torch.ones(4000, 5, dtype=torch.bool), 0.4, torch.Generator().manual_seed(7)
    )
    assert (many.sum(-1) == 2).all()
    frequency = many.float().mean(0)
    assert ((frequency - 0.4).abs() < 0.03).all()
    with pytest.raises(ValueError, match="generator"):
        random_token_mask(mask, 0.4, generator=0)


def test_union_mask():
    a = torch.tensor([[True, False, False, True]])
    b = torch.tensor([[False, False, True, True]])
    assert union_mask(a, b).tolist() == [[True, False, True, True]]
    with pytest.raises(ValueError, match="b must have the shape of a"):
        union_mask(a, torch.ones(1, 3, dtype=torch.bool))


def test_select_tokens_registry():
    generator = torch.Generator().manual_seed(5)
    dep = torch.rand(3, 8, generator=generator)
    entropy = torch.rand(3, 8, generator=generator)
    mask = torch.arange(8).unsqueeze(0) < torch.tensor([[8], [5], [0]])
    assert set(TOKEN_SELECTIONS) == {"topk", "soft", "entropy", "random", "union", "none"}
    for name in TOKEN_SELECTIONS:
        weights = select_tokens(
            name,
            dep=dep,
            mask=mask,
            ratio=0.4,
            entropy=entropy,
            generator=torch.Generator().manual_seed(0),
        )
        assert weights.dtype == torch.float32 and weights.shape == mask.shape
        assert ((weights >= 0) & (weights <= 1)).all() and (weights[~mask] == 0).all()
    topk = tgf_mask(dep, mask, 0.4)
    top_entropy = entropy_mask(entropy, mask, 0.4)
    assert select_tokens("topk", dep=dep, mask=mask, ratio=0.4).equal(topk.float())
    assert select_tokens("none", mask=mask, ratio=0.4).equal(mask.float())
    assert select_tokens("entropy", mask=mask, ratio=0.4, entropy=entropy).equal(
        top_entropy.float()
    )
    assert select_tokens("union", dep=dep, mask=mask, ratio=0.4, entropy=entropy).equal(
        (topk | top_entropy).float()
    )
    assert select_tokens("soft", dep=dep, mask=mask, ratio=0.4).equal(
        soft_tgf_weights(dep, mask, 0.4)
    )
    assert select_tokens(
        "random", mask=mask, ratio=0.4, generator=torch.Generator().manual_seed(9)
    ).equal(random_token_mask(mask, 0.4, torch.Generator().manual_seed(9)).float())

    with pytest.raises(ValueError, match=r"'bogus'.*entropy, none, random, soft, topk, union"):
        select_tokens("bogus", dep=dep, mask=mask, ratio=0.4)
    with pytest.raises(ValueError, match=r"entropy is required by token selection 'union'"):
        select_tokens("union", dep=dep, mask=mask, ratio=0.4)
    with pytest.raises(ValueError, match=r"dep is required by token selection 'topk'"):
        select_tokens("topk", mask=mask, ratio=0.4)
    with pytest.raises(ValueError, match="ratio"):
        select_tokens("none", mask=mask, ratio=2.0)
    with pytest.raises(ValueError, match="already a registered"):
        register_token_selection(
            "topk", needs_dependency=True, needs_entropy=False, description="duplicate"
        )(lambda **_: mask.float())


def _old_trainer_union(dep, entropies, mask, token_ratio, entropy_ratio):
    """The special case VPPOTrainer._apply_vppo used for "union" before it went through select_tokens."""
    entropy_ratio = entropy_ratio or token_ratio
    return (
        tgf_mask(dep, mask, token_ratio) | tgf_mask(entropies.float(), mask, entropy_ratio)
    ).float()


@FAST
@given(
    scored_batches(),
    st.integers(0, 2**32 - 1),
    st.one_of(st.none(), st.integers(1, 20)),
    st.sampled_from([torch.float32, torch.bfloat16, torch.float64]),
)
def test_union_through_select_tokens_equals_the_old_trainer_union(batch, seed, twentieths, dtype):
    dep, mask, ratio = batch
    # Entropies with ties too (a few levels), in the dtypes the trainer sees before .float().
    generator = torch.Generator().manual_seed(seed)
    entropies = torch.floor(torch.rand(dep.shape, generator=generator) * 4).to(dtype)
    entropy_ratio = None if twentieths is None else twentieths / 20
    want = _old_trainer_union(dep, entropies, mask, float(ratio), entropy_ratio)
    got = select_tokens(
        "union",
        dep=dep,
        mask=mask,
        ratio=float(ratio),
        entropy=entropies.float(),
        generator=torch.Generator().manual_seed(0),
        entropy_ratio=entropy_ratio,
    )
    assert got.dtype == want.dtype == torch.float32 and torch.equal(got, want)


def test_entropy_ratio_is_validated_and_used_only_by_union():
    generator = torch.Generator().manual_seed(2)
    dep = torch.rand(3, 10, generator=generator)
    entropy = torch.rand(3, 10, generator=generator)
    mask = torch.arange(10).unsqueeze(0) < torch.tensor([[10], [7], [0]])
    kwargs = {"dep": dep, "mask": mask, "entropy": entropy}
    wide = select_tokens("union", ratio=0.2, entropy_ratio=0.9, **kwargs)
    assert wide.equal((tgf_mask(dep, mask, 0.2) | entropy_mask(entropy, mask, 0.9)).float())
    assert not wide.equal(select_tokens("union", ratio=0.2, **kwargs))
    for name in ("topk", "soft", "entropy", "random", "none"):
        seeded = {"generator": torch.Generator().manual_seed(4)}
        with_it = select_tokens(name, ratio=0.2, entropy_ratio=0.9, **kwargs, **seeded)
        seeded = {"generator": torch.Generator().manual_seed(4)}
        assert with_it.equal(select_tokens(name, ratio=0.2, **kwargs, **seeded)), name
    for bad in (0.0, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="entropy_ratio must be"):
            select_tokens("none", mask=mask, ratio=0.4, entropy_ratio=bad)


def test_builders_take_every_input_by_keyword_and_ignore_the_rest():
    generator = torch.Generator().manual_seed(3)
    dep = torch.rand(2, 6, generator=generator)
    mask = torch.ones(2, 6, dtype=torch.bool)
    inputs = {
        "dep": dep,
        "mask": mask,
        "ratio": 0.5,
        "entropy": dep.flip(-1),
        "generator": torch.Generator().manual_seed(1),
        "entropy_ratio": 0.5,
        "a_future_input": object(),
    }
    for selection in TOKEN_SELECTIONS.values():
        assert selection.build(**inputs).shape == mask.shape
        with pytest.raises(TypeError):
            selection.build(dep, mask, 0.5)  # keyword-only


def test_registry_is_exported_with_the_flags_the_trainer_retypes_today():
    assert vppo.algorithm.TOKEN_SELECTIONS is vppo.algorithm.selection.TOKEN_SELECTIONS
    assert vppo.algorithm.TokenSelection is vppo.algorithm.selection.TokenSelection
    assert "TOKEN_SELECTIONS" in vppo.algorithm.__all__
    # The sets config.py / trainer.py spell out as tuples: switching to the flags changes nothing.
    needs_dependency = {n for n, s in TOKEN_SELECTIONS.items() if s.needs_dependency}
    needs_entropy = {n for n, s in TOKEN_SELECTIONS.items() if s.needs_entropy}
    assert needs_dependency == {"topk", "soft", "union"}
    assert needs_entropy == {"entropy", "union"}
    assert tuple(TOKEN_SELECTIONS) == ("topk", "soft", "entropy", "random", "union", "none")
    assert all(s.description and s.name == n for n, s in TOKEN_SELECTIONS.items())


def test_algorithm_package_imports_only_torch_and_the_standard_library():
    # vppo._tensor_checks is the checks module shared with vppo.perception; it is scanned too.
    package = Path(vppo.algorithm.__file__).parent
    sources = [*package.glob("*.py"), package.parent / "_tensor_checks.py"]
    imported = set()
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module)
    outside = {
        name
        for name in imported
        if name.split(".")[0] not in sys.stdlib_module_names | {"torch", "__future__"}
        and not name.startswith("vppo.algorithm")
        and name != "vppo._tensor_checks"
    }
    assert not outside, f"vppo.algorithm imports {sorted(outside)}"
