"""Image perturbations and token visual-dependency estimators (pure torch).

Nothing in this package imports transformers or TRL, so other RL stacks can reuse it on the
tensors they already have. See ``docs/perception.md``.

``PERTURBATIONS`` names every reference the dependency can be measured against: the
``PIXEL_PERTURBATIONS`` of the image and ``"none"`` (``NO_IMAGE``: the image and its placeholder
tokens removed from the prompt, :func:`remove_image_tokens`).

The estimator registries ``TOKEN_ESTIMATORS`` and ``DISTRIBUTION_ESTIMATORS`` (and their names in
order, ``DEPENDENCY_ESTIMATORS``) are exported here so that callers build their choices from them.
"""

from __future__ import annotations

from vppo.perception.dependency import (
    DEPENDENCY_ESTIMATORS,
    DISTRIBUTION_ESTIMATORS,
    TOKEN_ESTIMATORS,
    dependency_from_passes,
    distribution_dependency,
    full_kl_dependency,
    token_dependency,
    trajectory_dependency,
)
from vppo.perception.no_image import (
    NO_IMAGE,
    remove_image_tokens,
    take_positions,
    text_only_positions,
)
from vppo.perception.perturbations import (
    IMAGE_PERTURBATIONS,
    LAYOUTS,
    PERTURBATIONS,
    PIXEL_PERTURBATIONS,
    black_value,
    blacken_image_patches,
    blacken_patches,
    gaussian_blur,
    gaussian_noise,
    perturb_image,
    perturb_pixel_values,
    qwen_row_positions,
    solid_grey,
)

__all__ = [
    "DEPENDENCY_ESTIMATORS",
    "DISTRIBUTION_ESTIMATORS",
    "IMAGE_PERTURBATIONS",
    "LAYOUTS",
    "NO_IMAGE",
    "PERTURBATIONS",
    "PIXEL_PERTURBATIONS",
    "TOKEN_ESTIMATORS",
    "black_value",
    "blacken_image_patches",
    "blacken_patches",
    "dependency_from_passes",
    "distribution_dependency",
    "full_kl_dependency",
    "gaussian_blur",
    "gaussian_noise",
    "perturb_image",
    "perturb_pixel_values",
    "qwen_row_positions",
    "remove_image_tokens",
    "solid_grey",
    "take_positions",
    "text_only_positions",
    "token_dependency",
    "trajectory_dependency",
]
