"""Training data: loaders for the ViRL39K schema, prompt templates and image preparation.

See docs/data.md. The synthetic visual task lives in ``vppo.data.synthetic``.
"""

from __future__ import annotations

from vppo.data.images import (
    check_image_geometry,
    image_size,
    pixel_limited_size,
    prepare_image,
    resize_to_pixel_limits,
    to_rgb_image,
)
from vppo.data.loading import TrainingDataOptions, load_training_dataset
from vppo.data.prompts import (
    DEFAULT_TEMPLATE,
    IMAGE_PLACEHOLDER,
    PromptTemplate,
    available_templates,
    build_prompt_messages,
    load_template,
    remove_instruction,
    render_prompt,
    split_image_placeholders,
)

__all__ = [
    "DEFAULT_TEMPLATE",
    "IMAGE_PLACEHOLDER",
    "PromptTemplate",
    "TrainingDataOptions",
    "available_templates",
    "build_prompt_messages",
    "check_image_geometry",
    "image_size",
    "load_template",
    "load_training_dataset",
    "pixel_limited_size",
    "prepare_image",
    "remove_instruction",
    "render_prompt",
    "resize_to_pixel_limits",
    "split_image_placeholders",
    "to_rgb_image",
]
