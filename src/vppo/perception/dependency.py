"""Token visual-dependency estimators: how much the image matters for each response token.

VPPO (arXiv 2510.09285, Def. 3.1) scores token t of a response by

    S(s_t, I) = KL( pi(. | s_t, I) || pi(. | s_t, I') ),

the divergence between the policy's next-token distribution with the real image I and with a
perturbed, uninformative image I'. Shapes below: B responses, T response tokens (right-padded,
``mask`` True at real tokens, EOS included), V vocabulary entries, H hidden size.

``mask`` follows the mask rule of the algorithm layer (``vppo._tensor_checks``): bool, or integer
or float holding only 0 and 1; any other value raises ValueError.

Estimators offered:

* :func:`token_dependency` works from the sampled tokens' log-probabilities only ([B, T]), which
  every RL stack already has. ``"k3"`` is what the official code computes (and what the paper's
  numbers come from); ``"top1_drop"`` is the paper's Table 12 ablation.
* :func:`distribution_dependency` takes full [B, T, V] logits: exact ``"kl"`` or ``"jsd"``.
* :func:`full_kl_dependency` computes the same exact divergences from last hidden states and the
  LM-head weight in token chunks, so memory is O(chunk_size * V), never B * T * V.
* :func:`dependency_from_passes` picks the function above for an estimator name, from what a
  real-image pass and a perturbed-image pass yield (the one dispatch of analysis and trainer).
* :func:`trajectory_dependency` averages token scores over each response.

All outputs are exactly 0 at padding positions. Pure torch; nothing here imports transformers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from vppo._tensor_checks import LOG_RATIO_LIMIT, as_bool_mask_like, positive_int

__all__ = [
    "DEPENDENCY_ESTIMATORS",
    "DISTRIBUTION_ESTIMATORS",
    "TOKEN_ESTIMATORS",
    "dependency_from_passes",
    "distribution_dependency",
    "full_kl_dependency",
    "token_dependency",
    "trajectory_dependency",
]


# --------------------------------------------------------------------------------------------
# Estimator registries
# --------------------------------------------------------------------------------------------


def _k3(logp_real: torch.Tensor, logp_perturbed: torch.Tensor) -> torch.Tensor:
    # With r = pi(o_t|I') / pi(o_t|I): r - 1 - log r >= 0, and E_{o_t ~ pi(.|I)}[.] = KL(I || I').
    # expm1(d) - d is exp(d) - d - 1 without cancellation error for small d. d is clamped to
    # ±LOG_RATIO_LIMIT (20) first so exp cannot overflow (reason in vppo._tensor_checks).
    log_ratio = (logp_perturbed - logp_real).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
    return torch.expm1(log_ratio) - log_ratio


def _top1_drop(logp_real: torch.Tensor, logp_perturbed: torch.Tensor) -> torch.Tensor:
    return logp_real.exp() - logp_perturbed.exp()


TOKEN_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "k3": _k3,
    "top1_drop": _top1_drop,
}
"""Sampled-token estimators ``fn(logp_real, logp_perturbed) -> raw score`` (before clamping)."""


def _kl_from_log_probs(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    # Terms with p = 0 contribute 0 even where log q = -inf (0 * inf would be NaN).
    p = logp.exp()
    terms = torch.where(p > 0, p * (logp - logq), torch.zeros((), dtype=p.dtype, device=p.device))
    return terms.sum(dim=-1).clamp(min=0.0)


def _jsd_from_log_probs(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    log_mid = torch.logaddexp(logp, logq) - math.log(2.0)
    return (
        0.5 * _kl_from_log_probs(logp, log_mid) + 0.5 * _kl_from_log_probs(logq, log_mid)
    ).clamp(min=0.0)


DISTRIBUTION_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "kl": _kl_from_log_probs,
    "jsd": _jsd_from_log_probs,
}
"""Full-distribution divergences ``fn(log_p_real [N,V], log_p_perturbed [N,V]) -> [N]``."""

DEPENDENCY_ESTIMATORS: tuple[str, ...] = (*TOKEN_ESTIMATORS, *DISTRIBUTION_ESTIMATORS)
"""Every estimator name, the sampled-token ones first: the choices for a config or a CLI.

