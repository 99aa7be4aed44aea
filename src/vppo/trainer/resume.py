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

Every checkpoint VPPOTrainer writes ends with `vppo_trainer_state.json` (written last, after every
process has saved its part): the dynamic-sampling refill position, the settings the run was
trained with, and the size of every other file. A folder without it is an incomplete save;
a file of another size is a cut one. `checkpoint_problem` and `last_complete_checkpoint` read it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "TRAINER_STATE_FILE",
    "checkpoint_problem",
    "last_complete_checkpoint",
    "load_renamed_checkpoint",
    "numbered_checkpoints",
    "read_checkpoint_state",
    "write_checkpoint_state",
]

# In every checkpoint-N: what the trainer needs beyond TRL's state to continue exactly, and the manifest.
TRAINER_STATE_FILE = "vppo_trainer_state.json"

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
    logger.info(
        "Resumed the model weights from %s (%d tensors, saved key names mapped back).",
        checkpoint,
        len(state),
    )
    return True


def write_checkpoint_state(folder: str | Path, state: dict[str, Any]) -> None:
    """Write TRAINER_STATE_FILE into a finished checkpoint folder: `state` plus the size of every
    other file in it (the manifest that tells a complete checkpoint from a cut one)."""
    folder = Path(folder)
    files = {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != TRAINER_STATE_FILE
    }
    temporary = folder / (TRAINER_STATE_FILE + ".tmp")
    temporary.write_text(json.dumps({**state, "files": files}, indent=1), encoding="utf-8")
    os.replace(temporary, folder / TRAINER_STATE_FILE)


def read_checkpoint_state(folder: str | Path) -> dict[str, Any] | None:
    """TRAINER_STATE_FILE of a checkpoint folder, or None when it has none (or it is unreadable)."""
    path = Path(folder) / TRAINER_STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why `folder` cannot be resumed from (one sentence naming the file), or None if it can.

    A checkpoint without TRAINER_STATE_FILE is an incomplete save, unless no checkpoint beside it
    has one either and it has Trainer's own state (a run saved before vppo wrote the file).
    """
    folder = Path(folder)
    state = read_checkpoint_state(folder)
    if state is None or "files" not in state:
        siblings = folder.parent.glob(f"checkpoint-*/{TRAINER_STATE_FILE}")
        if any(path.parent != folder for path in siblings):
            return f"{folder} is an incomplete checkpoint (its save did not finish: no {TRAINER_STATE_FILE})."
        if not (folder / "trainer_state.json").is_file():
            return f"{folder} is an incomplete checkpoint (its save did not finish: no trainer_state.json)."
        if (folder / TRAINER_STATE_FILE).exists():
            return f"{folder / TRAINER_STATE_FILE} is unreadable; the checkpoint's save did not finish."
        return None
    for name, size in state["files"].items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing from the checkpoint (it listed {size:,} bytes)."
        if path.stat().st_size != size:
            return (
                f"{path} is {path.stat().st_size:,} bytes, not the {size:,} the checkpoint saved: "
                "the file is cut or was changed."
            )
    return None


def numbered_checkpoints(output_dir: str | Path) -> list[Path]:
    """The checkpoint-N folders of `output_dir`, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    numbered = [
        (int(m.group(1)), path)
        for path in folder.iterdir()
        if path.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", path.name))
    ]
    return [path for _, path in sorted(numbered)]


def last_complete_checkpoint(output_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint-N of `output_dir` that can be resumed from, and one sentence for each
    newer one skipped (incomplete or corrupt)."""
    skipped = []
    for path in reversed(numbered_checkpoints(output_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append(problem)
    return None, skipped
