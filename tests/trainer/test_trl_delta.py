"""TRL's `delta` is the official dual clip: TRL's own loss pass equals `clipped_pg_loss(dual_clip=C)`.

The recipes set `delta: 3.0` to get EasyR1's dual clip (C = 3 for negative advantages). This drives
TRL 1.16's real `compute_loss` -> `_compute_loss` on a tiny VPPOTrainer, with nothing replaced:
only the batch's old log-probs and advantages are chosen so that the ratios fall below 1 - ε,
inside the clip range, between 1 + ε_high and C, and above C, with both advantage signs. When a TRL
release changes how it clips, this fails.
"""

from __future__ import annotations

import math

import pytest
import torch

from vppo.algorithm import clipped_pg_loss
from vppo.trainer.cli import build_trainer, parse

pytestmark = pytest.mark.slow

# Ratio ranges, by where they sit against the clip edges 1 - ε, 1 + ε_high and C = delta.
RATIO_RANGES = {
    "below 1-eps": (0.4, 0.7),
    "inside": (0.9, 1.1),
    "above 1+eps_high": (1.5, 2.7),
    "above C": (3.5, 9.0),
}


def _trainer(tmp_path, official: str):
    """A tiny trainer with the loss settings (loss_type, ε, ε_high, delta) of an official recipe."""
    _, loss, _ = parse(["--config", official, "--bf16", "false", "--use_cpu", "true"])
    assert loss.delta == 3.0
    flags = [
        "--loss_type",
        loss.loss_type,
        "--epsilon",
        str(loss.epsilon),
        "--epsilon_high",
        str(loss.epsilon_high),
        "--delta",
        str(loss.delta),
    ]
    script_args, config, model_args = parse(
        [
            "--config",
            "tiny_dapo",
            "--output_dir",
            str(tmp_path / "out"),
            *flags,
            "--nll_coef",
            "0",
            "--dynamic_sampling",
            "false",
            "--synthetic_train_size",
            "8",
            "--disable_dropout",
            "true",
        ]
    )
    assert config.gradient_accumulation_steps == config.steps_per_generation == 1
    return build_trainer(script_args, config, model_args), loss


class _Capture:
    """Wraps the trainer's log-prob pass (TRL's own forward) and keeps the log-probs it returns."""

    def __init__(self, trainer):
        self.original = trainer._get_per_token_logps_and_entropies
        self.logps: torch.Tensor | None = None

    def __call__(self, *args, **kwargs):
        logps, entropies, aux = self.original(*args, **kwargs)
        if logps.requires_grad:
            logps.retain_grad()
        self.logps = logps
        return logps, entropies, aux


def _batch(trainer, capture):
    """A scored batch with old log-probs and [B, T] advantages covering every ratio range and sign."""
    trainer.model.train()
    batch = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    mask = batch["completion_mask"].bool()
    with torch.no_grad():
        trainer.compute_loss(trainer.model, batch)
    current = capture.logps.detach()
    generator = torch.Generator().manual_seed(0)
    rows, length = mask.shape
    index = torch.arange(rows * length).reshape(rows, length)
    ranges = list(RATIO_RANGES.values())
    low = torch.tensor([ranges[i][0] for i in (index % len(ranges)).flatten()]).reshape(
        rows, length
    )
    high = torch.tensor([ranges[i][1] for i in (index % len(ranges)).flatten()]).reshape(
        rows, length
    )
    ratio = low + (high - low) * torch.rand(rows, length, generator=generator)
    sign = torch.where((index // len(ranges)) % 2 == 0, 1.0, -1.0)
    advantages = sign * (0.2 + torch.rand(rows, length, generator=generator))
    batch["old_per_token_logps"] = current - ratio.log()
    batch["advantages"] = advantages
    batch["num_items_in_batch"] = mask.sum()
    for lo, hi in ranges:  # every range meets both signs on real (unpadded) tokens
        inside = mask & (ratio > lo) & (ratio < hi)
        assert (inside & (advantages > 0)).any() and (inside & (advantages < 0)).any()
    return batch, mask


def _grads(trainer):
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("official", ["qwen2_5_vl_7b_vppo", "qwen2_5_vl_7b_grpo"])
def test_trl_delta_loss_is_the_dual_clip(tmp_path, monkeypatch, official):
    trainer, loss_args = _trainer(tmp_path, official)
    capture = _Capture(trainer)
    monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies", capture)
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop outside of train()
    batch, mask = _batch(trainer, capture)

    # TRL: its own loss pass, forward and clipping.
    trainer.model.zero_grad()
    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()
    trl_logps, trl_logp_grad, trl_grads = (
        capture.logps.detach(),
        capture.logps.grad,
        _grads(trainer),
    )
    assert trl_grads and any(g.abs().sum() > 0 for g in trl_grads.values())

    # Reference: the same forward (TRL's, recaptured), loss from vppo.algorithm.clipped_pg_loss.
    trainer.model.zero_grad()
    trainer.compute_loss(trainer.model, batch)
    logps = capture.logps
    assert torch.equal(logps.detach(), trl_logps)
    kwargs = dict(eps_low=loss_args.epsilon, eps_high=loss_args.epsilon_high)
    ours, per_token = clipped_pg_loss(
        logps, batch["old_per_token_logps"], batch["advantages"], mask, dual_clip=3.0, **kwargs
    )
    if loss_args.loss_type == "grpo":  # per-response mean, then mean over responses
        ours = (per_token.sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    else:
        assert loss_args.loss_type == "dapo"
    ours.backward()

    torch.testing.assert_close(trl_loss.detach(), ours.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(trl_logp_grad, logps.grad, rtol=1e-5, atol=1e-8)
    grads = _grads(trainer)
    assert grads.keys() == trl_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(trl_grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)

    # The batch exercises the dual clip: without it the loss differs, and the capped tokens
    # (A < 0, ratio above C) get no gradient from TRL.
    plain, _ = clipped_pg_loss(
        logps.detach(), batch["old_per_token_logps"], batch["advantages"], mask, **kwargs
    )
    dual, _ = clipped_pg_loss(
        logps.detach(),
        batch["old_per_token_logps"],
        batch["advantages"],
        mask,
        dual_clip=3.0,
        **kwargs,
    )
    assert not math.isclose(plain.item(), dual.item(), rel_tol=1e-3)
    ratio = torch.exp(trl_logps - batch["old_per_token_logps"])
    capped = mask & (batch["advantages"] < 0) & (ratio > 3.0)
    assert capped.any() and (trl_logp_grad[capped] == 0).all()