``name in TOKEN_ESTIMATORS`` tells which function scores it (:func:`token_dependency` from the
sampled tokens' log-probs, else :func:`full_kl_dependency` / :func:`distribution_dependency`);
:func:`dependency_from_passes` makes that choice from a name.
"""


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _check_2d_pair(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    for tensor, name in ((a, name_a), (b, name_b)):
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise ValueError(f"{name} must be a floating-point torch.Tensor.")
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must both have shape [B, T], got {tuple(a.shape)} and "
            f"{tuple(b.shape)}."
        )


def _check_hidden_inputs(
    hidden_real: torch.Tensor,
    hidden_perturbed: torch.Tensor,
    lm_head_weight: torch.Tensor,
    lm_head_bias: torch.Tensor | None,
) -> None:
    """:func:`full_kl_dependency`'s tensors: float, [B, T, H] twice, [V, H], optional [V], one device."""
    named = (
        (hidden_real, "hidden_real"),
        (hidden_perturbed, "hidden_perturbed"),
        (lm_head_weight, "lm_head_weight"),
    )
    for tensor, name in named:
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise ValueError(f"{name} must be a floating-point torch.Tensor.")
    if hidden_real.ndim != 3 or hidden_real.shape != hidden_perturbed.shape:
        raise ValueError(
            f"hidden_real and hidden_perturbed must both have shape [B, T, H], got "
            f"{tuple(hidden_real.shape)} and {tuple(hidden_perturbed.shape)}."
        )
    hidden_size = hidden_real.shape[-1]
    if lm_head_weight.ndim != 2 or lm_head_weight.shape[1] != hidden_size:
        raise ValueError(
            f"lm_head_weight must have shape [V, {hidden_size}], got {tuple(lm_head_weight.shape)}."
        )
    vocab_size = lm_head_weight.shape[0]
    if lm_head_bias is not None and tuple(lm_head_bias.shape) != (vocab_size,):
        raise ValueError(
            f"lm_head_bias must have shape [{vocab_size}], got {tuple(lm_head_bias.shape)}."
        )
    devices = {hidden_real.device, hidden_perturbed.device, lm_head_weight.device}
    if len(devices) != 1:
        raise ValueError(
            "hidden_real, hidden_perturbed and lm_head_weight must be on the same device, got "
            f"{hidden_real.device}, {hidden_perturbed.device} and {lm_head_weight.device}."
        )


def _check_finite_at_valid(x: torch.Tensor, valid: torch.Tensor, name: str) -> None:
    bad = int((~torch.isfinite(x) & valid).sum())
    if bad:
        raise ValueError(f"{name} has {bad} non-finite value(s) at valid (mask True) positions.")


def _check_logits_rows(x: torch.Tensor, name: str) -> None:
    """Rows [N, V] must hold no NaN / +inf and at least one finite logit (-inf is allowed)."""
    bad_rows = torch.isnan(x).any(dim=-1) | torch.isposinf(x).any(dim=-1)
    bad_rows |= ~torch.isfinite(x).any(dim=-1)
    bad = int(bad_rows.sum())
    if bad:
        raise ValueError(
            f"{name} has NaN, +inf or no finite logit at {bad} valid (mask True) position(s)."
        )


def _check_estimator(estimator: str, registry: dict[str, Callable]) -> Callable:
    if estimator not in registry:
        raise ValueError(
            f"Unknown estimator {estimator!r}; valid estimators are {', '.join(sorted(registry))}."
        )
    return registry[estimator]


def _check_temperature(temperature: float) -> float:
    temperature = float(temperature)
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}.")
    return temperature


# --------------------------------------------------------------------------------------------
# Public estimators
# --------------------------------------------------------------------------------------------


