"""Resuming from a `checkpoint-N`: put the saved weights back under the model's own key names.

transformers 5 saves a model with the checkpoint layout of the original release
(`save_pretrained` reverts the key renaming `from_pretrained` applies: Qwen2.5-VL's
`model.language_model.layers.*` is written as `model.layers.*`, `model.visual.*` as `visual.*`),
but `Trainer._load_from_checkpoint` reads the file back with `model.load_state_dict(strict=False)`
and no renaming (transformers 5.23; huggingface/transformers#43701). Every renamed weight then
keeps the value it had before resuming, with only a "missing keys" warning, while the optimizer
state and the step counter are restored: the resumed run trains the initial weights.

`load_renamed_checkpoint` maps each saved key to the model's key by reverting the model's own
state dict the way `save_pretrained` does, and loads the tensors strictly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

__all__ = ["load_renamed_checkpoint"]

_WEIGHTS = "model.safetensors"
_INDEX = "model.safetensors.index.json"


def _saved_names(model: torch.nn.Module) -> dict[str, list[str]] | None:
    """Saved key -> the model's key(s) holding that tensor; None when saving renames nothing or
    changes tensors (merged or split weights), where the Trainer's own loader is right."""
    from transformers.core_model_loading import revert_weight_conversion

    state = model.state_dict()
    reverted = revert_weight_conversion(model, dict(state))
    if set(reverted) == set(state):
        return None
    owners: dict[int, list[str]] = {}
    for key, tensor in state.items():
        owners.setdefault(id(tensor), []).append(key)  # tied weights: one tensor, several keys
    names: dict[str, list[str]] = {}
    for saved, tensor in reverted.items():
        if id(tensor) not in owners:
            return None
        names[saved] = owners[id(tensor)]
    return names


def _weight_files(checkpoint: Path) -> list[Path]:
    if (checkpoint / _WEIGHTS).is_file():
        return [checkpoint / _WEIGHTS]
    if (checkpoint / _INDEX).is_file():
        index = json.loads((checkpoint / _INDEX).read_text())
        return [checkpoint / name for name in sorted(set(index["weight_map"].values()))]
    return []


def load_renamed_checkpoint(model: torch.nn.Module, checkpoint: str | Path) -> bool:
    """Load ``checkpoint``'s safetensors weights into ``model`` under the model's key names.

    Returns False, loading nothing, where this is not needed or does not apply: a PEFT model, a
    checkpoint without safetensors weights, or a model whose saved keys equal its own (then
    `Trainer._load_from_checkpoint` is right). Raises ValueError when the checkpoint does not hold
    exactly the model's weights, rather than train on a partly restored model.
    """
    import safetensors.torch

    files = _weight_files(Path(checkpoint))
    if not files or hasattr(model, "peft_config"):
        return False
    names = _saved_names(model)
    if names is None:
        return False
    state: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for file in files:
        for saved, tensor in safetensors.torch.load_file(str(file), device="cpu").items():
            if saved not in names:
                unexpected.append(saved)
            for key in names.get(saved, ()):
                state[key] = tensor
    own = set(model.state_dict())
    missing = sorted(own - set(state))
    if unexpected or missing:
        raise ValueError(
            f"checkpoint {checkpoint} does not match the model: {len(missing)} weights missing "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}), {len(unexpected)} "
            f"unexpected ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})."
        )
    model.load_state_dict(state, strict=True)
    logger.info("Resumed the model weights from %s (%d tensors, saved key names mapped back).",
                checkpoint, len(state))
    return True
