"""PAPO's implicit perception loss against a direct transcription of the official code's formula."""

from __future__ import annotations

import math

import pytest
import torch

from vppo.algorithm import PERCEPTION_KL_ESTIMATORS, papo_loss, papo_token_terms, perception_kl

EPS = 1e-8  # the official average_loss / masked_mean add 1e-8 to the token count


def _official_kl(logp, logp_masked, estimator):
    """verl/EasyR1 core_algos.compute_kl(log_probs=ℓ, ref_log_probs=ℓ̃, kl_penalty=...), written out."""
    if estimator == "k3":  # low_var_kl
        x = torch.clamp(logp_masked - logp, min=-20, max=20)
        return torch.clamp(torch.exp(x) - x - 1, min=-10, max=10)
    if estimator == "kl":
        return logp - logp_masked
    if estimator == "mse":
        return 0.5 * (logp - logp_masked).square()
    if estimator == "abs":
        return (logp - logp_masked).abs()
    raise AssertionError(estimator)


def _official_extra(
    logp, logp_masked, mask, gamma, eta_ori, eta_aug, estimator="k3", clip=None, recompute=False
):
    """The official dp_actor update: -γ·L_prcp + η_aug·H̃ + η_ori·H, token mode, ε = 1e-8.

    ``recompute``: RECOMPUTE_AUG_LOG_PROBS = True, where ℓ̃ comes from a forward with gradient
    (nothing detaches it); False, the default, reads the stored aug_log_probs (no gradient)."""
    if not recompute:
        logp_masked = logp_masked.detach()
    m = mask.to(logp.dtype)
    n = m.sum() + EPS
    k = _official_kl(logp, logp_masked, estimator)
    if clip is not None:  # use_kl_prcp_clipping
        k = torch.clamp(k, min=0.0, max=clip)
    l_prcp = (k * m).sum() / n
    h = -(logp * m).sum() / n
    h_aug = -(logp_masked * m).sum() / n
    return -gamma * l_prcp + eta_aug * h_aug + eta_ori * h


def _random_batch(seed=0, rows=3, width=6):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(rows, width, generator=g, dtype=torch.float64) * 4
    logp_masked = logp - torch.randn(rows, width, generator=g, dtype=torch.float64) * 1.5
    mask = torch.ones(rows, width, dtype=torch.bool)
    mask[0, 4:] = False
    mask[2, 1:] = False
    return logp, logp_masked, mask