def token_dependency(
    logp_real: torch.Tensor,
    logp_perturbed: torch.Tensor,
    mask: torch.Tensor,
    estimator: str = "k3",
    clip: float = 10.0,
) -> torch.Tensor:
    """Per-token visual dependency from the sampled tokens' log-probabilities.

    Args:
        logp_real: [B, T] float, log pi(o_t | s_t, I): log-prob of each sampled response token
            with the real image, from the policy whose samples are scored (VPPO uses the
            pre-update policy), logits divided by the sampling temperature.
        logp_perturbed: [B, T] float, log pi(o_t | s_t, I') for the same tokens and weights with
            the perturbed image (e.g. from :func:`vppo.perception.blacken_patches`).
        mask: [B, T] bool (or 0/1), True at valid response tokens (EOS included).
        estimator: ``"k3"`` (default) or ``"top1_drop"`` (see :data:`TOKEN_ESTIMATORS`).
        clip: upper clamp of the score, > 0 (official: 10.0; ``float("inf")`` disables it).

    Estimators:
        ``"k3"``: with d = clamp(logp_perturbed - logp_real, -20, 20), s = exp(d) - d - 1,
            i.e. r - 1 - log r for r = pi(o_t|I') / pi(o_t|I). Paper vs code: the paper
            defines S as the full-vocabulary KL(pi(.|I) || pi(.|I')); the official code (and so
            the published numbers) uses this single-sample k3 estimate on the sampled token,
            clamped to [0, 10]. Its expectation over o_t ~ pi(.|I) is exactly that KL (the
            clamp biases it only when d is beyond +-20 or s > clip). It is large both when the
            image raises the token's probability (r = 0.01 -> 3.6) and when the perturbed image
            does (r = 10 -> 6.7). For the exact KL use :func:`full_kl_dependency`.
        ``"top1_drop"``: pi(o_t|I) - pi(o_t|I'), the probability drop of the sampled token
            (paper Table 12 ablation). Clamped below at 0, so tokens the perturbation makes
            *more* likely score 0 and all estimators are non-negative "dependencies"; as a
            probability difference it never exceeds 1, so ``clip`` only matters if < 1.

    Every estimator's score is clamped to [0, clip].

    Returns:
        [B, T] tensor, float32 (float64 if the inputs are float64), exactly 0 where ``mask`` is
        False. Non-finite inputs at padding positions are ignored; at valid positions they
        raise ValueError. Differentiable, though VPPO uses it as a detached score.
    """
    score_fn = _check_estimator(estimator, TOKEN_ESTIMATORS)
    clip = float(clip)
    if math.isnan(clip) or clip <= 0:
        raise ValueError(f"clip must be > 0, got {clip}.")
    _check_2d_pair(logp_real, logp_perturbed, "logp_real", "logp_perturbed")
    valid = as_bool_mask_like(mask, logp_real.shape, logp_real.device)
    _check_finite_at_valid(logp_real, valid, "logp_real")
    _check_finite_at_valid(logp_perturbed, valid, "logp_perturbed")

    dtype = torch.promote_types(
        torch.promote_types(logp_real.dtype, logp_perturbed.dtype), torch.float32
    )
    zero = torch.zeros((), dtype=dtype, device=logp_real.device)
    real = torch.where(valid, logp_real.to(dtype), zero)
    perturbed = torch.where(valid, logp_perturbed.to(dtype), zero)
    score = score_fn(real, perturbed).clamp(min=0.0, max=clip)
    return torch.where(valid, score, zero)


def distribution_dependency(
    logits_real: torch.Tensor,
    logits_perturbed: torch.Tensor,
    mask: torch.Tensor,
    estimator: str = "kl",
    temperature: float = 1.0,
) -> torch.Tensor:
    """Exact per-token divergence between the full next-token distributions.

    Args:
        logits_real: [B, T, V] logits at each response position with the real image (any
            float dtype; computed in float32 or wider).
        logits_perturbed: [B, T, V] logits with the perturbed image.
        mask: [B, T] bool (or 0/1), True at valid response tokens.
        estimator: ``"kl"`` = KL(softmax(real/tau) || softmax(perturbed/tau)) (the paper's
            Def. 3.1), or ``"jsd"`` = Jensen-Shannon divergence (natural log, <= log 2).
        temperature: tau > 0; logits are divided by it as in sampling.

    Only valid positions are evaluated. NaN or +inf logits at a valid position raise
    ValueError (-inf logits are allowed and mean probability 0; KL is +inf if the perturbed
    distribution gives 0 to a token the real one does not). For long sequences prefer
    :func:`full_kl_dependency`, which never materialises [B, T, V].

    Returns:
        [B, T] float32 (float64 for float64 input), >= 0, exactly 0 where ``mask`` is False.
    """
    divergence = _check_estimator(estimator, DISTRIBUTION_ESTIMATORS)
    temperature = _check_temperature(temperature)
    for tensor, name in ((logits_real, "logits_real"), (logits_perturbed, "logits_perturbed")):
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise ValueError(f"{name} must be a floating-point torch.Tensor.")
    if logits_real.ndim != 3 or logits_real.shape != logits_perturbed.shape:
        raise ValueError(
            f"logits_real and logits_perturbed must both have shape [B, T, V], got "
            f"{tuple(logits_real.shape)} and {tuple(logits_perturbed.shape)}."
        )
    valid = as_bool_mask_like(mask, logits_real.shape[:2], logits_real.device)
    dtype = torch.promote_types(logits_real.dtype, torch.float32)
    real = logits_real[valid].to(dtype)
    perturbed = logits_perturbed[valid].to(dtype)
    _check_logits_rows(real, "logits_real")
    _check_logits_rows(perturbed, "logits_perturbed")
    scores = divergence(
        torch.log_softmax(real / temperature, dim=-1),
        torch.log_softmax(perturbed / temperature, dim=-1),
    )
    out = torch.zeros(valid.shape, dtype=dtype, device=logits_real.device)
    out[valid] = scores
    return out


