"""Clipped policy-gradient loss, TGF-as-zero-advantage equivalence and the sampled-token NLL."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vppo.algorithm import clipped_pg_loss, sampled_token_nll, tgf_mask, token_advantages

VOCAB, HIDDEN, ROWS, LENGTH = 13, 8, 5, 9


class TinyPolicy(nn.Module):
    """Embedding -> tanh -> linear head: a real autograd path from parameters to log-probs."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.head = nn.Linear(HIDDEN, VOCAB)

    def sampled_logp(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.head(torch.tanh(self.embed(inputs)))
        return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _policy_batch():
    torch.manual_seed(0)
    policy = TinyPolicy()
    tokens = torch.randint(VOCAB, (ROWS, LENGTH + 1))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    lengths = torch.tensor([9, 6, 1, 0, 4])
    mask = torch.arange(LENGTH).unsqueeze(0) < lengths.unsqueeze(-1)
    with torch.no_grad():
        logp = policy.sampled_logp(inputs, targets)
    # A stale behaviour policy, so ratios differ from 1 and both clip edges are hit.
    old_logp = logp + 0.4 * torch.randn(ROWS, LENGTH)
    dep = torch.rand(ROWS, LENGTH)
    advantages = torch.tensor([1.0, -0.7, 0.3, 0.9, -1.2])
    return policy, inputs, targets, mask, old_logp, dep, advantages


def _loss_and_grads(policy, inputs, targets, old_logp, advantages, mask, **kwargs):
    logp = policy.sampled_logp(inputs, targets)
    logp.retain_grad()
    loss, per_token = clipped_pg_loss(logp, old_logp, advantages, mask, **kwargs)
    policy.zero_grad()
    loss.backward()
    grads = [p.grad.clone() for p in policy.parameters()]
    return loss.detach(), per_token.detach(), grads, logp.grad.clone()


@pytest.mark.parametrize("dual_clip", [None, 3.0])
def test_masked_loss_equals_zero_advantage_loss_in_value_and_gradient(dual_clip):
    policy, inputs, targets, mask, old_logp, dep, advantages = _policy_batch()
    keep = tgf_mask(dep, mask, 0.4)
    ratio = torch.exp(policy.sampled_logp(inputs, targets).detach() - old_logp)
    assert ((ratio[mask] < 0.8) | (ratio[mask] > 1.28)).any()  # clipping is exercised

    masked = _loss_and_grads(
        policy,
        inputs,
        targets,
        old_logp,
        advantages,
        mask,
        dual_clip=dual_clip,
        token_weights=keep.float(),
    )
    zeroed = _loss_and_grads(
        policy,
        inputs,
        targets,
        old_logp,
        advantages.unsqueeze(-1) * keep,
        mask,
        dual_clip=dual_clip,
    )
    via_token_advantages = _loss_and_grads(
        policy,
        inputs,
        targets,
        old_logp,
        token_advantages(advantages, dep, mask, use_tas=False),
        mask,
        dual_clip=dual_clip,
    )
    for other in (zeroed, via_token_advantages):
        assert torch.allclose(masked[0], other[0], atol=1e-7, rtol=0)
        assert torch.allclose(masked[1], other[1], atol=1e-7, rtol=0)
        for grad_a, grad_b in zip(masked[2], other[2], strict=True):
            assert torch.allclose(grad_a, grad_b, atol=1e-7, rtol=0)
    # Filtered and padding tokens get exactly zero gradient; some kept tokens do not.
    logp_grad = masked[3]
    assert (logp_grad[~keep] == 0).all()
    assert (logp_grad[keep] != 0).any()
    assert any(g.abs().sum() > 0 for g in masked[2])
    # The denominator counts every valid token, filtered ones included.
    assert torch.isclose(masked[0], masked[1].sum() / mask.sum())


def reference_token_loss(logp, old_logp, advantage, eps_low, eps_high, dual_clip):
    ratio = math.exp(logp - old_logp)
    clipped = min(max(ratio, 1 - eps_low), 1 + eps_high)
    objective = min(ratio * advantage, clipped * advantage)
    if dual_clip is not None and advantage < 0:
        objective = max(objective, dual_clip * advantage)
    return -objective


@pytest.mark.parametrize("dual_clip", [None, 3.0])
def test_clipped_pg_loss_matches_per_token_formula(dual_clip):
    generator = torch.Generator().manual_seed(4)
    logp = -torch.rand(4, 7, generator=generator, dtype=torch.float64) * 3
    old_logp = logp + torch.randn(4, 7, generator=generator, dtype=torch.float64) * 1.5
    advantages = torch.randn(4, 7, generator=generator, dtype=torch.float64)
    mask = torch.rand(4, 7, generator=generator) > 0.25
    weights = torch.rand(4, 7, generator=generator, dtype=torch.float64)
    loss, per_token = clipped_pg_loss(
        logp, old_logp, advantages, mask, 0.2, 0.28, dual_clip, token_weights=weights
    )
    total = 0.0
    for i in range(4):
        for t in range(7):
            if not mask[i, t]:
                assert per_token[i, t] == 0
                continue
            expected = weights[i, t].item() * reference_token_loss(
                logp[i, t].item(),
                old_logp[i, t].item(),
                advantages[i, t].item(),
                0.2,
                0.28,
                dual_clip,
            )
            assert per_token[i, t].item() == pytest.approx(expected, abs=1e-12)
            total += expected
    assert loss.item() == pytest.approx(total / int(mask.sum()), abs=1e-12)
    assert clipped_pg_loss(logp, old_logp, advantages, mask, num_items=100)[0].item() == (
        pytest.approx(clipped_pg_loss(logp, old_logp, advantages, mask)[1].sum().item() / 100)
    )


def test_dual_clip_caps_negative_advantage_loss():
    logp = torch.tensor([[math.log(5.0), math.log(5.0), math.log(1.5)]], requires_grad=True)
    old_logp = torch.zeros(1, 3)
    advantages = torch.tensor([[-1.0, 2.0, -1.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    _, plain = clipped_pg_loss(logp, old_logp, advantages, mask)
    loss, capped = clipped_pg_loss(logp, old_logp, advantages, mask, dual_clip=3.0)
    assert plain[0].tolist() == pytest.approx([5.0, -2.56, 1.5])
    assert capped[0].tolist() == pytest.approx([3.0, -2.56, 1.5])  # -C·A = 3 caps the first
    loss.backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] == 0  # capped / clipped: no gradient
    assert logp.grad[0, 2] == pytest.approx(1.5 / 3)  # d(-rA)/dlogp = -rA = 1.5, / N


def test_on_policy_loss_is_the_token_mean_policy_gradient():
    logp = torch.tensor([[-0.5, -1.0, -2.0], [-0.3, -0.1, 7.0]], requires_grad=True)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    advantages = torch.tensor([0.5, -2.0])
    loss, _ = clipped_pg_loss(logp, logp.detach(), advantages, mask)
    assert loss.item() == pytest.approx(-(0.5 * 3 - 2.0) / 4)
    loss.backward()
    expected = torch.tensor([[-0.125, -0.125, -0.125], [0.5, 0.0, 0.0]])
    assert torch.allclose(logp.grad, expected)


def test_clipped_pg_loss_padding_and_validation():
    mask = torch.tensor([[True, False]])
    logp = torch.tensor([[-1.0, float("nan")]], requires_grad=True)
    loss, per_token = clipped_pg_loss(
        logp, torch.tensor([[-1.0, float("inf")]]), torch.ones(1), mask
    )
    loss.backward()
    assert per_token[0, 1] == 0 and logp.grad[0, 1] == 0 and torch.isfinite(loss)
    empty, _ = clipped_pg_loss(
        torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2), torch.zeros(2, 3, dtype=torch.bool)
    )
    assert empty.item() == 0.0
    args = (torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="eps_low"):
        clipped_pg_loss(*args, eps_low=1.0)
    with pytest.raises(ValueError, match="eps_high"):
        clipped_pg_loss(*args, eps_high=-0.1)
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        clipped_pg_loss(*args, dual_clip=1.0)
    with pytest.raises(ValueError, match="num_items must be positive"):
        clipped_pg_loss(*args, num_items=0)
    with pytest.raises(ValueError, match=r"old_logp has a NaN .*row 0, token 1"):
        clipped_pg_loss(args[0], torch.tensor([[0.0, float("nan")]]), *args[2:])
    with pytest.raises(ValueError, match="advantages must be a 1-D tensor of length 1"):
        clipped_pg_loss(*args[:2], torch.ones(2), args[3])
    with pytest.raises(ValueError, match="advantages must have the shape of mask"):
        clipped_pg_loss(*args[:2], torch.ones(1, 3), args[3])
    with pytest.raises(ValueError, match="token_weights must have the shape of mask"):
        clipped_pg_loss(*args, token_weights=torch.ones(2, 2))


def test_sampled_token_nll_value_and_gradient():
    logp = torch.tensor(
        [[-0.5, -1.5, -3.0], [-2.0, float("nan"), float("-inf")]], requires_grad=True
    )
    mask = torch.tensor([[True, True, True], [True, False, False]])
    nll = sampled_token_nll(logp, mask)
    assert nll.item() == pytest.approx((0.5 + 1.5 + 3.0 + 2.0) / 4)
    nll.backward()
    assert torch.equal(logp.grad, torch.where(mask, -0.25, 0.0))
    # A global token count replaces the local one (DAPO token-mean across processes).
    logp.grad = None
    global_nll = sampled_token_nll(logp, mask, num_items=torch.tensor(10))
    assert global_nll.item() == pytest.approx(7.0 / 10)
    global_nll.backward()
    assert torch.allclose(logp.grad, torch.where(mask, -0.1, 0.0))
    # Descending the NLL raises the likelihood of every sampled token.
    assert (logp.grad[mask] < 0).all()
    assert sampled_token_nll(torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool)).item() == 0
    with pytest.raises(ValueError, match="num_items"):
        sampled_token_nll(logp, mask, num_items=-3)
    with pytest.raises(ValueError, match="num_items"):
        sampled_token_nll(logp, mask, num_items=torch.ones(2))
    with pytest.raises(ValueError, match=r"logp has a NaN .*row 1, token 0"):
        sampled_token_nll(torch.tensor([[0.0], [float("nan")]]), torch.ones(2, 1, dtype=torch.bool))
