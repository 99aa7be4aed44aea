"""Processed-pixel blackening equals image-space blackening with real HF image processors.

The processors are built locally (no Hub). Without torchvision, transformers 5.23 offers the
PIL backends ``Qwen2VLImageProcessorPil`` and ``SmolVLMImageProcessorPil``; they are what the
offline tests and CPU runs use.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vppo.perception import (
    black_value,
    blacken_image_patches,
    blacken_patches,
    qwen_row_positions,
)

transformers = pytest.importorskip("transformers")

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _qwen_processor(patch_size: int, mean, std):
    factor = patch_size * 2
    return transformers.Qwen2VLImageProcessorPil(
        image_mean=mean,
        image_std=std,
        patch_size=patch_size,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=factor * factor,
        max_pixels=factor * factor * 64,
    )


def _random_image(height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(1, 256, size=(height, width, 3), dtype=np.uint8))


# (patch size, mean, std, image sizes on the patch*merge grid): Qwen2/2.5-VL and Qwen3-VL-like.
QWEN_CASES = [
    pytest.param(14, CLIP_MEAN, CLIP_STD, [(84, 112), (140, 56)], id="qwen2.5-vl-14px"),
    pytest.param(16, [0.5] * 3, [0.5] * 3, [(96, 128), (64, 64)], id="qwen3-vl-16px"),
]


@pytest.mark.parametrize("patch, mean, std, sizes", QWEN_CASES)
def test_row_blackening_equals_pil_blackening_then_processor(patch, mean, std, sizes):
    processor = _qwen_processor(patch, mean, std)
    images = [_random_image(h, w, seed) for seed, (h, w) in enumerate(sizes)]
    processed = processor(images=images, return_tensors="pt")
    pixel_values, grid_thw = processed["pixel_values"], processed["image_grid_thw"]
    # The sizes are on the resize grid, so the processor keeps them.
    assert [(int(h) * patch, int(w) * patch) for _, h, w in grid_thw] == sizes

    generator = torch.Generator().manual_seed(11)
    perturbed, mask = blacken_patches(
        pixel_values, "qwen_flat", processor.image_mean, processor.image_std, generator=generator
    )
    assert 0 < int(mask.sum()) < mask.numel()

    # Blacken the same squares of the PIL images, then run the processor again.
    positions = qwen_row_positions(grid_thw, processor.merge_size)
    rows_per_image = (grid_thw.prod(dim=1)).tolist()
    image_index = torch.repeat_interleave(torch.arange(len(images)), torch.tensor(rows_per_image))
    arrays = [np.array(image) for image in images]
    for row in mask.nonzero().flatten().tolist():
        _, h_idx, w_idx = positions[row].tolist()
        arr = arrays[int(image_index[row])]
        arr[h_idx * patch : (h_idx + 1) * patch, w_idx * patch : (w_idx + 1) * patch] = 0
    reprocessed = processor(images=[Image.fromarray(a) for a in arrays], return_tensors="pt")

    assert (perturbed - reprocessed["pixel_values"]).abs().max().item() == 0.0
    black_row = black_value(mean, std).repeat_interleave(2 * patch * patch)
    assert torch.equal(perturbed[mask], black_row.expand(int(mask.sum()), -1))
    assert torch.equal(perturbed[~mask], pixel_values[~mask])


def test_official_pil_blackening_on_aligned_image_blackens_whole_rows():
    processor = _qwen_processor(14, CLIP_MEAN, CLIP_STD)
    image = _random_image(84, 112, seed=3)
    blackened = blacken_image_patches(
        image, patch_size=14, generator=torch.Generator().manual_seed(0)
    )
    original = processor(images=[image], return_tensors="pt")
    result = processor(images=[blackened], return_tensors="pt")
    positions = qwen_row_positions(result["image_grid_thw"], 2)
    arr = np.asarray(blackened)
    square_black = torch.tensor(
        [(arr[h * 14 : (h + 1) * 14, w * 14 : (w + 1) * 14] == 0).all() for _, h, w in positions]
    )
    assert 0 < int(square_black.sum()) < len(square_black)
    black_row = black_value(CLIP_MEAN, CLIP_STD).repeat_interleave(2 * 14 * 14)
    pv = result["pixel_values"]
    assert torch.equal(pv[square_black], black_row.expand(int(square_black.sum()), -1))
    assert torch.equal(pv[~square_black], original["pixel_values"][~square_black])


def test_smolvlm_padding_image_untouched():
    processor = transformers.SmolVLMImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": 64},
        max_image_size={"longest_edge": 64},
    )
    batch = [[_random_image(64, 40, 0), _random_image(30, 64, 1)], [_random_image(50, 50, 2)]]
    processed = processor(images=batch, return_tensors="pt")
    pixel_values = processed["pixel_values"]
    attention = processed["pixel_attention_mask"]
    assert pixel_values.shape[:2] == (2, 2)  # sample 1 has one padding image
    perturbed, mask = blacken_patches(
        pixel_values,
        "bnchw",
        processor.image_mean,
        processor.image_std,
        prob=1.0,
        patch_size=16,
        pixel_attention_mask=attention,
    )
    assert mask.shape == (2, 2, 4, 4)
    assert mask[0].all() and mask[1, 0].all() and not mask[1, 1].any()
    assert torch.equal(perturbed[1, 1], pixel_values[1, 1])
    assert torch.all(perturbed[0] == -1) and torch.all(perturbed[1, 0] == -1)


@pytest.mark.parametrize("arch", ["qwen3_vl", "qwen3_5"])
def test_tiny_model_layout_blackening_equals_image_space_blackening(arch):
    """A tiny real model's processor and `vision_layout`: `perturb_pixel_values` on its
    pixel_values equals blackening the same ViT squares of the images and processing again, and
    the image placeholders cover the merged patch grid (Qwen3.5 reuses Qwen3-VL's processor)."""
    from vppo.models import build_tiny_vlm, vision_layout
    from vppo.perception import perturb_pixel_values

    model, processor = build_tiny_vlm(arch, max_pixels=128 * 128)
    layout = vision_layout(processor, model.config)
    patch = layout.patch_size
    assert (layout.layout, patch, layout.merge_size) == ("qwen_flat", 16, 2)
    sizes = [(96, 128), (64, 64)]
    images = [_random_image(h, w, seed) for seed, (h, w) in enumerate(sizes)]
    image = {"type": "image"}
    text = processor.apply_chat_template(
        [{"role": "user", "content": [image, image, {"type": "text", "text": "Which?"}]}],
        add_generation_prompt=True,
    )
    batch = processor(text=[text], images=images, return_tensors="pt")
    pixel_values, grid_thw = batch["pixel_values"], batch["image_grid_thw"]
    assert [(int(h) * patch, int(w) * patch) for _, h, w in grid_thw] == sizes
    placeholders = int((batch["input_ids"] == layout.image_token_id).sum())
    assert placeholders == int(grid_thw.prod(dim=1).sum()) // layout.merge_size**2

    generator = torch.Generator().manual_seed(5)
    perturbed = perturb_pixel_values(pixel_values, layout, "blacken", 0.5, generator)
    black = black_value(layout.image_mean, layout.image_std).repeat_interleave(
        layout.temporal_patch_size * patch * patch
    )
    mask = (perturbed == black).all(dim=1)
    assert 0 < int(mask.sum()) < mask.numel()

    positions = qwen_row_positions(grid_thw, layout.merge_size)
    rows_per_image = grid_thw.prod(dim=1).tolist()
    image_index = torch.repeat_interleave(torch.arange(len(images)), torch.tensor(rows_per_image))
    arrays = [np.array(im) for im in images]
    for row in mask.nonzero().flatten().tolist():
        _, h_idx, w_idx = positions[row].tolist()
        arr = arrays[int(image_index[row])]
        arr[h_idx * patch : (h_idx + 1) * patch, w_idx * patch : (w_idx + 1) * patch] = 0
    reprocessed = processor.image_processor(
        images=[Image.fromarray(a) for a in arrays], return_tensors="pt"
    )
    assert (perturbed - reprocessed["pixel_values"]).abs().max().item() == 0.0
    with torch.no_grad():
        real = model(**batch).logits
        blackened = model(**{**batch, "pixel_values": perturbed}).logits
    assert torch.isfinite(blackened).all() and not torch.equal(real, blackened)
