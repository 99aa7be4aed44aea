"""Trajectory-level Advantage Shaping (TAS) and the per-token VPPO advantages.

Shapes: B = responses, T = response tokens. ``mask`` is a [B, T] response mask (True on real
response tokens); 0/1 integer or float masks are accepted and read as bool.
"""

from __future__ import annotations

import math
import numbers

import torch

from vppo._tensor_checks import (
    as_bool_mask,
    as_bool_vector,
    as_group_ids,
    check_ratio,
    check_row_values,
    check_token_values,
    check_unit_weights,
    float_dtype,
    real_number,
)
from vppo.algorithm.selection import tgf_mask

# A batch whose trajectory scores span no more than this is treated as constant: every α = 1.
TAS_MIN_SPAN = 1e-6


def _check_betas(beta_min: object, beta_max: object) -> tuple[float, float | None]:
    """Validated (beta_min, beta_max); beta_max None means "dynamic"."""
    beta_min = real_number(beta_min, "beta_min")
    if beta_min <= 0:
        raise ValueError(f"beta_min must be > 0, got {beta_min!r}.")
    if isinstance(beta_max, str):
        if beta_max != "dynamic":
            raise ValueError(f"beta_max must be a number or 'dynamic', got {beta_max!r}.")
        if beta_min > 1:
            raise ValueError(
                f"beta_min must be <= 1 when beta_max is 'dynamic' (mean α is 1), got {beta_min!r}."
            )
        return beta_min, None
    if isinstance(beta_max, bool) or not isinstance(beta_max, numbers.Real):
        raise ValueError(f"beta_max must be a number or 'dynamic', got {beta_max!r}.")
    beta_max = float(beta_max)
    if not math.isfinite(beta_max) or beta_max <= beta_min:
        raise ValueError(f"beta_max must be finite and > beta_min ({beta_min}), got {beta_max!r}.")
    return beta_min, beta_max


