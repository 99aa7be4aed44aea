"""Loss pieces of the VPPO/DAPO objective: the clipped policy-gradient loss and the NLL term.

These are reference implementations (used to check the trainer, and for other RL stacks). Shapes:
B = responses, T = response tokens. ``mask`` is a [B, T] response mask (True on real response
tokens); 0/1 integer or float masks are accepted and read as bool. Values at padding positions are
never read into the result, so they may be anything, NaN included, and receive zero gradient.
"""

from __future__ import annotations

import torch

from vppo._tensor_checks import (
    LOG_RATIO_LIMIT,
    as_bool_mask,
    check_num_items,
    check_row_values,
    check_token_values,
    real_number,
)

# clipped_pg_loss clamps log r to ±LOG_RATIO_LIMIT (20) so a stale old_logp cannot overflow r to
# inf; the constant is shared with perception's k3 estimator and explained in vppo._tensor_checks.


def _token_mean(per_token: torch.Tensor, mask: torch.Tensor, num_items: object) -> torch.Tensor:
    total = per_token.sum()
    denominator = check_num_items(num_items)
    if denominator is None:
        denominator = mask.sum().clamp(min=1).to(total.dtype)
    elif isinstance(denominator, torch.Tensor):
        denominator = denominator.to(device=total.device, dtype=total.dtype)
    return total / denominator


def sampled_token_nll(
    logp: torch.Tensor, mask: torch.Tensor, num_items: int | float | torch.Tensor | None = None
) -> torch.Tensor:
    """Mean negative log-likelihood of the sampled tokens: the official code's "entropy penalty".

    Paper App. E / official ``use_entropy_penalty``: loss += coef · mean(-log π_θ(o_t)) over all
    valid response tokens (not filtered by TGF, not weighted by advantage). Although named after
    entropy, minimising it *raises* the likelihood of every sampled token: it is an
    entropy-reducing, SFT-on-own-samples term, equivalent in gradient to adding +coef/N to every
    token's advantage without ratio or clipping. It is not an entropy bonus. The official
    coefficients are 0.06 (Qwen2.5-VL-7B) and 0.12 (Qwen3-VL-8B).

    Args:
        logp: float [B, T], log-probabilities of the sampled tokens under the current policy.
        mask: bool [B, T], response mask.
        num_items: optional global token count N (e.g. all-reduced over processes and gradient
            accumulation steps) to divide by instead of this batch's mask.sum(), matching DAPO's
            token-mean normalisation.

    Returns:
        scalar: sum(-logp over valid tokens) / N, with N = mask.sum() (at least 1) by default.
        d/d logp_{i,t} = -1/N on valid tokens and 0 on padding.
    """
    mask = as_bool_mask(mask)
    logp = check_token_values(logp, mask, "logp")
    return _token_mean(torch.where(mask, -logp, 0.0), mask, num_items)


def clipped_pg_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    dual_clip: float | None = None,
    token_weights: torch.Tensor | None = None,
    num_items: int | float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped policy-gradient loss with clip-higher, optional dual clip and token weights.

    Per valid token, with r = exp(clamp(logp - old_logp, -20, 20)) and A the token's advantage:

        objective = min(r · A, clip(r, 1 - eps_low, 1 + eps_high) · A)
        objective = max(objective, C · A)    if dual_clip = C is given and A < 0
        per_token_loss = -objective · w      (w = token_weights, default 1)

    The dual clip caps the loss of a negative-advantage token at -C · A when r grows large
    (EasyR1's default, C = 3.0). The loss is the token-mean over **all** valid tokens: the
    denominator is mask.sum() (or ``num_items``), also counting tokens whose weight is 0, which is
    how the official code applies the TGF mask ("masked formula"). With 0/1 weights this equals
    the loss with zero advantage on the filtered tokens, in value and in gradient.

    Args:
        logp: float [B, T], log-probs of the sampled tokens under the current policy (with grad).
        old_logp: float [B, T], log-probs under the behaviour (old) policy.
        advantages: float [B] (one per response) or [B, T] (per token).
        mask: bool [B, T], response mask.
        eps_low: lower clip range, in [0, 1).
        eps_high: upper clip range, >= 0.
        dual_clip: C > 1 for dual clipping of negative advantages, or None (off).
        token_weights: float [B, T] multiplying the per-token loss (e.g. the TGF mask), or None.
        num_items: optional global token count to divide by instead of mask.sum().

    Returns:
        (loss scalar, per_token_loss [B, T]); per_token_loss is weighted and exactly 0 at padding.
    """
    mask = as_bool_mask(mask)
    logp = check_token_values(logp, mask, "logp")
    old_logp = check_token_values(old_logp, mask, "old_logp")
    eps_low = real_number(eps_low, "eps_low")
    if not 0.0 <= eps_low < 1.0:
        raise ValueError(f"eps_low must be in [0, 1), got {eps_low!r}.")
    eps_high = real_number(eps_high, "eps_high")
    if eps_high < 0.0:
        raise ValueError(f"eps_high must be >= 0, got {eps_high!r}.")
    if dual_clip is not None:
        dual_clip = real_number(dual_clip, "dual_clip")
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1 (or None to disable), got {dual_clip!r}.")

    if not isinstance(advantages, torch.Tensor):
        raise ValueError(f"advantages must be a torch.Tensor, got {type(advantages).__name__}.")
    if advantages.dim() == 1:
        advantages = check_row_values(advantages, mask.shape[0], "advantages")
        advantages = advantages.unsqueeze(-1).expand(mask.shape)
    else:
        advantages = check_token_values(advantages, mask, "advantages")
    advantages = torch.where(mask, advantages.detach().to(logp.dtype), 0.0)

    log_ratio = torch.where(mask, logp - old_logp.detach(), 0.0)
    ratio = torch.exp(log_ratio.clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))
    clipped_ratio = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    objective = torch.minimum(ratio * advantages, clipped_ratio * advantages)
    if dual_clip is not None:
        objective = torch.where(
            advantages < 0, torch.maximum(objective, dual_clip * advantages), objective
        )
    per_token_loss = -objective
    if token_weights is not None:
        token_weights = check_token_values(token_weights, mask, "token_weights")
        per_token_loss = per_token_loss * torch.where(mask, token_weights.to(logp.dtype), 0.0)
    per_token_loss = torch.where(mask, per_token_loss, 0.0)
    return _token_mean(per_token_loss, mask, num_items), per_token_loss
