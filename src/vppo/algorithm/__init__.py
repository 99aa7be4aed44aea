"""VPPO algorithm core: token selection (TGF), advantage shaping (TAS), per-token advantages,
loss pieces, and PAPO's implicit perception loss (``papo``). Pure torch; imports nothing from TRL
or transformers.

Shapes: B = responses, T = response tokens; ``mask`` is a [B, T] response mask.

``TOKEN_SELECTIONS`` (name -> ``TokenSelection`` with ``needs_dependency``, ``needs_entropy``,
``description``) is the registry of selection variants: build choices and need-checks from it, and
get every variant's weights from ``select_tokens(name, ...)``.
"""

from __future__ import annotations

from vppo.algorithm.losses import clipped_pg_loss, sampled_token_nll
from vppo.algorithm.papo import (
    PERCEPTION_KL_ESTIMATORS,
    papo_loss,
    papo_token_terms,
    perception_kl,
)
from vppo.algorithm.selection import (
    TOKEN_SELECTIONS,
    TokenSelection,
    entropy_mask,
    kept_token_counts,
    random_token_mask,
    register_token_selection,
    select_tokens,
    soft_tgf_weights,
    tgf_mask,
    union_mask,
)
from vppo.algorithm.shaping import tas_scale, token_advantages

__all__ = [
    "PERCEPTION_KL_ESTIMATORS",
    "TOKEN_SELECTIONS",
    "TokenSelection",
    "clipped_pg_loss",
    "entropy_mask",
    "kept_token_counts",
    "papo_loss",
    "papo_token_terms",
    "perception_kl",
    "random_token_mask",
    "register_token_selection",
    "sampled_token_nll",
    "select_tokens",
    "soft_tgf_weights",
    "tas_scale",
    "tgf_mask",
    "token_advantages",
    "union_mask",
]