def tas_scale(
    traj_dep: torch.Tensor,
    beta_min: float = 0.9,
    beta_max: float | str = "dynamic",
    valid: torch.Tensor | None = None,
    group_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """TAS advantage scale α per response (paper Eq. 5).

    u_i = clamp((S̄_i - min_j S̄_j) / (max_j S̄_j - min_j S̄_j), 0, 1) and α_i = β_min + u_i (β_max - β_min),
    with min/max taken over the valid responses of the scope (the whole input, or each group).

    - ``beta_max`` a float (> beta_min): α spans [β_min, β_max], min score → β_min, max → β_max.
    - ``beta_max="dynamic"``: β_max = β_min + (1 - β_min) / mean(u) over the scope's valid rows,
      so mean α over them is exactly 1 (TAS only redistributes advantage magnitude). This is the
      official code's rule; the resulting β_max depends on the batch and can be well above 1.
    - Invalid rows (``valid`` False: empty or text-only responses) get α = 1 and are left out of
      min, max and mean(u).
    - A scope with fewer than two valid rows, or with max - min <= 1e-6, gets α = 1 throughout.
    - mean(u) = 0 cannot occur once max > min (the max row has u = 1), but is guarded anyway with
      α = 1; the official code would give β_min (0.9) to every row there.

    Args:
        traj_dep: float [B], trajectory dependency S̄ (mean token dependency); finite on valid rows.
        beta_min: lower end of the α range, > 0 (and <= 1 when dynamic).
        beta_max: upper end (> beta_min) or "dynamic".
        valid: bool [B], rows that take part (default: all).
        group_ids: integer [B]; when given, statistics are computed within each group separately
            (the "group" scope), e.g. per prompt.

    Returns:
        float [B] α (float64 if ``traj_dep`` is float64, else float32). No gradient.
    """
    if not isinstance(traj_dep, torch.Tensor):
        raise ValueError(f"traj_dep must be a torch.Tensor, got {type(traj_dep).__name__}.")
    if traj_dep.dim() != 1:
        raise ValueError(f"traj_dep must be a 1-D [B] tensor, got shape {tuple(traj_dep.shape)}.")
    size = traj_dep.shape[0]
    beta_min, fixed_beta_max = _check_betas(beta_min, beta_max)
    valid = (
        torch.ones(size, dtype=torch.bool, device=traj_dep.device)
        if valid is None
        else as_bool_vector(valid, size, "valid").to(traj_dep.device)
    )
    check_row_values(traj_dep, size, "traj_dep", valid=valid)
    if group_ids is None:
        group = torch.zeros(size, dtype=torch.long, device=traj_dep.device)
    else:
        group = as_group_ids(group_ids, size).to(traj_dep.device)
    out_dtype = float_dtype(traj_dep.dtype)
    if size == 0:
        return torch.ones(0, dtype=out_dtype, device=traj_dep.device)

    num_groups = int(group.max()) + 1
    score = torch.where(valid, traj_dep.detach().to(torch.float64), 0.0)
    ones = valid.to(torch.float64)
    count = torch.zeros(num_groups, dtype=torch.float64, device=score.device).index_add_(
        0, group, ones
    )
    group_min = torch.full_like(count, float("inf")).scatter_reduce(
        0, group, torch.where(valid, score, float("inf")), reduce="amin"
    )
    group_max = torch.full_like(count, float("-inf")).scatter_reduce(
        0, group, torch.where(valid, score, float("-inf")), reduce="amax"
    )
    span = group_max - group_min
    active_group = (count >= 2) & (span > TAS_MIN_SPAN)
    active = valid & active_group[group]
    safe_span = torch.where(active_group, span, 1.0)
    u = ((score - group_min[group]) / safe_span[group]).clamp(0.0, 1.0)
    u = torch.where(active, u, 0.0)
    if fixed_beta_max is None:
        mean_u = torch.zeros_like(count).index_add_(0, group, u) / count.clamp(min=1.0)
        active = active & (mean_u > 0)[group]
        slope = (1.0 - beta_min) / torch.where(mean_u > 0, mean_u, 1.0)[group]
    else:
        slope = torch.full_like(u, fixed_beta_max - beta_min)
    alpha = torch.where(active, beta_min + u * slope, 1.0)
    return alpha.to(out_dtype)


def _trajectory_mean(dep: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """float64 [B]: mean dependency over each response's valid tokens (0 for empty rows)."""
    total = torch.where(mask, dep.detach().to(torch.float64), 0.0).sum(dim=-1)
    return total / mask.sum(dim=-1).clamp(min=1).to(torch.float64)


def token_advantages(
    advantages: torch.Tensor,
    dep: torch.Tensor | None,
    mask: torch.Tensor,
    *,
    use_tas: bool = True,
    use_tgf: bool = True,
    ratio: float = 0.4,
    beta_min: float = 0.9,
    beta_max: float | str = "dynamic",
    token_weights: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """VPPO per-token advantages Â_{i,t} = A_i · α_i · w_{i,t} (paper Eq. 6, TGF as zero advantage).

    Multiplying the per-token clipped loss by a mask and averaging over all response tokens is the
    same objective, with the same gradient, as giving filtered tokens zero advantage, so a PPO
    loss that accepts [B, T] advantages needs no other change.

    α_i: ``scale`` if given (e.g. TAS computed by the trainer over the batch gathered from every
    process); otherwise, with ``use_tas``, ``tas_scale`` of the trajectory mean dependency over
    this batch (rows without valid tokens excluded); otherwise 1.

    w_{i,t}: ``token_weights`` if given (soft, entropy or random selection; overrides
    ``use_tgf``); otherwise, with ``use_tgf``, ``tgf_mask(dep, mask, ratio)``; otherwise 1.

    Args:
        advantages: float [B], per-response (GRPO/DAPO) advantages.
        dep: float [B, T] visual dependency; may be None when neither TAS nor TGF needs it.
        mask: bool [B, T] response mask.
        use_tas: scale advantages by TAS when ``scale`` is not given.
        use_tgf: keep only the top-``ratio`` tokens when ``token_weights`` is not given.
        ratio: TGF keep ratio in (0, 1].
        beta_min: TAS lower bound (see ``tas_scale``).
        beta_max: TAS upper bound or "dynamic" (see ``tas_scale``).
        token_weights: float [B, T] in [0, 1], per-token weights to use instead of TGF.
        scale: float [B], precomputed α.

    Returns:
        float [B, T] (float64 if ``advantages`` is float64, else float32), exactly 0 at padding and
        at filtered tokens.
    """
    mask = as_bool_mask(mask)
    size = mask.shape[0]
    advantages = check_row_values(advantages, size, "advantages")
    needs_dep = (scale is None and use_tas) or (token_weights is None and use_tgf)
    if dep is None and needs_dep:
        raise ValueError(
            "dep is None, but TAS (use_tas without scale) or TGF (use_tgf without token_weights) "
            "needs it."
        )
    if dep is not None:
        dep = check_token_values(dep, mask, "dep")
    out_dtype = float_dtype(advantages.dtype)

    if scale is not None:
        alpha = check_row_values(scale, size, "scale").to(out_dtype)
    elif use_tas:
        alpha = tas_scale(
            _trajectory_mean(dep, mask), beta_min, beta_max, valid=mask.any(dim=-1)
        ).to(out_dtype)
    else:
        alpha = torch.ones(size, dtype=out_dtype, device=mask.device)

    if token_weights is not None:
        weights = check_unit_weights(token_weights, mask, "token_weights").to(out_dtype)
    elif use_tgf:
        weights = tgf_mask(dep, mask, check_ratio(ratio)).to(out_dtype)
    else:
        weights = mask.to(out_dtype)

    per_response = advantages.detach().to(out_dtype) * alpha
    shaped = per_response.unsqueeze(-1) * weights
    return torch.where(mask & (weights != 0), shaped, 0.0)
