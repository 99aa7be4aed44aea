"""Where the shipped warm-start checkpoints live.

The package ships one warm-started tiny Qwen2.5-VL per synthetic task family under
``vppo/assets`` (built by ``python -m vppo.warmstart``). `vppo train --model_name_or_path
warmstart`, `vppo demo` and `vppo compare` start from them; the trainer finds them here, below
itself, instead of asking the demo.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["default_checkpoint"]


def default_checkpoint(family: str = "shapes") -> Path:
    """The warm-started model shipped with the package for a synthetic task family:
    ``vppo/assets/warmstart`` ("shapes") or ``vppo/assets/warmstart_reasoning`` ("reasoning")."""
    from vppo.data.synthetic import TASK_FAMILIES

    if family not in TASK_FAMILIES:
        raise ValueError(f"family must be one of {list(TASK_FAMILIES)}, got {family!r}.")
    folder = "warmstart" if family == "shapes" else f"warmstart_{family}"
    return Path(str(resources.files("vppo") / "assets" / folder))
