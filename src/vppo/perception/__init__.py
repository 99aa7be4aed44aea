"""Image perturbations and token visual-dependency estimators (pure torch).

Nothing in this package imports transformers or TRL, so other RL stacks can reuse it on the
tensors they already have. See ``docs/perception.md``.

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
from vppo.perception.perturbations import (
    IMAGE_PERTURBATIONS,
    LAYOUTS,
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
    "solid_grey",
    "token_dependency",
    "trajectory_dependency",
]
