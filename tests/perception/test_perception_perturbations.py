"""Tests for vppo.perception.perturbations on synthetic tensors and PIL images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vppo.perception import (
    IMAGE_PERTURBATIONS,
    black_value,
    blacken_image_patches,
    blacken_patches,
    gaussian_blur,
    gaussian_noise,
    perturb_image,
    qwen_row_positions,
    solid_grey,
)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
HALF = [0.5, 0.5, 0.5]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# black value, Qwen flat layout
# --------------------------------------------------------------------------------------------


def test_black_value_is_normalised_zero():
    black = black_value(CLIP_MEAN, CLIP_STD)
    assert black.dtype == torch.float32
    assert [round(v, 4) for v in black.tolist()] == [-1.7923, -1.7521, -1.4802]
    assert black_value(HALF, HALF).tolist() == [-1.0, -1.0, -1.0]
    with pytest.raises(ValueError, match="image_std must be non-zero"):
        black_value(HALF, [0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="equal length"):
        black_value(HALF, [0.5, 0.5])


def test_qwen_flat_rows_blackened_with_channel_major_black_row():
    pixel_values = torch.randn(40, 3 * 2 * 14 * 14, generator=_gen(0))
    original = pixel_values.clone()
    out, mask = blacken_patches(pixel_values, "qwen_flat", CLIP_MEAN, CLIP_STD, generator=_gen(1))
    assert torch.equal(pixel_values, original)  # input untouched
    assert mask.shape == (40,) and mask.dtype == torch.bool
    assert 0 < int(mask.sum()) < 40
    black = black_value(CLIP_MEAN, CLIP_STD)
    rows = out[mask].reshape(-1, 3, 2 * 14 * 14)  # [C][T][P][P] is channel-major
    assert torch.equal(rows, black[None, :, None].expand_as(rows))
    assert torch.equal(out[~mask], pixel_values[~mask])


def test_qwen_flat_reproducible_rate_and_extremes():
    pixel_values = torch.randn(4000, 3 * 2 * 16 * 16, dtype=torch.bfloat16)
    out_a, mask_a = blacken_patches(pixel_values, "qwen_flat", HALF, HALF, generator=_gen(7))
    out_b, mask_b = blacken_patches(pixel_values, "qwen_flat", HALF, HALF, generator=_gen(7))
    _, mask_c = blacken_patches(pixel_values, "qwen_flat", HALF, HALF, generator=_gen(8))
    assert torch.equal(mask_a, mask_b) and torch.equal(out_a, out_b)
    assert not torch.equal(mask_a, mask_c)
    assert abs(mask_a.float().mean().item() - 0.5) < 0.04  # 5 sigma
    assert out_a.dtype == torch.bfloat16  # 16-px (Qwen3-VL) rows inferred from 1536 features
    assert torch.all(out_a[mask_a] == -1)

    out_0, mask_0 = blacken_patches(pixel_values, "qwen_flat", HALF, HALF, prob=0.0)
    assert not mask_0.any() and torch.equal(out_0, pixel_values)
    out_1, mask_1 = blacken_patches(pixel_values, "qwen_flat", HALF, HALF, prob=1.0)
    assert mask_1.all() and torch.all(out_1 == -1)


def test_qwen_flat_validation():
    pv = torch.zeros(4, 1000)
    with pytest.raises(ValueError, match="1000 features per row"):
        blacken_patches(pv, "qwen_flat", HALF, HALF)
    with pytest.raises(ValueError, match=r"3\*2\*16\*\*2 = 1536"):
        blacken_patches(torch.zeros(4, 1176), "qwen_flat", HALF, HALF, patch_size=16)
    with pytest.raises(ValueError, match="Unknown layout 'nhwc'; valid layouts are qwen_flat"):
        blacken_patches(pv, "nhwc", HALF, HALF)
    with pytest.raises(ValueError, match="prob must be in"):
        blacken_patches(torch.zeros(4, 1176), "qwen_flat", HALF, HALF, prob=1.5)
    with pytest.raises(ValueError, match="floating-point"):
        blacken_patches(torch.zeros(4, 1176, dtype=torch.long), "qwen_flat", HALF, HALF)


def test_qwen_row_positions_order():
    positions = qwen_row_positions([[1, 4, 6], [1, 2, 2]], merge_size=2)
    assert positions.shape == (24 + 4, 3) and positions.dtype == torch.long
    # (t, h/m, w/m, mh, mw): the first merged 2x2 block, then the block to its right.
    assert positions[:6].tolist() == [
        [0, 0, 0],
        [0, 0, 1],
        [0, 1, 0],
        [0, 1, 1],
        [0, 0, 2],
        [0, 0, 3],
    ]
    first = {tuple(p) for p in positions[:24, 1:].tolist()}
    assert first == {(h, w) for h in range(4) for w in range(6)}
    assert positions[24:].tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]]
    video = qwen_row_positions(torch.tensor([[2, 2, 2]]))
    assert video[:, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="grid_thw row 0"):
        qwen_row_positions([[1, 3, 4]], merge_size=2)


# --------------------------------------------------------------------------------------------
# NCHW / BNCHW layouts
# --------------------------------------------------------------------------------------------


def _expected_squares(pixel_values, mask, patch, black):
    """Loop reference: blacken square (i, j) of image n where mask[n, i, j]."""
    want = pixel_values.clone()
    for n, i, j in mask.nonzero().tolist():
        want[n, :, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch] = black[:, None, None]
    return want


def test_nchw_squares_black_per_channel_with_truncated_edges():
    pixel_values = torch.rand(3, 3, 30, 20, generator=_gen(0)) + 0.1
    out, mask = blacken_patches(
        pixel_values, "nchw", CLIP_MEAN, CLIP_STD, generator=_gen(2), patch_size=14
    )
    assert mask.shape == (3, 3, 2)  # ceil(30/14) x ceil(20/14)
    assert 0 < int(mask.sum()) < mask.numel()
    black = black_value(CLIP_MEAN, CLIP_STD)
    assert torch.equal(out, _expected_squares(pixel_values, mask, 14, black))
    n, i, j = mask.nonzero()[0].tolist()
    assert torch.equal(out[n, :, i * 14, j * 14], black)


def test_bnchw_padding_images_and_masked_pixels_untouched():
    pixel_values = torch.rand(2, 3, 3, 16, 16, generator=_gen(0)) + 0.1
    pixel_values[1, 2] = 0  # padding image, all zeros
    attention = torch.ones(2, 3, 16, 16, dtype=torch.long)
    attention[0, 1] = 0  # fully masked image with non-zero content
    attention[1, 0, :, 10:] = 0  # real image whose right columns are padding
    out, mask = blacken_patches(
        pixel_values,
        "bnchw",
        HALF,
        HALF,
        prob=1.0,
        patch_size=8,
        pixel_attention_mask=attention,
    )
    assert mask.shape == (2, 3, 2, 2)
    assert not mask[1, 2].any() and not mask[0, 1].any()
    assert torch.equal(out[1, 2], pixel_values[1, 2])
    assert torch.equal(out[0, 1], pixel_values[0, 1])
    assert torch.all(out[0, 0] == -1) and torch.all(out[0, 2] == -1)
    assert torch.all(out[1, 0, :, :, :10] == -1)
    assert torch.equal(out[1, 0, :, :, 10:], pixel_values[1, 0, :, :, 10:])

    # Without an attention mask an all-zero image is still recognised as padding.
    out_nomask, mask_nomask = blacken_patches(pixel_values, "bnchw", HALF, HALF, prob=1.0)
    assert mask_nomask.shape == (2, 3, 2, 2)  # default 14-px squares: ceil(16/14) = 2
    assert not mask_nomask[1, 2].any() and mask_nomask[0].all()
    assert torch.equal(out_nomask[1, 2], pixel_values[1, 2])
    assert torch.all(out_nomask[0] == -1)


def test_bnchw_seed_reproducibility_and_prob_extremes():
    pixel_values = torch.rand(2, 2, 3, 28, 28, generator=_gen(3)) + 0.1
    out_a, mask_a = blacken_patches(pixel_values, "bnchw", HALF, HALF, generator=_gen(5))
    out_b, mask_b = blacken_patches(pixel_values, "bnchw", HALF, HALF, generator=_gen(5))
    _, mask_c = blacken_patches(pixel_values, "bnchw", HALF, HALF, generator=_gen(6))
    assert torch.equal(mask_a, mask_b) and torch.equal(out_a, out_b)
    assert not torch.equal(mask_a, mask_c)
    out_0, mask_0 = blacken_patches(pixel_values, "bnchw", HALF, HALF, prob=0.0)
    assert torch.equal(out_0, pixel_values) and not mask_0.any()
    with pytest.raises(ValueError, match=r"pixel_attention_mask must have shape \(2, 2, 28, 28\)"):
        blacken_patches(
            pixel_values, "bnchw", HALF, HALF, pixel_attention_mask=torch.ones(2, 28, 28)
        )
    with pytest.raises(ValueError, match=r"\[B, N, C, H, W\]"):
        blacken_patches(pixel_values[0], "bnchw", HALF, HALF)
    with pytest.raises(ValueError, match="pixel_values has 3 channels"):
        blacken_patches(pixel_values, "bnchw", [0.5], [0.5])


# --------------------------------------------------------------------------------------------
# PIL image-space perturbations
# --------------------------------------------------------------------------------------------


def _image(mode: str = "RGB", size=(45, 30)) -> Image.Image:
    rng = np.random.default_rng(0)
    pixels = rng.integers(20, 236, size=(size[1], size[0], 4), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGBA").convert(mode)


@pytest.mark.parametrize("name", sorted(IMAGE_PERTURBATIONS))
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_image_perturbations_keep_size_and_return_rgb(name, mode):
    image = _image(mode)
    out = perturb_image(image, name, generator=_gen(0))
    assert out.mode == "RGB" and out.size == image.size
    again = perturb_image(image, name, generator=_gen(0))
    assert np.array_equal(np.asarray(out), np.asarray(again))
    assert not np.array_equal(np.asarray(out), np.asarray(image.convert("RGB")))


def test_blacken_image_patches_squares():
    image = _image()
    out = np.asarray(blacken_image_patches(image, patch_size=14, prob=0.5, generator=_gen(3)))
    source = np.asarray(image)
    black_squares, kept_squares = 0, 0
    for i in range(0, 30, 14):
        for j in range(0, 45, 14):
            square = out[i : i + 14, j : j + 14]
            if (square == 0).all():
                black_squares += 1
            else:
                assert np.array_equal(square, source[i : i + 14, j : j + 14])
                kept_squares += 1
    assert black_squares > 0 and kept_squares > 0
    assert black_squares + kept_squares == 3 * 4
    other = np.asarray(blacken_image_patches(image, generator=_gen(4)))
    assert not np.array_equal(out, other)
    assert (np.asarray(blacken_image_patches(image, prob=1.0)) == 0).all()


def test_noise_blur_grey():
    image = _image()
    source = np.asarray(image).astype(np.int64)
    noisy = np.asarray(gaussian_noise(image, generator=_gen(0))).astype(np.int64)
    saturated = ((noisy == 0) | (noisy == 255)).mean()
    assert 0.35 < saturated < 0.75  # sigma 189 saturates about half of the values
    assert np.array_equal(np.asarray(gaussian_noise(image, sigma=0.0)), source)
    blurred = np.asarray(gaussian_blur(image)).astype(np.float64)
    assert blurred.std() < 0.5 * source.std()
    grey = np.asarray(solid_grey(image))
    assert grey.shape == (30, 45, 3) and (grey == 128).all()
    assert (np.asarray(solid_grey(image, value=7)) == 7).all()
    with pytest.raises(ValueError, match=r"value must be an integer in \[0, 255\]"):
        solid_grey(image, value=300)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_noise(image, sigma=-1.0)


def test_perturb_image_unknown_name():
    with pytest.raises(
        ValueError,
        match="Unknown image perturbation 'mask'; valid names are blacken, blur, grey, noise",
    ):
        perturb_image(_image(), "mask")
    with pytest.raises(ValueError, match="PIL.Image.Image"):
        perturb_image(np.zeros((4, 4, 3)), "grey")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_blacken_patches_on_cuda_with_cpu_generator_matches_cpu():
    pixel_values = torch.randn(64, 3 * 2 * 14 * 14)
    cpu_out, cpu_mask = blacken_patches(pixel_values, "qwen_flat", HALF, HALF, generator=_gen(9))
    cuda_out, cuda_mask = blacken_patches(
        pixel_values.cuda(), "qwen_flat", HALF, HALF, generator=_gen(9)
    )
    assert cuda_out.device.type == "cuda" and cuda_mask.device.type == "cuda"
    assert torch.equal(cuda_mask.cpu(), cpu_mask) and torch.equal(cuda_out.cpu(), cpu_out)
    images = torch.randn(2, 3, 3, 28, 28).cuda()
    out, mask = blacken_patches(images, "bnchw", HALF, HALF, generator=_gen(9))
    assert out.device.type == "cuda" and mask.shape == (2, 3, 2, 2)
