"""Load a real VLM checkpoint (a Hub name or a local directory) together with its processor."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from vppo.models.processors import load_processor, looks_like_local_path

__all__ = ["load_model_and_processor", "resolve_dtype"]

_DTYPES: dict[str, torch.dtype | str] = {
    "auto": "auto",
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    """Map a dtype name ("auto", "float32", "bfloat16", "float16", or a torch.dtype) for loading."""
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be a floating dtype, got {dtype}.")
        return dtype
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
    return _DTYPES[dtype]


def _check_source(path_or_name: str | Path, hub_kwargs: dict[str, Any]) -> str:
    """Return the string to load from, or raise one clear error naming it."""
    name = str(path_or_name)
    if not name.strip():
        raise ValueError("path_or_name must be a non-empty Hub model id or local directory.")
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"model path {name!r} is a file, expected a model directory.")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model directory {name!r} has no config.json.")
        return str(path)
    if isinstance(path_or_name, Path) or looks_like_local_path(name):
        raise FileNotFoundError(f"model directory {name!r} does not exist.")
    try:
        AutoConfig.from_pretrained(name, **hub_kwargs)
    except OSError as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        where = "the local Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else "the Hub"
        raise FileNotFoundError(
            f"model {name!r} is neither a local directory nor reachable in {where}."
        ) from error
    return name


def _displaced_config(source: str, hub_kwargs: dict[str, Any]) -> PretrainedConfig | None:
    """The checkpoint's config built by transformers' own class, where ``AutoConfig`` would build
    another one; None where it builds transformers' own.

    A process in which vLLM has loaded a model type it ships its own config class for (Qwen3.5)
    finds that class registered in ``AutoConfig`` (vllm/transformers_utils/config.py,
    ``_register_config_class``), and transformers' model then fails on it
    ("'Qwen3_5VisionConfig' object has no attribute 'num_attention_heads'").
    """
    config = AutoConfig.from_pretrained(source, **hub_kwargs)
    name = CONFIG_MAPPING_NAMES.get(config.model_type)
    own = getattr(transformers, name, None) if name else None
    if own is None or type(config) is own:
        return None
    return own.from_pretrained(source, **hub_kwargs)


def check_vision_language_model(
    path_or_name: str | Path,
    *,
    trust_remote_code: bool = False,
    revision: str | None = None,
    label: str = "model",
) -> str:
    """Refuse a model that is not image-text-to-text in one sentence, before loading its weights.

    transformers' own error for a text-only model lists ~100 classes. ``label`` names the option in
    the message (``model_name_or_path`` for ``vppo train``). Returns the source to load from; raises
    ValueError for a model that is not a VLM and FileNotFoundError for one that cannot be found.
    """
    hub_kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        hub_kwargs["revision"] = revision
    source = _check_source(path_or_name, hub_kwargs)
    config = AutoConfig.from_pretrained(source, **hub_kwargs)
    # Remote code (auto_map) may register its own image-text-to-text class: let it through.
    if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or getattr(
        config, "auto_map", None
    ):
        return source
    raise ValueError(
        f"{label} {path_or_name} is not a vision-language model (model_type {config.model_type!r}); "
        "vppo needs an image-text-to-text model such as Qwen2.5-VL, Qwen3-VL or SmolVLM."
    )


def load_model_and_processor(
    path_or_name: str | Path,
    *,
    dtype: str | torch.dtype = "auto",
    attn_implementation: str | None = None,
    device_map: str | dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    label: str = "model",
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load an image-text-to-text model and its processor from a Hub id or a local directory.

    Uses ``AutoModelForImageTextToText`` (Qwen2/2.5/3-VL, SmolVLM/Idefics3, LLaVA, ...) and
    `vppo.models.load_processor` (which works without torchvision). The tokenizer pads on the left.

    Args:
        path_or_name: a local model directory (with ``config.json``) or a Hub model id.
        dtype: "auto" (the checkpoint's dtype), "float32", "bfloat16", "float16" or a torch.dtype.
        attn_implementation: e.g. "sdpa", "eager", "flash_attention_2"; None lets transformers choose.
        device_map: passed to ``from_pretrained`` (e.g. "auto"); None loads on CPU.
        trust_remote_code: allow custom modelling code from the checkpoint.
        revision: Hub revision (branch, tag or commit).
        label: how errors name the model (``model_name_or_path`` for ``vppo train``).

    Returns:
        (model in eval mode, processor).

    Raises:
        FileNotFoundError: the path is neither an existing model directory nor a reachable Hub id.
        ValueError: an invalid ``dtype``, a path that is a file, or a model that is not a
            vision-language model (`check_vision_language_model`).
    """
    torch_dtype = resolve_dtype(dtype)
    hub_kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        hub_kwargs["revision"] = revision
    source = check_vision_language_model(
        path_or_name, trust_remote_code=trust_remote_code, revision=revision, label=label
    )

    model_kwargs: dict[str, Any] = {"dtype": torch_dtype, **hub_kwargs}
    config = _displaced_config(source, hub_kwargs)
    if config is not None:
        model_kwargs["config"] = config
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        model_kwargs["device_map"] = device_map
    try:
        model = AutoModelForImageTextToText.from_pretrained(source, **model_kwargs)
    except pickle.UnpicklingError as err:
        # torch.load(weights_only=True) refuses a pickle holding more than tensors; say so in one line.
        raise ValueError(
            f"{label or 'model'} {path_or_name}: its pickle weights (pytorch_model*.bin) hold objects other "
            "than tensors, which are never unpickled here (they could run code); convert the weights to "
            "safetensors where the file is trusted (model.save_pretrained(folder))."
        ) from err
    model.eval()
    processor = load_processor(source, **hub_kwargs)
    return model, processor


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end a response: the generation config's eos id(s), then the tokenizer's."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in configured if isinstance(configured, list | tuple) else [configured]:
        if value is not None:
            ids.append(int(value))
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError("the model has no eos_token_id in its generation config or tokenizer.")
    return list(dict.fromkeys(ids))
