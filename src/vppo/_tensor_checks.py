"""Input validation shared by the two pure-torch layers, ``vppo.algorithm`` and ``vppo.perception``.

Both layers sit at the bottom of the stack and import nothing from each other, so their common
checks live here, beside them. This module imports only torch and the standard library.

Every check raises ``ValueError`` with one sentence that names the offending argument (and the row
or token where that helps), so a bad batch fails where it enters the library, not deep inside.

Mask rule (both layers): a mask is a bool tensor, or an integer or floating tensor holding only 0
and 1, read as False / True. Any other value (2, -1, 0.5, NaN) and any complex tensor raise
ValueError: such a tensor is a count or a weight passed where a mask belongs, and reading it as
"non-zero is True" would silently change which tokens count.
"""

from __future__ import annotations

import math
import numbers

import torch

_REAL_DTYPES_EXCLUDED = (torch.bool,)

# Log-ratios log(p / q) of two probabilities are clamped to ±LOG_RATIO_LIMIT before exp (as EasyR1
# and verl do), so one stale or near-zero log-prob cannot overflow exp (float32 overflows past 88)
# and turn a loss or a score into inf or NaN. exp(±20) (4.9e8, 2.1e-9) lies far outside every range
# the result is compared with: PPO clips the ratio to 1 ± eps, and the k3 score is clamped to
# clip = 10 by default. Used by clipped_pg_loss (algorithm.losses; a token beyond the limit gets no
# gradient from the ratio) and by the k3 estimator (perception.dependency).
LOG_RATIO_LIMIT = 20.0


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def _require_tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    return x


def _first_bad_position(bad: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in bad.nonzero()[0].tolist())


def as_bool_mask(mask: object, name: str = "mask") -> torch.Tensor:
    """Return ``mask`` [B, T] as a bool tensor, by the mask rule: bool, or only 0 and 1."""
    mask = _require_tensor(mask, name)
    if mask.dim() != 2:
        raise ValueError(f"{name} must be a 2-D [B, T] tensor, got shape {_shape(mask)}.")
    return _as_bool(mask, name)


def as_bool_mask_like(
    mask: object, shape: torch.Size, device: torch.device, name: str = "mask"
) -> torch.Tensor:
    """Return ``mask`` as a bool tensor on ``device`` after checking it has the scores' ``shape``.

    Same mask rule as :func:`as_bool_mask` (bool, or only 0 and 1); the shape is the one of the
    tensors the mask selects from (e.g. [B, T] of log-probs, or [B, T] of [B, T, V] logits).
    """
    mask = _require_tensor(mask, name)
    if mask.shape != shape:
        raise ValueError(f"{name} has shape {_shape(mask)} but the scores have {tuple(shape)}.")
    return _as_bool(mask, name).to(device)


def as_bool_vector(x: object, size: int, name: str) -> torch.Tensor:
    """Return ``x`` [B] as a bool tensor, by the mask rule: bool, or only 0 and 1."""
    x = _require_tensor(x, name)
    if x.dim() != 1 or x.shape[0] != size:
        raise ValueError(f"{name} must be a 1-D tensor of length {size}, got shape {_shape(x)}.")
    return _as_bool(x, name)


def _as_bool(x: torch.Tensor, name: str) -> torch.Tensor:
    """The mask rule: bool passes; otherwise only 0 and 1 (any real dtype), read as x != 0."""
    if x.dtype == torch.bool:
        return x
    if x.is_complex():
        raise ValueError(f"{name} must be boolean or contain only 0 and 1, got a complex tensor.")
    if ((x != 0) & (x != 1)).any():
        raise ValueError(f"{name} must be boolean or contain only 0 and 1.")
    return x != 0


def as_group_ids(group_ids: object, size: int, name: str = "group_ids") -> torch.Tensor:
    """Return integer group labels [size] as long indices 0..G-1, on ``group_ids``' device.

    Any integer labels are accepted (prompt indices, sparse or negative ones); index g is the g-th
    smallest distinct label, so rows share an index exactly when they share a label. Float, bool
    and complex tensors are refused: a label must compare exactly.
    """
    group_ids = _require_tensor(group_ids, name)
    if group_ids.dim() != 1 or group_ids.shape[0] != size:
        raise ValueError(
            f"{name} must be a 1-D tensor of length {size}, got shape {_shape(group_ids)}."
        )
    if group_ids.is_floating_point() or group_ids.is_complex() or group_ids.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {group_ids.dtype}.")
    return torch.unique(group_ids, return_inverse=True)[1]