def _chunk_logits(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    dtype: torch.dtype,
    vocab_block: int,
) -> torch.Tensor:
    """[N, H] hidden (already ``dtype``) x [V, H] weight -> [N, V] logits in ``dtype``."""
    if weight.dtype == dtype:
        logits = hidden @ weight.T
    else:
        # Upcast the weight a block of rows at a time so no full-precision copy of the whole
        # LM head is made; the block is sized to hold about as many elements as the logits.
        logits = torch.empty(hidden.shape[0], weight.shape[0], dtype=dtype, device=hidden.device)
        for start in range(0, weight.shape[0], vocab_block):
            block = weight[start : start + vocab_block].to(dtype)
            logits[:, start : start + vocab_block] = hidden @ block.T
    if bias is not None:
        logits += bias.to(dtype)
    return logits


@torch.no_grad()
def full_kl_dependency(
    hidden_real: torch.Tensor,
    hidden_perturbed: torch.Tensor,
    lm_head_weight: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    estimator: str = "kl",
    lm_head_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact full-vocabulary dependency from last hidden states, computed in token chunks.

    This is the paper's definition S = KL(pi(.|s_t, I) || pi(.|s_t, I')) over the entire
    vocabulary (or the JSD), without ever building [B, T, V] logits: the valid tokens are
    gathered and processed ``chunk_size`` at a time, so peak extra memory is a small constant
    times ``chunk_size * V`` elements regardless of B and T.

    Args:
        hidden_real: [B, T, H] final hidden states (after the final norm, i.e. the LM head's
            input) at the positions that predict each response token, with the real image.
        hidden_perturbed: [B, T, H] the same with the perturbed image.
        lm_head_weight: [V, H] LM-head weight (``model.lm_head.weight``).
        mask: [B, T] bool (or 0/1), True at valid response tokens.
        temperature: tau > 0; logits = (h @ W.T + b) / tau, as in sampling.
        chunk_size: number of tokens per chunk (>= 1); trade speed for memory.
        estimator: ``"kl"`` (default) or ``"jsd"``, as in :func:`distribution_dependency`.
        lm_head_bias: optional [V] LM-head bias.

    Precision: everything (matmul, softmax, divergence) runs in float32, or float64 if an input
    is float64, even for bf16/fp16 inputs; a low-precision weight is upcast in row blocks, not
    copied whole. Hidden states must be finite at valid positions (ValueError otherwise).

    Runs under ``torch.no_grad()``: this is a scoring function and returns a tensor without
    autograd history.

    Returns:
        [B, T] tensor (float32 or float64), >= 0, exactly 0 where ``mask`` is False.
    """
    divergence = _check_estimator(estimator, DISTRIBUTION_ESTIMATORS)
    temperature = _check_temperature(temperature)
    positive_int(chunk_size, "chunk_size")
    _check_hidden_inputs(hidden_real, hidden_perturbed, lm_head_weight, lm_head_bias)
    valid = as_bool_mask_like(mask, hidden_real.shape[:2], hidden_real.device)

    hidden_size = hidden_real.shape[-1]
    vocab_size = lm_head_weight.shape[0]
    dtype = torch.float32
    for tensor in (hidden_real, hidden_perturbed, lm_head_weight):
        dtype = torch.promote_types(dtype, tensor.dtype)
    vocab_block = max(1, (chunk_size * vocab_size) // max(hidden_size, 1))
    out = torch.zeros(valid.shape, dtype=dtype, device=hidden_real.device)
    batch_idx, token_idx = valid.nonzero(as_tuple=True)
    for start in range(0, batch_idx.numel(), chunk_size):
        rows_b = batch_idx[start : start + chunk_size]
        rows_t = token_idx[start : start + chunk_size]
        real = hidden_real[rows_b, rows_t].to(dtype)
        perturbed = hidden_perturbed[rows_b, rows_t].to(dtype)
        for tensor, name in ((real, "hidden_real"), (perturbed, "hidden_perturbed")):
            bad = int((~torch.isfinite(tensor)).any(dim=-1).sum())
            if bad:
                raise ValueError(
                    f"{name} has non-finite values at {bad} valid (mask True) position(s)."
                )
        # One matmul for both images, so a low-precision weight is upcast once per chunk.
        logits = _chunk_logits(
            torch.cat([real, perturbed]), lm_head_weight, lm_head_bias, dtype, vocab_block
        )
        if temperature != 1.0:
            logits /= temperature
        log_probs = torch.log_softmax(logits, dim=-1)
        n = rows_b.numel()
        out[rows_b, rows_t] = divergence(log_probs[:n], log_probs[n:])
    return out


def dependency_from_passes(
    estimator: str,
    *,
    mask: torch.Tensor,
    logp_real: torch.Tensor | None = None,
    logp_perturbed: torch.Tensor | None = None,
    hidden_real: torch.Tensor | None = None,
    hidden_perturbed: torch.Tensor | None = None,
    lm_head_weight: torch.Tensor | None = None,
    lm_head_bias: torch.Tensor | None = None,
    clip: float = 10.0,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Per-token dependency for any estimator name, from a real-image and a perturbed-image pass.

    Names in :data:`TOKEN_ESTIMATORS` go to :func:`token_dependency` (``logp_real``,
    ``logp_perturbed``, ``mask``, ``clip``); names in :data:`DISTRIBUTION_ESTIMATORS` go to
    :func:`full_kl_dependency` (``hidden_real``, ``hidden_perturbed``, ``lm_head_weight``,
    ``lm_head_bias``, ``mask``, ``temperature``, ``chunk_size``). Inputs the estimator does not
    use are ignored, so a caller that has both passes' log-probs and hidden states can hand over
    all of them; one that has only what its estimator needs passes just that.

    Args:
        estimator: a name in :data:`DEPENDENCY_ESTIMATORS`.
        mask: [B, T] bool (or 0/1), True at valid response tokens.
        logp_real, logp_perturbed: [B, T] float, the sampled tokens' log-probs (logits divided
            by the sampling temperature) with the real and the perturbed image.
        hidden_real, hidden_perturbed: [B, T, H] float, the LM head's inputs at the positions
            that predict each response token, with the real and the perturbed image.
        lm_head_weight: [V, H] LM-head weight; ``lm_head_bias``: optional [V].
        clip: upper clamp of the sampled-token estimators, > 0.
        temperature: tau > 0 of the exact estimators (the sampled-token log-probs already
            carry it).
        chunk_size: tokens per chunk of the exact estimators.

    Returns:
        [B, T] tensor, exactly 0 where ``mask`` is False: :func:`token_dependency`'s or
        :func:`full_kl_dependency`'s result, unchanged. An unknown name, or a missing input the
        estimator needs, raises ValueError.
    """
    if estimator in TOKEN_ESTIMATORS:
        if logp_real is None or logp_perturbed is None:
            raise ValueError(f"estimator {estimator!r} needs logp_real and logp_perturbed.")
        return token_dependency(logp_real, logp_perturbed, mask, estimator=estimator, clip=clip)
    _check_estimator(estimator, {**TOKEN_ESTIMATORS, **DISTRIBUTION_ESTIMATORS})
    if hidden_real is None or hidden_perturbed is None or lm_head_weight is None:
        raise ValueError(
            f"estimator {estimator!r} needs hidden_real, hidden_perturbed and lm_head_weight."
        )
    return full_kl_dependency(
        hidden_real,
        hidden_perturbed,
        lm_head_weight,
        mask,
        temperature=temperature,
        chunk_size=chunk_size,
        estimator=estimator,
        lm_head_bias=lm_head_bias,
    )


def trajectory_dependency(dep: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean token dependency of each response, S-bar(tau) (paper Sec. 3.2.2).

    Args:
        dep: [B, T] float token scores (from any estimator above).
        mask: [B, T] bool (or 0/1), True at valid response tokens.

    Returns:
        [B] tensor, dtype of ``dep``: sum_t dep * mask / max(sum_t mask, 1). A response with no
        valid token (empty, or text-only rows scored as all-padding) gets 0, matching the
        official code's ``max(count, 1)`` denominator. Non-finite ``dep`` at padding is ignored;
        at valid positions it raises ValueError.
    """
    if not isinstance(dep, torch.Tensor) or not dep.is_floating_point():
        raise ValueError("dep must be a floating-point torch.Tensor.")
    if dep.ndim != 2:
        raise ValueError(f"dep must have shape [B, T], got {tuple(dep.shape)}.")
    valid = as_bool_mask_like(mask, dep.shape, dep.device)
    _check_finite_at_valid(dep, valid, "dep")
    total = torch.where(valid, dep, torch.zeros((), dtype=dep.dtype, device=dep.device)).sum(-1)
    count = valid.sum(-1).clamp(min=1).to(dep.dtype)
    return total / count