def test_the_worked_example_of_the_notes():
    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    logp_masked = torch.tensor([[-1.0, -1.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    k = perception_kl(logp, logp_masked, mask)
    torch.testing.assert_close(k.detach(), torch.tensor([[0.0, math.e - 2]], dtype=torch.float64))
    loss = papo_loss(logp, logp_masked, mask, 0.02, entropy_coef=0.03, masked_entropy_coef=0.03)
    # -0.02·(e-2)/2 + 0.03·1.5 + 0.03·1.0
    assert loss.item() == pytest.approx(0.0678171817, abs=1e-10)
    loss.backward()
    # d/dℓ = -γ(1 - e^{ℓ̃-ℓ})/N - η_ori/N = [-0.015, -0.01·(1-e) - 0.015]
    expected = torch.tensor([[-0.015, 0.01 * (math.e - 1) - 0.015]], dtype=torch.float64)
    torch.testing.assert_close(logp.grad, expected, rtol=0, atol=1e-12)
    assert logp.grad[0, 1].item() == pytest.approx(0.0021828183, abs=1e-10)
    assert logp_masked.grad is None or (logp_masked.grad == 0).all()


@pytest.mark.parametrize("estimator", PERCEPTION_KL_ESTIMATORS)
@pytest.mark.parametrize("clip", [None, 0.2])
@pytest.mark.parametrize("masked_grad", [False, True], ids=["stored", "recompute"])
def test_value_and_gradient_equal_the_official_formula(estimator, clip, masked_grad):
    """`masked_grad=False` is the official default (stored aug_log_probs, no gradient into ℓ̃),
    True its RECOMPUTE_AUG_LOG_PROBS path (ℓ̃ from a forward with gradient)."""
    logp, logp_masked, mask = _random_batch()
    ours = [logp.clone().requires_grad_(True), logp_masked.clone().requires_grad_(True)]
    theirs = [logp.clone().requires_grad_(True), logp_masked.clone().requires_grad_(True)]
    coefs = dict(gamma=0.02, eta_ori=0.05, eta_aug=0.03)
    loss = papo_loss(
        *ours,
        mask,
        coefs["gamma"],
        entropy_coef=coefs["eta_ori"],
        masked_entropy_coef=coefs["eta_aug"],
        estimator=estimator,
        clip=clip,
        masked_grad=masked_grad,
    )
    reference = _official_extra(
        *theirs, mask, estimator=estimator, clip=clip, recompute=masked_grad, **coefs
    )
    # Only the official ε = 1e-8 on N = 11 tokens separates the two: a relative 1e-9.
    torch.testing.assert_close(loss, reference, rtol=1e-8, atol=0)
    loss.backward()
    reference.backward()
    torch.testing.assert_close(ours[0].grad, theirs[0].grad, rtol=1e-8, atol=0)
    if not masked_grad:
        assert ours[1].grad is None and theirs[1].grad is None
        return
    torch.testing.assert_close(ours[1].grad, theirs[1].grad, rtol=1e-8, atol=0)
    assert (ours[1].grad[~mask] == 0).all() and (ours[1].grad[mask] != 0).any()


@pytest.mark.parametrize("estimator", PERCEPTION_KL_ESTIMATORS)
def test_masked_grad_leaves_the_real_sides_gradient_as_it_is(estimator):
    """The KL's dependence on ℓ is the same either way: only ℓ̃ gains a gradient."""
    logp, logp_masked, mask = _random_batch(seed=8)
    grads = []
    for masked_grad in (False, True):
        x, y = logp.clone().requires_grad_(True), logp_masked.clone().requires_grad_(True)
        papo_loss(
            x, y, mask, 0.02, 0.05, 0.03, estimator=estimator, masked_grad=masked_grad
        ).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=0)


def test_masked_grad_k3_gradient_is_the_negated_real_one():
    logp = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    logp_masked = torch.tensor([[-1.0, -1.0]], dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    perception_kl(logp, logp_masked, mask, masked_grad=True).sum().backward()
    # dk/dℓ = 1 - e^{ℓ̃-ℓ} = [0, 1 - e]; dk/dℓ̃ = e^{ℓ̃-ℓ} - 1 = [0, e - 1].
    torch.testing.assert_close(
        logp.grad, torch.tensor([[0.0, 1 - math.e]], dtype=torch.float64), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(logp_masked.grad, -logp.grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("estimator", PERCEPTION_KL_ESTIMATORS)
def test_perception_kl_per_token_matches_the_official_estimator(estimator):
    logp, logp_masked, mask = _random_batch(seed=1)
    k = perception_kl(logp, logp_masked, mask, estimator=estimator)
    expected = torch.where(mask, _official_kl(logp, logp_masked, estimator), 0.0)
    torch.testing.assert_close(k, expected, rtol=1e-12, atol=0)


def test_k3_clamps_like_low_var_kl():
    logp = torch.tensor([[-30.0, -1.0, -1.0]], dtype=torch.float64, requires_grad=True)
    logp_masked = torch.tensor([[-1.0, -30.0, -1.0 + math.log(20.0)]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    k = perception_kl(logp, logp_masked, mask)
    # x = 29 -> clamp 20 -> e^20 - 21, then clamp 10; x = -29 -> -20 -> e^-20 + 19 -> 10; x = log 20.
    torch.testing.assert_close(
        k.detach(), torch.tensor([[10.0, 10.0, 10.0]], dtype=torch.float64), rtol=0, atol=1e-12
    )
    k.sum().backward()
    assert (
        logp.grad == 0
    ).all()  # every token is past a clamp: no gradient, as in the official code


def test_clip_bounds_k_to_zero_and_clip():
    logp, logp_masked, mask = _random_batch(seed=2)
    for estimator in PERCEPTION_KL_ESTIMATORS:
        k = perception_kl(logp, logp_masked, mask, estimator=estimator, clip=0.2)
        assert (k[mask] >= 0).all() and (k[mask] <= 0.2).all()
    raw = perception_kl(logp, logp_masked, mask, estimator="kl")
    assert (raw[mask] < 0).any() and (raw[mask] > 0.2).any()  # the clamp bites on both sides


def test_padding_changes_neither_value_nor_gradient():
    logp, logp_masked, mask = _random_batch(seed=3)
    poisoned = logp.clone()
    poisoned_masked = logp_masked.clone()
    poisoned[~mask] = float("nan")
    poisoned_masked[~mask] = -float("inf")
    results = []
    for a, b in ((logp, logp_masked), (poisoned, poisoned_masked)):
        x = a.clone().requires_grad_(True)
        loss = papo_loss(x, b, mask, 0.02, entropy_coef=0.05, masked_entropy_coef=0.05)
        loss.backward()
        results.append((loss.detach(), x.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=0)
    assert (results[1][1][~mask] == 0).all()
    terms = papo_token_terms(poisoned, poisoned_masked, mask, 0.02, 0.05, 0.05)
    assert (terms[~mask] == 0).all() and torch.isfinite(terms).all()


def test_no_gradient_reaches_the_masked_log_probs():
    logp, logp_masked, mask = _random_batch(seed=4)
    x = logp.clone().requires_grad_(True)
    y = logp_masked.clone().requires_grad_(True)
    papo_loss(x, y, mask, 0.02, entropy_coef=0.05, masked_entropy_coef=0.05).backward()
    assert y.grad is None
    assert x.grad is not None and (x.grad[mask] != 0).all()


def test_masked_entropy_changes_the_value_only():
    logp, logp_masked, mask = _random_batch(seed=5)
    grads, values = [], []
    for eta_aug in (0.0, 0.7):
        x = logp.clone().requires_grad_(True)
        loss = papo_loss(x, logp_masked, mask, 0.02, entropy_coef=0.05, masked_entropy_coef=eta_aug)
        loss.backward()
        grads.append(x.grad)
        values.append(loss.item())
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)
    h_aug = -(logp_masked * mask).sum().item() / mask.sum().item()
    assert values[1] - values[0] == pytest.approx(0.7 * h_aug, rel=1e-12)


def test_kl_rows_zero_the_kl_of_other_rows_but_keep_their_entropy():
    logp, logp_masked, mask = _random_batch(seed=6)
    rows = torch.tensor([True, False, True])
    terms = papo_token_terms(logp, logp_masked, mask, 0.02, 0.05, 0.03, kl_rows=rows)
    full = papo_token_terms(logp, logp_masked, mask, 0.02, 0.05, 0.03)
    torch.testing.assert_close(terms[rows], full[rows], rtol=0, atol=0)
    expected = torch.where(mask[1], -0.05 * logp[1] - 0.03 * logp_masked[1], 0.0)
    torch.testing.assert_close(terms[1], expected, rtol=1e-12, atol=0)


def test_num_items_replaces_the_token_count():
    logp, logp_masked, mask = _random_batch(seed=7)
    terms = papo_token_terms(logp, logp_masked, mask, 0.02, 0.05)
    loss = papo_loss(logp, logp_masked, mask, 0.02, 0.05, num_items=torch.tensor(40.0))
    torch.testing.assert_close(loss, terms.sum() / 40.0)


def test_bad_arguments_name_themselves():
    logp, logp_masked, mask = _random_batch()
    with pytest.raises(ValueError, match="estimator"):
        perception_kl(logp, logp_masked, mask, estimator="full")
    with pytest.raises(ValueError, match="clip"):
        perception_kl(logp, logp_masked, mask, clip=0.0)
    with pytest.raises(ValueError, match="coef"):
        papo_token_terms(logp, logp_masked, mask, -0.1)
    with pytest.raises(ValueError, match="masked_entropy_coef"):
        papo_token_terms(logp, logp_masked, mask, 0.1, masked_entropy_coef=float("nan"))
    with pytest.raises(ValueError, match="logp_masked"):
        perception_kl(logp, logp_masked[:, :2], mask)
    bad = logp_masked.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"logp_masked has a NaN.*row 1, token 0"):
        perception_kl(logp, bad, mask)
