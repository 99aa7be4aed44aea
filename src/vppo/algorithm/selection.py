"""Token selection for Token-level Gradient Filtering (TGF) and its ablation baselines.

Shapes: B = responses, T = response tokens. ``mask`` is a [B, T] response mask (True on real
response tokens, False on padding); 0/1 integer or float masks are accepted and read as bool.

Every top-k selection keeps, per response, exactly ``ceil(ratio * n_valid)`` valid tokens
(``n_valid`` = that row's valid tokens; 0 tokens for an empty row) and never a padding token.
Among equal scores the earlier position wins, so a selection is a deterministic function of its
inputs. None of the selections carries gradient: scores are detached before use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import torch

from vppo._tensor_checks import (
    as_bool_mask,
    check_ratio,
    check_token_values,
    float_dtype,
    real_number,
)

# The keep ratio is read as the nearest fraction p/q with q <= this bound, and counts are then
# exact integer ceilings of n * p / q. Plain float products land a hair above an integer for some
# inputs (0.07 * 100 = 7.000000000000001, and a float32 0.4 times 5 is 2.00000003 in float64),
# which would keep one token too many.
_RATIO_MAX_DENOMINATOR = 10**6

# Bisection on the soft-mask offset c stops once the bracket is this narrow; the mean weight is
# then within 0.25 * _SOFT_C_TOL of the ratio (sigmoid' <= 1/4).
_SOFT_C_TOL = 1e-7


def kept_token_counts(n_valid: torch.Tensor, ratio: float = 0.4) -> torch.Tensor:
    """Number of tokens a top-``ratio`` selection keeps in each response.

    k_i = ceil(ratio * n_i) for n_i > 0 and k_i = 0 for empty rows, computed exactly: ``ratio`` is
    read as the nearest fraction p/q with q <= 10**6 (so 0.4, in float64 or float32, is exactly
    2/5) and k_i = ceil(n_i * p / q) in integer arithmetic. Float noise therefore cannot add a
    token: 0.4 * 5 keeps 2, 0.4 * 10 keeps 4, 0.3 * 10 keeps 3, 0.07 * 100 keeps 7. Any positive
    ratio keeps at least one token of a non-empty row, as a ceiling does.

    Args:
        n_valid: integer [B] (any shape), valid tokens per response (>= 0).
        ratio: keep ratio in (0, 1].

    Returns:
        long, same shape as ``n_valid``, with 0 <= k_i <= n_i.
    """
    ratio = check_ratio(ratio)
    if (
        not isinstance(n_valid, torch.Tensor)
        or n_valid.is_floating_point()
        or n_valid.is_complex()
        or n_valid.dtype == torch.bool
    ):
        raise ValueError("n_valid must be an integer torch.Tensor of per-response token counts.")
    if (n_valid < 0).any():
        raise ValueError("n_valid must hold non-negative token counts.")
    fraction = Fraction(ratio).limit_denominator(_RATIO_MAX_DENOMINATOR)
    n = n_valid.to(torch.long)
    k = torch.div(
        n * fraction.numerator + fraction.denominator - 1,
        fraction.denominator,
        rounding_mode="floor",
    )
    return torch.minimum(torch.maximum(k, (n > 0).to(torch.long)), n)


def _topk_per_row(scores: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """bool [B, T]: the ceil(ratio * n_valid) highest-scoring valid tokens of each row.

    Padding is pushed to -inf and the sort is stable, so among equal scores the earlier position
    comes first. ``scores`` must already be finite at valid positions, hence strictly above the
    padding key, and the count never exceeds n_valid: padding can never be kept.
    """
    keys = scores.detach()
    if not keys.is_floating_point():
        keys = keys.to(torch.float32)
    keys = keys.masked_fill(~mask, float("-inf"))
    order = torch.sort(keys, dim=-1, descending=True, stable=True).indices
    counts = kept_token_counts(mask.sum(dim=-1), ratio)
    positions = torch.arange(mask.shape[-1], device=mask.device)
    kept_in_sorted_order = positions.unsqueeze(0) < counts.unsqueeze(-1)
    kept = torch.zeros_like(mask)
    kept.scatter_(-1, order, kept_in_sorted_order)
    return kept & mask


def tgf_mask(dep: torch.Tensor, mask: torch.Tensor, ratio: float = 0.4) -> torch.Tensor:
    """TGF token mask: the top-``ratio`` most visually dependent tokens of each response.

    Paper Eq. 4 with k = ratio; per response exactly ceil(ratio * n_valid) tokens are kept (see
    ``kept_token_counts``), ties broken by position (earlier wins), padding never kept.

    Args:
        dep: float [B, T], per-token visual dependency; finite at valid positions.
        mask: bool [B, T], response mask.
        ratio: fraction of each response's tokens to keep, in (0, 1].

    Returns:
        bool [B, T], True on kept tokens.
    """
    mask = as_bool_mask(mask)
    dep = check_token_values(dep, mask, "dep")
    ratio = check_ratio(ratio)
    return _topk_per_row(dep, mask, ratio)


def entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, ratio: float = 0.4) -> torch.Tensor:
    """Top-``ratio`` tokens of each response by policy entropy (the paper's Table 4 baseline).

    Same counting and tie-break as ``tgf_mask``.

    Args:
        entropy: float [B, T], per-token entropy of the policy; finite at valid positions.
        mask: bool [B, T], response mask.
        ratio: fraction of each response's tokens to keep, in (0, 1].

    Returns:
        bool [B, T], True on kept tokens.
    """
    mask = as_bool_mask(mask)
    entropy = check_token_values(entropy, mask, "entropy")
    ratio = check_ratio(ratio)
    return _topk_per_row(entropy, mask, ratio)


def random_token_mask(
    mask: torch.Tensor, ratio: float = 0.4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Exactly ceil(ratio * n_valid) uniformly random valid tokens per response.

    Each subset of that size is equally likely. The same ``generator`` state gives the same mask;
    scores are drawn on the generator's device and moved to ``mask``'s device.

    Args:
        mask: bool [B, T], response mask.
        ratio: fraction of each response's tokens to keep, in (0, 1].
        generator: optional torch.Generator for reproducibility.

    Returns:
        bool [B, T], True on kept tokens.
    """
    mask = as_bool_mask(mask)
    ratio = check_ratio(ratio)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}.")
    device = generator.device if generator is not None else mask.device
    scores = torch.rand(mask.shape, generator=generator, device=device).to(mask.device)
    return _topk_per_row(scores, mask, ratio)


