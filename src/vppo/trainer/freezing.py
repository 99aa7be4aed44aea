"""Freeze a VLM's vision tower and/or its projector (the vision-to-language connector).

Parameters are found by name, across the families vppo trains: Qwen2/2.5/3-VL (``visual.*``, its
``merger`` / ``deepstack_merger_list`` the projector), SmolVLM / Idefics3 (``vision_model``,
``connector``) and LLaVA-style models (``vision_tower``, ``multi_modal_projector``).
"""

from __future__ import annotations

import torch

__all__ = ["freeze_vision_parts"]

_TOWER = ("visual", "vision_model", "vision_tower")
_PROJECTOR = ("merger", "deepstack_merger_list", "connector", "multi_modal_projector")


def _part(name: str) -> str | None:
    parts = name.split(".")
    if any(p in _PROJECTOR for p in parts):
        return "projector"
    if any(p in _TOWER for p in parts):
        return "vision_tower"
    return None


def freeze_vision_parts(
    model: torch.nn.Module, *, vision_tower: bool, projector: bool
) -> dict[str, int]:
    """Set ``requires_grad=False`` on the chosen parts; returns the frozen parameter count of each.

    Raises ValueError when a part is asked for but the model has no parameter recognised as it.
    """
    wanted = {"vision_tower": vision_tower, "projector": projector}
    frozen = {"vision_tower": 0, "projector": 0}
    for name, param in model.named_parameters():
        part = _part(name)
        if part is not None and wanted[part]:
            param.requires_grad_(False)
            frozen[part] += param.numel()
    for part, asked in wanted.items():
        if asked and not frozen[part]:
            raise ValueError(
                f"freeze_{part}: no parameter of {type(model).__name__} is recognised as its "
                f"{part.replace('_', ' ')} (looked for {', '.join(_TOWER if part == 'vision_tower' else _PROJECTOR)})."
            )
    return frozen