def check_token_values(x: object, mask: torch.Tensor, name: str) -> torch.Tensor:
    """Check that ``x`` is a real [B, T] tensor shaped like ``mask`` and finite where mask is True.

    Values at padding positions are not inspected (they may be NaN or ±inf).
    """
    x = _require_tensor(x, name)
    if x.dtype in _REAL_DTYPES_EXCLUDED or x.is_complex():
        raise ValueError(f"{name} must be a real-valued tensor, got dtype {x.dtype}.")
    if x.shape != mask.shape:
        raise ValueError(
            f"{name} must have the shape of mask {_shape(mask)}, got shape {_shape(x)}."
        )
    if x.is_floating_point():
        bad = mask & ~torch.isfinite(x.detach())
        if bad.any():
            row, col = _first_bad_position(bad)
            raise ValueError(
                f"{name} has a NaN or infinite value at valid position (row {row}, token {col})."
            )
    return x


def check_row_values(
    x: object, size: int, name: str, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Check that ``x`` is a real [B] tensor, finite at the rows where ``valid`` (default all)."""
    x = _require_tensor(x, name)
    if x.dtype in _REAL_DTYPES_EXCLUDED or x.is_complex():
        raise ValueError(f"{name} must be a real-valued tensor, got dtype {x.dtype}.")
    if x.dim() != 1 or x.shape[0] != size:
        raise ValueError(f"{name} must be a 1-D tensor of length {size}, got shape {_shape(x)}.")
    if x.is_floating_point():
        bad = ~torch.isfinite(x.detach())
        if valid is not None:
            bad = bad & valid
        if bad.any():
            (row,) = _first_bad_position(bad)
            raise ValueError(f"{name} has a NaN or infinite value at row {row}.")
    return x


def check_unit_weights(weights: object, mask: torch.Tensor, name: str) -> torch.Tensor:
    """Check per-token weights [B, T]: finite and within [0, 1] at valid positions."""
    weights = check_token_values(weights, mask, name)
    w = weights.detach()
    bad = mask & ((w < 0) | (w > 1))
    if bad.any():
        row, col = _first_bad_position(bad)
        raise ValueError(
            f"{name} must lie in [0, 1] at valid positions; (row {row}, token {col}) does not."
        )
    return weights


def real_number(value: object, name: str) -> float:
    """Return ``value`` as a finite float, or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}.")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return result


def positive_int(value: object, name: str) -> int:
    """Return ``value`` after checking it is an ``int`` >= 1 (``bool`` is refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def check_ratio(ratio: object, name: str = "ratio") -> float:
    """Return a keep-ratio as float after checking it lies in (0, 1]."""
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real):
        raise ValueError(f"{name} must be a number in (0, 1], got {ratio!r}.")
    value = float(ratio)
    if not (0.0 < value <= 1.0):
        raise ValueError(f"{name} must be in (0, 1], got {ratio!r}.")
    return value


def check_num_items(num_items: object) -> torch.Tensor | float | None:
    """Check a global token count: None, a positive number, or a positive one-element tensor."""
    if num_items is None:
        return None
    if isinstance(num_items, torch.Tensor):
        if num_items.numel() != 1:
            raise ValueError(
                f"num_items must be a number or a one-element tensor, got shape "
                f"{_shape(num_items)}."
            )
        if not bool(num_items.detach().reshape(()) > 0):
            raise ValueError(f"num_items must be positive, got {num_items.item()!r}.")
        return num_items.detach().reshape(())
    value = real_number(num_items, "num_items")
    if value <= 0:
        raise ValueError(f"num_items must be positive, got {num_items!r}.")
    return value


def float_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """float64 if any input is float64, else float32 (half precisions are widened)."""
    return torch.float64 if torch.float64 in dtypes else torch.float32