def union_mask(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Tokens kept by either selection, e.g. dependency-top-k OR entropy-top-k.

    This is the official code's behaviour when both perception and entropy filtering are on.

    Args:
        a: bool [B, T].
        b: bool [B, T], same shape as ``a``.

    Returns:
        bool [B, T], a | b.
    """
    a = as_bool_mask(a, "a")
    b = as_bool_mask(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"b must have the shape of a {tuple(a.shape)}, got {tuple(b.shape)}.")
    return a | b


def soft_tgf_weights(
    dep: torch.Tensor, mask: torch.Tensor, ratio: float = 0.4, eps: float = 1e-6
) -> torch.Tensor:
    """Soft TGF weights (paper App. I, Table 6): a sigmoid of the within-response z-score.

    For each response, Z_t = (S_t - mu) / (sigma + eps) over its valid tokens (mu, sigma: mean and
    population standard deviation), then the offset c solving mean_t sigmoid(Z_t - c) = ratio is
    found by vectorised bisection (bracket [min Z - logit(ratio), max Z - logit(ratio)], which
    always contains the root), and w_t = sigmoid(Z_t - c). Consequences:

    - the mean weight over a response's valid tokens equals ``ratio`` (to ~1e-7);
    - weights are non-decreasing in the dependency within a response;
    - a constant response (all scores equal, including a single token) gets w = ratio everywhere;
    - ratio = 1 gives weight 1 on every valid token; padding and empty rows get 0.

    Args:
        dep: float [B, T], per-token visual dependency; finite at valid positions.
        mask: bool [B, T], response mask.
        ratio: target mean weight per response, in (0, 1].
        eps: added to sigma, >= 0.

    Returns:
        float [B, T] in [0, 1]; float64 if ``dep`` is float64, else float32. No gradient.
    """
    mask = as_bool_mask(mask)
    dep = check_token_values(dep, mask, "dep")
    ratio = check_ratio(ratio)
    eps = real_number(eps, "eps")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}.")
    out_dtype = float_dtype(dep.dtype)
    if ratio == 1.0 or mask.numel() == 0:
        return mask.to(out_dtype)

    valid = mask.to(torch.float64)
    n = valid.sum(dim=-1, keepdim=True).clamp(min=1.0)
    s = torch.where(mask, dep.detach().to(torch.float64), 0.0)
    mean = s.sum(dim=-1, keepdim=True) / n
    centred = torch.where(mask, s - mean, 0.0)
    sigma = (centred.square().sum(dim=-1, keepdim=True) / n).sqrt()
    s_max = torch.where(mask, s, float("-inf")).amax(dim=-1, keepdim=True)
    s_min = torch.where(mask, s, float("inf")).amin(dim=-1, keepdim=True)
    # Exactly constant rows get Z = 0; testing max == min (not sigma == 0) keeps rounding noise in
    # the mean from turning a constant row into +-1 z-scores when eps = 0.
    constant = ~(s_max > s_min)
    z = torch.where(mask & ~constant, centred / (sigma + eps), 0.0)

    logit_ratio = torch.logit(torch.tensor(ratio, dtype=torch.float64, device=dep.device))
    z_max = torch.where(mask, z, float("-inf")).amax(dim=-1, keepdim=True)
    z_min = torch.where(mask, z, float("inf")).amin(dim=-1, keepdim=True)
    empty = ~mask.any(dim=-1, keepdim=True)
    low = torch.where(empty, 0.0, z_min - logit_ratio)  # mean sigmoid(Z - low) >= ratio
    high = torch.where(empty, 0.0, z_max - logit_ratio)  # mean sigmoid(Z - high) <= ratio
    width = float((high - low).max()) if high.numel() else 0.0
    steps = 0
    while width > _SOFT_C_TOL:
        width /= 2.0
        steps += 1
    for _ in range(steps):
        mid = 0.5 * (low + high)
        mean_weight = (torch.sigmoid(z - mid) * valid).sum(dim=-1, keepdim=True) / n
        above = mean_weight > ratio
        low = torch.where(above, mid, low)
        high = torch.where(above, high, mid)
    offset = 0.5 * (low + high)
    weights = torch.sigmoid(z - offset)
    weights = torch.where(constant, ratio, weights)
    return torch.where(mask, weights, 0.0).to(out_dtype)


# --------------------------------------------------------------------------------------------
# Registry of selection variants
# --------------------------------------------------------------------------------------------

SelectionBuilder = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class TokenSelection:
    """How one token-selection variant turns its inputs into per-token weights.

    Attributes:
        name: registry key.
        needs_dependency: True if ``dep`` must be given.
        needs_entropy: True if ``entropy`` must be given.
        description: one line for help texts.
        build: ``build(*, dep, mask, ratio, entropy, generator, entropy_ratio, **_)`` ->
            float [B, T] in [0, 1]. ``select_tokens`` passes all six keywords (``entropy_ratio``
            already resolved to ``ratio`` when not given); a builder names the ones it reads and
            takes ``**_`` for the rest, so a new input never breaks it.
    """

    name: str
    needs_dependency: bool
    needs_entropy: bool
    description: str
    build: SelectionBuilder


TOKEN_SELECTIONS: dict[str, TokenSelection] = {}


def register_token_selection(
    name: str, *, needs_dependency: bool, needs_entropy: bool, description: str
) -> Callable[[SelectionBuilder], SelectionBuilder]:
    """Decorator adding a selection builder to ``TOKEN_SELECTIONS`` under ``name``."""

    def decorator(build: SelectionBuilder) -> SelectionBuilder:
        if name in TOKEN_SELECTIONS:
            raise ValueError(f"name {name!r} is already a registered token selection.")
        TOKEN_SELECTIONS[name] = TokenSelection(
            name=name,
            needs_dependency=needs_dependency,
            needs_entropy=needs_entropy,
            description=description,
            build=build,
        )
        return build

    return decorator


# Each builder takes every input by keyword and names only the ones it reads; ``**_`` absorbs the
# rest, so select_tokens passes one set of keywords to all of them.


@register_token_selection(
    "topk",
    needs_dependency=True,
    needs_entropy=False,
    description="TGF: top-k tokens by visual dependency (the paper's default).",
)
def _build_topk(*, dep, mask, ratio, **_) -> torch.Tensor:
    return tgf_mask(dep, mask, ratio).to(torch.float32)


@register_token_selection(
    "soft",
    needs_dependency=True,
    needs_entropy=False,
    description="Soft TGF: sigmoid of the z-scored dependency with mean weight = ratio.",
)
def _build_soft(*, dep, mask, ratio, **_) -> torch.Tensor:
    return soft_tgf_weights(dep, mask, ratio)


@register_token_selection(
    "entropy",
    needs_dependency=False,
    needs_entropy=True,
    description="Top-k tokens by policy entropy (Table 4 baseline).",
)
def _build_entropy(*, entropy, mask, ratio, **_) -> torch.Tensor:
    return entropy_mask(entropy, mask, ratio).to(torch.float32)


@register_token_selection(
    "random",
    needs_dependency=False,
    needs_entropy=False,
    description="k uniformly random tokens per response (Table 4 baseline).",
)
def _build_random(*, mask, ratio, generator, **_) -> torch.Tensor:
    return random_token_mask(mask, ratio, generator).to(torch.float32)


@register_token_selection(
    "union",
    needs_dependency=True,
    needs_entropy=True,
    description="Top-k by dependency OR top-k by entropy (official code with both flags on).",
)
def _build_union(*, dep, entropy, mask, ratio, entropy_ratio, **_) -> torch.Tensor:
    by_dependency = tgf_mask(dep, mask, ratio)
    by_entropy = entropy_mask(entropy, mask, entropy_ratio)
    return union_mask(by_dependency, by_entropy).to(torch.float32)


@register_token_selection(
    "none",
    needs_dependency=False,
    needs_entropy=False,
    description="No filtering: every valid token has weight 1 (plain GRPO/DAPO).",
)
def _build_none(*, mask, **_) -> torch.Tensor:
    return as_bool_mask(mask).to(torch.float32)


def select_tokens(
    name: str,
    *,
    dep: torch.Tensor | None = None,
    mask: torch.Tensor,
    ratio: float,
    entropy: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    entropy_ratio: float | None = None,
) -> torch.Tensor:
    """Per-token weights of the selection variant ``name`` (see ``TOKEN_SELECTIONS``).

    Hard selections return their bool mask as 0/1 floats; "soft" returns sigmoid weights; "none"
    returns the response mask as floats. Padding always gets 0.

    Args:
        name: one of ``TOKEN_SELECTIONS`` ("topk", "soft", "entropy", "random", "union", "none").
        dep: float [B, T] visual dependency; required by "topk", "soft", "union".
        mask: bool [B, T] response mask.
        ratio: keep ratio in (0, 1] (validated for every variant, used by all but "none").
        entropy: float [B, T] policy entropy; required by "entropy", "union".
        generator: torch.Generator for "random".
        entropy_ratio: keep ratio in (0, 1] of the entropy half of "union"; None (default) means
            ``ratio``. Validated whenever given; the other variants ignore it ("entropy" keeps
            ``ratio``).

    Returns:
        float [B, T] in [0, 1] (float32; "soft" gives float64 for float64 ``dep``).
    """
    if name not in TOKEN_SELECTIONS:
        valid = ", ".join(sorted(TOKEN_SELECTIONS))
        raise ValueError(f"name {name!r} is not a known token selection; valid names: {valid}.")
    selection = TOKEN_SELECTIONS[name]
    check_ratio(ratio)
    if entropy_ratio is None:
        entropy_ratio = ratio
    else:
        check_ratio(entropy_ratio, "entropy_ratio")
    if selection.needs_dependency and dep is None:
        raise ValueError(f"dep is required by token selection {name!r} but was None.")
    if selection.needs_entropy and entropy is None:
        raise ValueError(f"entropy is required by token selection {name!r} but was None.")
    return selection.build(
        dep=dep,
        mask=mask,
        ratio=ratio,
        entropy=entropy,
        generator=generator,
        entropy_ratio=entropy_ratio,
    )
