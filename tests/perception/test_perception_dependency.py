"""Tests for vppo.perception.dependency: token / distribution / chunked full-KL estimators."""

from __future__ import annotations

import ast
import math
import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

import vppo.perception
from vppo.algorithm import tgf_mask
from vppo.perception import (
    DEPENDENCY_ESTIMATORS,
    DISTRIBUTION_ESTIMATORS,
    TOKEN_ESTIMATORS,
    dependency_from_passes,
    distribution_dependency,
    full_kl_dependency,
    token_dependency,
    trajectory_dependency,
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _assert_close(got, want, rtol=0.0, atol=1e-6):
    """Max-abs-diff comparison (torch.testing.assert_close imports torch.distributed: slow)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    got, want = got.double(), want.double()
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got), finite) and torch.equal(got[~finite], want[~finite])
    diff = (got[finite] - want[finite]).abs()
    bound = atol + rtol * want[finite].abs()
    assert bool((diff <= bound).all()), f"max abs diff {float(diff.max())} exceeds tolerance"


def _naive_divergence(logits_real, logits_perturbed, estimator):
    """Reference implementation in float64 on full [..., V] logits."""
    logp = torch.log_softmax(logits_real.double(), -1)
    logq = torch.log_softmax(logits_perturbed.double(), -1)
    p, q = logp.exp(), logq.exp()
    if estimator == "kl":
        return (p * (logp - logq)).sum(-1)
    m = 0.5 * (p + q)
    return 0.5 * (p * (logp - m.log())).sum(-1) + 0.5 * (q * (logq - m.log())).sum(-1)


def _lengths_mask(lengths, max_len):
    return torch.arange(max_len)[None, :] < torch.tensor(lengths)[:, None]


def _hidden_problem(batch, max_len, hidden, vocab, seed, lengths=None):
    g = torch.Generator().manual_seed(seed)
    h_real = torch.randn(batch, max_len, hidden, generator=g)
    h_pert = h_real + 0.7 * torch.randn(batch, max_len, hidden, generator=g)
    weight = 0.6 * torch.randn(vocab, hidden, generator=g)
    bias = 0.3 * torch.randn(vocab, generator=g)
    if lengths is None:
        lengths = [max_len - 3 * i for i in range(batch)]
    return h_real, h_pert, weight, bias, _lengths_mask(lengths, max_len)


class _MaxNumelMode(TorchFunctionMode):
    """Records the largest numel of any tensor returned by a torch call (views included).

    A TorchFunctionMode sees every torch function / Tensor method call made from Python; a
    TorchDispatchMode would be more precise but imports torch._dynamo, which is slow.
    """

    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.max_numel = max(self.max_numel, leaf.numel())
        return out


# --------------------------------------------------------------------------------------------
# 1. chunked exact KL / JSD
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["kl", "jsd"])
@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_full_kl_matches_naive_full_softmax(estimator, chunk_size):
    h_real, h_pert, weight, bias, mask = _hidden_problem(3, 20, 16, 300, seed=0, lengths=[20, 9, 0])
    temperature = 0.8
    got = full_kl_dependency(
        h_real,
        h_pert,
        weight,
        mask,
        temperature=temperature,
        chunk_size=chunk_size,
        estimator=estimator,
        lm_head_bias=bias,
    )
    logits_real = (h_real.double() @ weight.double().T + bias.double()) / temperature
    logits_pert = (h_pert.double() @ weight.double().T + bias.double()) / temperature
    want = _naive_divergence(logits_real, logits_pert, estimator) * mask
    assert got.shape == (3, 20) and got.dtype == torch.float32
    assert float(want[mask].min()) > 1e-3  # the comparison is not between zeros
    _assert_close(got.double(), want, rtol=0, atol=1e-5)
    assert torch.all(got[~mask] == 0)
    assert not got.requires_grad


def test_full_kl_bf16_inputs_computed_in_float32():
    h_real, h_pert, weight, _, mask = _hidden_problem(2, 12, 16, 200, seed=1)
    h_real, h_pert, weight = h_real.bfloat16(), h_pert.bfloat16(), weight.bfloat16()
    # chunk 3 -> vocab blocks of 3*200//16 = 37 rows: exercises the blockwise weight upcast.
    got = full_kl_dependency(h_real, h_pert, weight, mask, chunk_size=3)
    assert got.dtype == torch.float32
    want = _naive_divergence(
        h_real.double() @ weight.double().T, h_pert.double() @ weight.double().T, "kl"
    )
    _assert_close(got.double(), want * mask, rtol=0, atol=1e-5)


def test_full_kl_agrees_with_distribution_dependency():
    h_real, h_pert, weight, bias, mask = _hidden_problem(2, 10, 8, 64, seed=2)
    for estimator in DISTRIBUTION_ESTIMATORS:
        chunked = full_kl_dependency(
            h_real,
            h_pert,
            weight,
            mask,
            temperature=1.3,
            chunk_size=4,
            estimator=estimator,
            lm_head_bias=bias,
        )
        full = distribution_dependency(
            h_real @ weight.T + bias, h_pert @ weight.T + bias, mask, estimator, temperature=1.3
        )
        _assert_close(chunked, full, rtol=0, atol=1e-5)


def test_full_kl_peak_memory_does_not_grow_with_sequence_length():
    chunk, vocab, hidden = 32, 1000, 16
    peaks = {}
    for max_len in (64, 512):
        h_real, h_pert, weight, _, mask = _hidden_problem(
            2, max_len, hidden, vocab, seed=3, lengths=[max_len, max_len // 2]
        )
        with _MaxNumelMode() as mode:
            full_kl_dependency(h_real, h_pert, weight, mask, chunk_size=chunk, estimator="jsd")
        peaks[max_len] = mode.max_numel
    # Real and perturbed logits of one chunk, [2*chunk, V], are the largest tensor; a naive
    # implementation would allocate [B, T, V] = 1,024,000 elements at T = 512.
    assert peaks[64] == peaks[512] <= 2 * chunk * vocab


def test_full_kl_validation():
    h_real, h_pert, weight, _, mask = _hidden_problem(2, 5, 4, 10, seed=4)
    with pytest.raises(ValueError, match="chunk_size"):
        full_kl_dependency(h_real, h_pert, weight, mask, chunk_size=0)
    with pytest.raises(ValueError, match="lm_head_weight"):
        full_kl_dependency(h_real, h_pert, weight[:, :3], mask)
    with pytest.raises(ValueError, match="temperature"):
        full_kl_dependency(h_real, h_pert, weight, mask, temperature=0.0)
    with pytest.raises(ValueError, match="valid estimators are jsd, kl"):
        full_kl_dependency(h_real, h_pert, weight, mask, estimator="k3")
    # The tensor checks live in _check_hidden_inputs; each one still fires through the public call.
    with pytest.raises(ValueError, match="hidden_perturbed must be a floating-point"):
        full_kl_dependency(h_real, h_pert.long(), weight, mask)
    with pytest.raises(ValueError, match=r"must both have shape \[B, T, H\]"):
        full_kl_dependency(h_real, h_pert[:, :4], weight, mask)
    with pytest.raises(ValueError, match=r"lm_head_bias must have shape \[10\]"):
        full_kl_dependency(h_real, h_pert, weight, mask, lm_head_bias=torch.zeros(9))
    with pytest.raises(ValueError, match="must be on the same device"):
        full_kl_dependency(h_real, h_pert, weight.to("meta"), mask)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 4\)"):
        full_kl_dependency(h_real, h_pert, weight, mask[:, :4])
    bad = h_pert.clone()
    bad[1, 4] = float("nan")  # row 1 has length 2: position 4 is padding, ignored
    assert torch.isfinite(full_kl_dependency(h_real, bad, weight, mask)).all()
    bad[0, 1, 0] = float("inf")
    with pytest.raises(ValueError, match="hidden_perturbed has non-finite values at 1 valid"):
        full_kl_dependency(h_real, bad, weight, mask)


# --------------------------------------------------------------------------------------------
# 2. k3 is an unbiased Monte-Carlo estimate of KL(pi_I || pi_I')
# --------------------------------------------------------------------------------------------


def test_k3_mean_over_sampled_tokens_estimates_exact_kl():
    g = torch.Generator().manual_seed(0)
    vocab = 50
    logits_real = 1.5 * torch.randn(vocab, generator=g, dtype=torch.float64)
    logits_pert = 1.5 * torch.randn(vocab, generator=g, dtype=torch.float64)
    logp, logq = torch.log_softmax(logits_real, -1), torch.log_softmax(logits_pert, -1)
    exact = float((logp.exp() * (logp - logq)).sum())
    tokens = torch.multinomial(logp.exp(), 200_000, replacement=True, generator=g).reshape(400, 500)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    # clip=inf: the default clip of 10 would truncate the rare large-ratio tokens and bias the
    # mean downwards; the +-20 log-ratio clamp never binds for these logits.
    assert float((logq - logp).abs().max()) < 20
    scores = token_dependency(logp[tokens], logq[tokens], mask, clip=float("inf"))
    assert exact > 0.5
    assert abs(float(scores.mean()) - exact) / exact < 0.03
    # The sampled-token probability drop is not a KL estimate: its mean is far from it.
    drops = token_dependency(logp[tokens], logq[tokens], mask, estimator="top1_drop")
    assert abs(float(drops.mean()) - exact) / exact > 0.3


# --------------------------------------------------------------------------------------------
# 5. token_dependency semantics and validation
# --------------------------------------------------------------------------------------------


def test_k3_formula_and_clamps():
    ratios = torch.tensor([[0.01, 10.0, 1.0, 0.5]], dtype=torch.float64)
    mask = torch.ones_like(ratios, dtype=torch.bool)
    logp_real = torch.full_like(ratios, -2.0)
    dep = token_dependency(logp_real, logp_real + ratios.log(), mask)
    want = ratios - 1 - ratios.log()
    _assert_close(dep, want)
    assert dep.dtype == torch.float64
    assert dep[0, 0].item() == pytest.approx(3.6152, abs=1e-4)
    assert dep[0, 1].item() == pytest.approx(6.6974, abs=1e-4)
    assert dep[0, 2].item() == 0.0

    # log-ratios beyond +-20 are clamped to +-20 before the formula, then the score to clip.
    log_ratio = torch.tensor([[30.0, -30.0, 2.0]], dtype=torch.float64)
    mask = torch.ones_like(log_ratio, dtype=torch.bool)
    zero = torch.zeros_like(log_ratio)
    unclipped = token_dependency(zero, log_ratio, mask, clip=float("inf"))
    assert unclipped[0, 0].item() == pytest.approx(math.exp(20) - 21)
    assert unclipped[0, 1].item() == pytest.approx(math.exp(-20) + 19)
    assert unclipped[0, 2].item() == pytest.approx(math.exp(2) - 3)
    clipped = token_dependency(zero, log_ratio, mask)
    assert clipped.tolist() == [[10.0, 10.0, pytest.approx(math.exp(2) - 3)]]


def test_top1_drop_is_probability_drop_clamped_at_zero():
    p_real = torch.tensor([[0.9, 0.2, 0.5]])
    p_pert = torch.tensor([[0.3, 0.6, 0.5]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    dep = token_dependency(p_real.log(), p_pert.log(), mask, estimator="top1_drop")
    _assert_close(dep, torch.tensor([[0.6, 0.0, 0.0]]))
    capped = token_dependency(p_real.log(), p_pert.log(), mask, estimator="top1_drop", clip=0.25)
    _assert_close(capped, torch.tensor([[0.25, 0.0, 0.0]]))


@pytest.mark.parametrize("estimator", sorted(TOKEN_ESTIMATORS))
def test_token_dependency_zero_at_padding_and_nan_handling(estimator):
    g = torch.Generator().manual_seed(5)
    logp_real = -torch.rand(3, 6, generator=g) * 4
    logp_pert = -torch.rand(3, 6, generator=g) * 4
    mask = _lengths_mask([6, 2, 0], 6)
    padded_real, padded_pert = logp_real.clone(), logp_pert.clone()
    padded_real[~mask] = float("nan")
    padded_pert[~mask] = float("-inf")
    dep = token_dependency(padded_real, padded_pert, mask, estimator=estimator)
    assert torch.all(dep[~mask] == 0)
    _assert_close(dep, token_dependency(logp_real, logp_pert, mask, estimator=estimator))
    assert torch.all(dep >= 0)
    assert float(dep[mask].max()) > 0

    broken = logp_pert.clone()
    broken[0, 1] = float("nan")
    broken[1, 0] = float("inf")
    with pytest.raises(ValueError, match="logp_perturbed has 2 non-finite value"):
        token_dependency(logp_real, broken, mask, estimator=estimator)
    with pytest.raises(ValueError, match="logp_real has 2 non-finite value"):
        token_dependency(broken, logp_pert, mask, estimator=estimator)


def test_token_dependency_validation():
    x = torch.zeros(2, 3)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(
        ValueError, match=r"Unknown estimator 'kl'; valid estimators are k3, top1_drop"
    ):
        token_dependency(x, x, mask, estimator="kl")
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 4\)"):
        token_dependency(x, torch.zeros(2, 4), mask)
    with pytest.raises(ValueError, match=r"mask has shape \(3, 2\)"):
        token_dependency(x, x, mask.T)
    for clip in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="clip must be > 0"):
            token_dependency(x, x, mask, clip=clip)


def test_empty_responses_get_zero_dependency_and_trajectory():
    logp_real = torch.log(torch.tensor([[0.5, 0.1, 0.9], [0.2, 0.3, 0.4]]))
    logp_pert = torch.log(torch.tensor([[0.1, 0.4, 0.3], [0.9, 0.9, 0.9]]))
    mask = torch.tensor([[True, True, False], [False, False, False]])
    dep = token_dependency(logp_real, logp_pert, mask)
    assert torch.all(dep[1] == 0)
    traj = trajectory_dependency(dep, mask)
    assert traj.shape == (2,)
    assert traj[1].item() == 0.0
    assert traj[0].item() == pytest.approx(float(dep[0, :2].mean()))


def test_trajectory_dependency_masked_mean_and_validation():
    dep = torch.tensor([[1.0, 3.0, 100.0], [2.0, float("nan"), float("inf")]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    _assert_close(trajectory_dependency(dep, mask), torch.tensor([2.0, 2.0]))
    with pytest.raises(ValueError, match="dep has 1 non-finite"):
        trajectory_dependency(dep, torch.tensor([[1, 1, 0], [1, 1, 0]]))
    with pytest.raises(ValueError, match="mask has shape"):
        trajectory_dependency(dep, mask[:, :2])


# --------------------------------------------------------------------------------------------
# distribution_dependency
# --------------------------------------------------------------------------------------------


def test_distribution_dependency_values_and_padding():
    g = torch.Generator().manual_seed(6)
    logits_real = torch.randn(2, 4, 11, generator=g)
    logits_pert = torch.randn(2, 4, 11, generator=g)
    mask = _lengths_mask([4, 1], 4)
    padded = logits_pert.clone()
    padded[1, 2:] = float("nan")
    for estimator in ("kl", "jsd"):
        got = distribution_dependency(logits_real, padded, mask, estimator, temperature=0.5)
        want = _naive_divergence(logits_real / 0.5, logits_pert / 0.5, estimator) * mask
        _assert_close(got.double(), want, rtol=0, atol=1e-5)
        assert torch.all(got[~mask] == 0)
    jsd = distribution_dependency(logits_real, logits_pert, mask, "jsd")
    jsd_swapped = distribution_dependency(logits_pert, logits_real, mask, "jsd")
    _assert_close(jsd, jsd_swapped)
    assert float(jsd.max()) <= math.log(2)
    same = distribution_dependency(logits_real, logits_real, mask, "kl")
    assert float(same.abs().max()) < 1e-6


def test_distribution_dependency_handles_minus_inf_and_rejects_nan():
    logits_real = torch.tensor([[[0.0, 1.0, float("-inf")]]])
    logits_pert = torch.tensor([[[1.0, 0.0, float("-inf")]]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    kl = distribution_dependency(logits_real, logits_pert, mask)
    want = _naive_divergence(logits_real[..., :2], logits_pert[..., :2], "kl")
    _assert_close(kl.double(), want)
    zero_support = torch.tensor([[[0.0, float("-inf"), float("-inf")]]])
    assert distribution_dependency(logits_real, zero_support, mask).item() == math.inf
    with pytest.raises(
        ValueError, match="logits_perturbed has NaN, \\+inf or no finite logit at 1"
    ):
        distribution_dependency(logits_real, torch.full((1, 1, 3), float("-inf")), mask)
    with pytest.raises(ValueError, match="logits_real has NaN"):
        distribution_dependency(torch.tensor([[[0.0, float("nan"), 0.0]]]), logits_pert, mask)
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        distribution_dependency(logits_real[0], logits_pert[0], mask)


# --------------------------------------------------------------------------------------------
# One mask rule for perception and algorithm (vppo._tensor_checks)
# --------------------------------------------------------------------------------------------


def _every_estimator(mask):
    """The four perception entry points that take a mask, on one small seeded problem."""
    g = torch.Generator().manual_seed(11)
    logp_real = torch.log(torch.rand(2, 5, generator=g))
    logp_pert = torch.log(torch.rand(2, 5, generator=g))
    logits_real, logits_pert = torch.randn(2, 2, 5, 7, generator=g)
    h_real, h_pert, weight, bias, _ = _hidden_problem(2, 5, 4, 7, seed=12)
    return {
        "token": token_dependency(logp_real, logp_pert, mask),
        "distribution": distribution_dependency(logits_real, logits_pert, mask),
        "full_kl": full_kl_dependency(h_real, h_pert, weight, mask, lm_head_bias=bias),
        "trajectory": trajectory_dependency(logp_real.exp(), mask),
    }


def test_bool_and_zero_one_masks_give_the_same_scores():
    mask = _lengths_mask([5, 2], 5)
    want = _every_estimator(mask)
    for same in (mask.long(), mask.to(torch.uint8), mask.float(), mask.double()):
        got = _every_estimator(same)
        for name, value in want.items():
            assert torch.equal(got[name], value), (name, same.dtype)


@pytest.mark.parametrize("bad_value", [2.0, -1.0, 0.5, float("nan")])
def test_masks_with_other_values_are_refused_like_in_the_algorithm_layer(bad_value):
    mask = _lengths_mask([5, 2], 5).double()
    mask[0, 1] = bad_value
    message = "mask must be boolean or contain only 0 and 1"
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(2, 5, generator=g), torch.rand(2, 5, generator=g)
    h_real, h_pert, weight, _, _ = _hidden_problem(2, 5, 4, 7, seed=12)
    calls = [
        lambda m: token_dependency(x.log(), y.log(), m),
        lambda m: distribution_dependency(
            x[..., None].expand(2, 5, 3), y[..., None].repeat(1, 1, 3), m
        ),
        lambda m: full_kl_dependency(h_real, h_pert, weight, m),
        lambda m: trajectory_dependency(x, m),
        lambda m: tgf_mask(x, m, 0.4),  # the algorithm layer: the same rule and the same words
    ]
    for call in calls:
        for m in (mask, mask.float()):
            with pytest.raises(ValueError, match=message):
                call(m)
    integer = _lengths_mask([5, 2], 5).long()
    integer[1, 0] = 3
    for call in calls:
        with pytest.raises(ValueError, match=message):
            call(integer)
    with pytest.raises(ValueError, match="complex"):
        trajectory_dependency(x, _lengths_mask([5, 2], 5).to(torch.complex64))


def test_estimator_registries_are_exported_with_every_name_once():
    assert set(vppo.perception.__all__) >= {
        "DEPENDENCY_ESTIMATORS",
        "DISTRIBUTION_ESTIMATORS",
        "TOKEN_ESTIMATORS",
    }
    assert vppo.perception.DEPENDENCY_ESTIMATORS == ("k3", "top1_drop", "kl", "jsd")
    assert set(vppo.perception.DEPENDENCY_ESTIMATORS) == set(TOKEN_ESTIMATORS) | set(
        DISTRIBUTION_ESTIMATORS
    )
    assert not set(TOKEN_ESTIMATORS) & set(DISTRIBUTION_ESTIMATORS)


# --------------------------------------------------------------------------------------------
# the shared estimator dispatch
# --------------------------------------------------------------------------------------------


def _passes(seed=3):
    """Both passes' log-probs and hidden states of one problem, plus its LM head and mask."""
    h_real, h_pert, weight, bias, mask = _hidden_problem(
        3, 11, 8, 50, seed=seed, lengths=[11, 4, 0]
    )
    ids = torch.randint(0, 50, (3, 11), generator=torch.Generator().manual_seed(seed))

    def logp(hidden):
        logits = (hidden @ weight.T + bias) / 0.7
        return torch.log_softmax(logits, -1).gather(-1, ids[..., None]).squeeze(-1)

    return {
        "mask": mask,
        "logp_real": logp(h_real),
        "logp_perturbed": logp(h_pert),
        "hidden_real": h_real,
        "hidden_perturbed": h_pert,
        "lm_head_weight": weight,
        "lm_head_bias": bias,
    }


@pytest.mark.parametrize("estimator", DEPENDENCY_ESTIMATORS)
def test_dependency_from_passes_equals_the_estimators_own_function(estimator):
    passes = _passes()
    options = {"clip": 0.5, "temperature": 0.7, "chunk_size": 3}
    got = dependency_from_passes(estimator, **passes, **options)
    if estimator in TOKEN_ESTIMATORS:
        want = token_dependency(
            passes["logp_real"], passes["logp_perturbed"], passes["mask"], estimator, clip=0.5
        )
    else:
        want = full_kl_dependency(
            passes["hidden_real"],
            passes["hidden_perturbed"],
            passes["lm_head_weight"],
            passes["mask"],
            temperature=0.7,
            chunk_size=3,
            estimator=estimator,
            lm_head_bias=passes["lm_head_bias"],
        )
    assert float(want.max()) > 0  # the comparison is not between zeros
    assert got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.parametrize("estimator", DEPENDENCY_ESTIMATORS)
def test_dependency_from_passes_needs_only_the_estimators_inputs(estimator):
    passes = _passes()
    if estimator in TOKEN_ESTIMATORS:
        needed = ("mask", "logp_real", "logp_perturbed")
    else:
        needed = ("mask", "hidden_real", "hidden_perturbed", "lm_head_weight", "lm_head_bias")
    alone = dependency_from_passes(estimator, **{k: passes[k] for k in needed})
    assert torch.equal(alone, dependency_from_passes(estimator, **passes))
    for missing in needed[1:]:
        if missing == "lm_head_bias":
            continue  # optional: a head without bias
        inputs = {k: passes[k] for k in needed if k != missing}
        with pytest.raises(ValueError, match=f"estimator '{estimator}' needs .*{missing}"):
            dependency_from_passes(estimator, **inputs)


def test_dependency_from_passes_refuses_an_unknown_name_with_every_valid_one():
    passes = _passes()
    message = "Unknown estimator 'kl3'; valid estimators are jsd, k3, kl, top1_drop."
    with pytest.raises(ValueError, match=message):
        dependency_from_passes("kl3", **passes)
    with pytest.raises(ValueError, match=message):
        dependency_from_passes("kl3", mask=passes["mask"])


def test_perception_imports_no_trl_transformers_or_higher_vppo_layer():
    package = Path(vppo.perception.__file__).parent
    imported = set()
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module)
    allowed = sys.stdlib_module_names | {"torch", "numpy", "PIL", "__future__"}
    outside = {
        name
        for name in imported
        if name.split(".")[0] not in allowed
        and not name.startswith("vppo.perception")
        and name != "vppo._tensor_checks"
    }
    assert not outside, f"vppo.perception imports {sorted(outside)}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_full_kl_on_cuda_bf16_matches_cpu():
    h_real, h_pert, weight, bias, mask = _hidden_problem(2, 40, 32, 500, seed=7)
    args = (h_real.bfloat16(), h_pert.bfloat16(), weight.bfloat16())
    cpu = full_kl_dependency(*args, mask, chunk_size=16, lm_head_bias=bias)
    cuda = full_kl_dependency(
        *(t.cuda() for t in args), mask.cuda(), chunk_size=16, lm_head_bias=bias.cuda()
    )
    assert cuda.device.type == "cuda" and cuda.dtype == torch.float32
    # TF32 may be enabled for float32 matmuls on the GPU, hence the looser tolerance.
    _assert_close(cuda.cpu(), cpu, rtol=1e-2, atol=1e-3)
