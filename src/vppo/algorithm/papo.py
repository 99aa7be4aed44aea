"""PAPO's implicit perception loss (arXiv 2507.06448), with the official code's semantics.

PAPO adds to the policy loss, per response token,

    extra = -γ · k(ℓ, ℓ̃) + η_ori · (-ℓ) + η_aug · (-ℓ̃)

and averages it over the response tokens like the policy loss. ℓ is the current policy's log-prob of
the sampled token with the real image (with gradient); ℓ̃ is its log-prob with the masked image
under the pre-update policy θ_old, computed once per rollout without gradient (the official
``aug_log_probs``). k is a sampled-token estimator of KL(π_θ(·|I) ‖ π_θold(·|I_mask)); the default
"k3" is the official ``low_var_kl``. The KL is *maximised* (-γ), both sampled-token entropy
estimates H = -mean ℓ and H̃ = -mean ℓ̃ are *minimised*; H̃ carries no gradient, so η_aug changes
the loss value only, as in the official code's default.

With ``masked_grad=True``, ℓ̃ is instead the current policy's masked-image log-prob, recomputed
with gradient in every update micro-batch (the official switch ``RECOMPUTE_AUG_LOG_PROBS``, off by
default there): the KL then also moves π_θ(·|I_mask), and η_aug lowers the masked-image entropy.

Shapes: B = responses, T = response tokens; ``mask`` is a [B, T] response mask. Values at padding
positions are never read into the result, so they may be anything, NaN included, and receive zero
gradient. Pure torch, like the rest of ``vppo.algorithm``.
"""

from __future__ import annotations

import torch

from vppo._tensor_checks import (
    LOG_RATIO_LIMIT,
    as_bool_mask,
    as_bool_vector,
    check_num_items,
    check_token_values,
    real_number,
)

PERCEPTION_KL_ESTIMATORS: tuple[str, ...] = ("k3", "kl", "mse", "abs")
"""Per-token estimators of the perception KL (the official ``kl_prcp_penalty`` options that work on
sampled tokens): "k3" (``low_var_kl``, the official choice), "kl" (k1), "mse", "abs"."""

# The official low_var_kl clamps its result to ±10 (and its exponent to ±20, LOG_RATIO_LIMIT).
K3_LIMIT = 10.0


def perception_kl(
    logp: torch.Tensor,
    logp_masked: torch.Tensor,
    mask: torch.Tensor,
    estimator: str = "k3",
    clip: float | None = None,
    masked_grad: bool = False,
) -> torch.Tensor:
    """Per-token perception KL k [B, T] between the real-image and the masked-image policies.

    With d = ℓ - ℓ̃ (ℓ = ``logp``, ℓ̃ = ``logp_masked``), per valid token:

        "k3":  x = clamp(-d, -20, 20); k = clamp(eˣ - x - 1, -10, 10)   (official low_var_kl)
        "kl":  k = d
        "mse": k = ½ d²
        "abs": k = |d|

    then, if ``clip`` is given, k = clamp(k, 0, clip) (the official ``use_kl_prcp_clipping``, off
    in every official script; TRL's later PAPO clamps k3 to [0, 0.2]).

    Args:
        logp: float [B, T], sampled-token log-probs with the real image (current policy, with grad).
        logp_masked: float [B, T], the same tokens' log-probs with the masked image; detached
            unless ``masked_grad``.
        mask: bool [B, T], response mask.
        estimator: one of ``PERCEPTION_KL_ESTIMATORS``.
        clip: upper bound (> 0) of the optional clamp to [0, clip], or None (off).
        masked_grad: let the gradient flow into ``logp_masked`` too (the official
            ``RECOMPUTE_AUG_LOG_PROBS``); False: it is a constant (the official default).

    Returns:
        float [B, T], exactly 0 at padding. Its gradient flows into ``logp`` (and, with
        ``masked_grad``, into ``logp_masked``): for "k3", dk/dℓ = 1 - exp(ℓ̃ - ℓ) = -dk/dℓ̃ where
        neither clamp is active, else 0.
    """
    mask = as_bool_mask(mask)
    logp = check_token_values(logp, mask, "logp")
    logp_masked = check_token_values(logp_masked, mask, "logp_masked")
    if estimator not in PERCEPTION_KL_ESTIMATORS:
        raise ValueError(
            f"estimator is {estimator!r}; choose one of {', '.join(PERCEPTION_KL_ESTIMATORS)}."
        )
    if clip is not None:
        clip = real_number(clip, "clip")
        if clip <= 0:
            raise ValueError(f"clip must be positive (or None to disable), got {clip!r}.")
    masked = logp_masked if masked_grad else logp_masked.detach()
    diff = torch.where(mask, logp - masked.to(logp.dtype), 0.0)
    if estimator == "k3":
        x = (-diff).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
        k = (torch.exp(x) - x - 1.0).clamp(-K3_LIMIT, K3_LIMIT)
    elif estimator == "kl":
        k = diff
    elif estimator == "mse":
        k = 0.5 * diff.square()
    else:
        k = diff.abs()
    if clip is not None:
        k = k.clamp(0.0, clip)
    return torch.where(mask, k, 0.0)


