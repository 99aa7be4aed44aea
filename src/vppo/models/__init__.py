"""Tiny offline VLM builders, processor helpers and real-model loading.

Example:
    >>> from vppo.models import build_tiny_vlm, load_model_and_processor, vision_layout
    >>> model, processor = build_tiny_vlm("qwen2_5_vl", "runs/tiny-qwen")
    >>> model, processor = load_model_and_processor("runs/tiny-qwen")
    >>> layout = vision_layout(processor, model.config)
    >>> folder = default_checkpoint("shapes")  # the shipped warm start
"""

from __future__ import annotations

from vppo.models.checkpoints import default_checkpoint
from vppo.models.loading import (
    check_vision_language_model,
    eos_token_ids,
    load_model_and_processor,
    resolve_dtype,
)
from vppo.models.processors import (
    ImageOnlyQwen2_5_VLProcessor,
    ImageOnlyQwen2VLProcessor,
    ImageOnlyQwen3VLProcessor,
    ImageOnlySmolVLMProcessor,
    VisionLayout,
    collapse_placeholder_runs,
    image_only_subclass,
    load_processor,
    make_processor,
    vision_layout,
)
from vppo.models.tiny import DEFAULT_CORPUS, build_tiny_vlm, supported_architectures

__all__ = [
    "eos_token_ids",
    "DEFAULT_CORPUS",
    "ImageOnlyQwen2VLProcessor",
    "ImageOnlyQwen2_5_VLProcessor",
    "ImageOnlyQwen3VLProcessor",
    "ImageOnlySmolVLMProcessor",
    "VisionLayout",
    "build_tiny_vlm",
    "collapse_placeholder_runs",
    "image_only_subclass",
    "check_vision_language_model",
    "default_checkpoint",
    "load_model_and_processor",
    "load_processor",
    "make_processor",
    "resolve_dtype",
    "supported_architectures",
    "vision_layout",
]