def papo_token_terms(
    logp: torch.Tensor,
    logp_masked: torch.Tensor,
    mask: torch.Tensor,
    coef: float,
    entropy_coef: float = 0.0,
    masked_entropy_coef: float = 0.0,
    estimator: str = "k3",
    clip: float | None = None,
    kl_rows: torch.Tensor | None = None,
    masked_grad: bool = False,
) -> torch.Tensor:
    """Per-token PAPO loss [B, T]: -γ·k + η_ori·(-ℓ) + η_aug·(-ℓ̃), 0 at padding.

    Normalise it like the policy loss: its token-mean over the valid tokens (:func:`papo_loss`) is
    the official extra loss -γ·L_prcp + η_ori·H + η_aug·H̃ with loss_avg_mode "token".

    Args:
        logp: float [B, T], real-image sampled-token log-probs (current policy, with grad).
        logp_masked: float [B, T], masked-image log-probs: θ_old's, a constant (the official
            default), or, with ``masked_grad``, the current policy's with gradient.
        mask: bool [B, T], response mask.
        coef: γ ≥ 0, weight of the perception KL (official 0.02 PAPO_G, 0.01 PAPO_D).
        entropy_coef: η_ori ≥ 0, weight of the real-image entropy estimate -ℓ (gradient -η_ori).
        masked_entropy_coef: η_aug ≥ 0, weight of the masked-image estimate -ℓ̃ (gradient -η_aug
            with ``masked_grad``, else none).
        estimator, clip, masked_grad: as in :func:`perception_kl`.
        kl_rows: optional bool [B]: the rows whose KL counts (e.g. the rows with an image); the
            other rows keep their entropy terms and get k = 0.

    Returns:
        float [B, T]; d/dℓ = -γ·dk/dℓ - η_ori on valid tokens, 0 on padding; into ℓ̃ nothing, or,
        with ``masked_grad``, d/dℓ̃ = -γ·dk/dℓ̃ - η_aug.
    """
    mask = as_bool_mask(mask)
    coef = _non_negative(coef, "coef")
    entropy_coef = _non_negative(entropy_coef, "entropy_coef")
    masked_entropy_coef = _non_negative(masked_entropy_coef, "masked_entropy_coef")
    k = perception_kl(
        logp, logp_masked, mask, estimator=estimator, clip=clip, masked_grad=masked_grad
    )
    if kl_rows is not None:
        kl_rows = as_bool_vector(kl_rows, mask.shape[0], "kl_rows").to(mask.device)
        k = torch.where(kl_rows[:, None], k, 0.0)
    real = torch.where(mask, logp, 0.0)
    masked = logp_masked if masked_grad else logp_masked.detach()
    masked = torch.where(mask, masked.to(logp.dtype), 0.0)
    per_token = -coef * k - entropy_coef * real - masked_entropy_coef * masked
    return torch.where(mask, per_token, 0.0)


def papo_loss(
    logp: torch.Tensor,
    logp_masked: torch.Tensor,
    mask: torch.Tensor,
    coef: float,
    entropy_coef: float = 0.0,
    masked_entropy_coef: float = 0.0,
    estimator: str = "k3",
    clip: float | None = None,
    kl_rows: torch.Tensor | None = None,
    num_items: int | float | torch.Tensor | None = None,
    masked_grad: bool = False,
) -> torch.Tensor:
    """The token-mean of :func:`papo_token_terms`: sum over valid tokens / N (scalar).

    N = mask.sum() (at least 1) by default, or ``num_items`` (a global token count). The official
    code divides by N + 1e-8, which differs from this by a relative 1e-8/N.
    """
    per_token = papo_token_terms(
        logp,
        logp_masked,
        mask,
        coef,
        entropy_coef=entropy_coef,
        masked_entropy_coef=masked_entropy_coef,
        estimator=estimator,
        clip=clip,
        kl_rows=kl_rows,
        masked_grad=masked_grad,
    )
    total = per_token.sum()
    denominator = check_num_items(num_items)
    if denominator is None:
        denominator = as_bool_mask(mask).sum().clamp(min=1).to(total.dtype)
    elif isinstance(denominator, torch.Tensor):
        denominator = denominator.to(device=total.device, dtype=total.dtype)
    return total / denominator


def _non_negative(value: object, name: str) -> float:
    value = real_number(value, name)
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}.")
    return value
