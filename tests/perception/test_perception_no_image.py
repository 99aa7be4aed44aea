"""The no-image reference: vision tokens removed from left-padded prompts (vppo.perception.no_image)."""

from __future__ import annotations

import pytest
import torch

from vppo.perception import (
    NO_IMAGE,
    PERTURBATIONS,
    PIXEL_PERTURBATIONS,
    perturb_pixel_values,
    remove_image_tokens,
    take_positions,
    text_only_positions,
)

# Qwen-style ids: <|vision_start|> 3, <|vision_end|> 4, <|image_pad|> 6; pad 0; text 10+.
QWEN_VISION = (3, 4, 5, 6, 7)


def test_the_registry_adds_none_after_the_pixel_perturbations():
    assert NO_IMAGE == "none"
    assert PERTURBATIONS == (*PIXEL_PERTURBATIONS, "none")
    with pytest.raises(ValueError, match="removes the image and its placeholder tokens"):
        perturb_pixel_values(torch.zeros(4, 8), None, "none")


def test_rows_with_zero_one_and_two_images_are_left_padded_again():
    ids = torch.tensor(
        [
            [0, 0, 10, 3, 6, 6, 6, 4, 11, 12],  # one image, left padding
            [10, 3, 6, 6, 4, 11, 3, 6, 4, 12],  # two images, no padding
            [0, 0, 0, 0, 0, 0, 10, 11, 12, 13],  # text only
        ]
    )
    mask = (torch.arange(10) >= torch.tensor([[2], [0], [6]])).long()
    positions = text_only_positions(ids, mask, QWEN_VISION)
    assert positions.tolist() == [[-1, 2, 8, 9], [-1, 0, 5, 9], [6, 7, 8, 9]]
    new_ids, new_mask = remove_image_tokens(ids, mask, QWEN_VISION, pad_token_id=0)
    assert new_ids.tolist() == [[0, 10, 11, 12], [0, 10, 11, 12], [10, 11, 12, 13]]
    assert new_mask.tolist() == [[0, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]]
    assert new_ids.dtype == ids.dtype and new_mask.dtype == mask.dtype
    # another pad id is written at the new padding only
    padded, _ = remove_image_tokens(ids, mask, QWEN_VISION, pad_token_id=99)
    assert padded.tolist() == [[99, 10, 11, 12], [99, 10, 11, 12], [10, 11, 12, 13]]


def test_text_only_rows_are_unchanged():
    ids = torch.tensor([[0, 10, 11, 12], [13, 14, 15, 16]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    for vision in (QWEN_VISION, ()):
        new_ids, new_mask = remove_image_tokens(ids, mask, vision)
        assert torch.equal(new_ids, ids) and torch.equal(new_mask, mask)
    # columns that are padding in every row go: the batch is trimmed to its longest row
    wide_ids = torch.cat([torch.zeros(2, 3, dtype=torch.long), ids], dim=1)
    wide_mask = torch.cat([torch.zeros(2, 3, dtype=torch.long), mask], dim=1)
    new_ids, new_mask = remove_image_tokens(wide_ids, wide_mask, QWEN_VISION)
    assert torch.equal(new_ids, ids) and torch.equal(new_mask, mask)


def test_smolvlm_style_tokens_go_and_the_text_between_them_stays():
    # <fake_token_around_image> 4, <global-img> 5, <image> 6, <row_1_col_1> 7; "\n" 20; text 30+.
    vision = (4, 5, 6, 7)
    ids = torch.tensor([[1, 30, 4, 7, 6, 6, 20, 4, 5, 6, 6, 4, 31, 2]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    new_ids, new_mask = remove_image_tokens(ids, mask, vision)
    assert new_ids.tolist() == [[1, 30, 20, 31, 2]]
    assert new_mask.dtype == torch.bool and new_mask.all()


def test_padding_inside_a_row_is_dropped_and_masked_vision_ids_do_not_count():
    # a masked-out column is padding whatever its id: it never survives, even if it is a text id
    ids = torch.tensor([[10, 0, 6, 11], [3, 6, 4, 12]])
    mask = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 1]])
    new_ids, new_mask = remove_image_tokens(ids, mask, QWEN_VISION, pad_token_id=0)
    assert new_ids.tolist() == [[10, 11], [0, 12]]
    assert new_mask.tolist() == [[1, 1], [0, 1]]


def test_a_prompt_of_only_vision_tokens_and_an_empty_batch():
    ids = torch.tensor([[3, 6, 4]])
    new_ids, new_mask = remove_image_tokens(ids, torch.ones_like(ids), QWEN_VISION)
    assert new_ids.shape == (1, 0) and new_mask.shape == (1, 0)
    empty = torch.zeros(0, 5, dtype=torch.long)
    new_ids, new_mask = remove_image_tokens(empty, empty, QWEN_VISION)
    assert new_ids.shape == (0, 0) and new_mask.shape == (0, 0)


def test_take_positions_follows_the_kept_columns_for_other_per_token_tensors():
    ids = torch.tensor([[0, 10, 3, 6, 4, 11], [10, 11, 12, 3, 6, 4]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    positions = text_only_positions(ids, mask, QWEN_VISION)
    assert positions.tolist() == [[-1, 1, 5], [0, 1, 2]]
    token_types = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1]])
    assert take_positions(token_types, positions).tolist() == [[0, 0, 0], [0, 0, 0]]
    features = torch.arange(2 * 6 * 2, dtype=torch.float32).view(2, 6, 2)
    taken = take_positions(features, positions, fill=-1.0)
    assert taken.tolist() == [
        [[-1.0, -1.0], [2.0, 3.0], [10.0, 11.0]],
        [[12.0, 13.0], [14.0, 15.0], [16.0, 17.0]],
    ]


def test_bad_inputs_are_refused():
    ids = torch.tensor([[10, 3, 6, 4]])
    with pytest.raises(ValueError, match="2-D"):
        remove_image_tokens(ids[0], torch.ones(4), QWEN_VISION)
    with pytest.raises(ValueError, match="integer token ids"):
        remove_image_tokens(ids.float(), torch.ones_like(ids), QWEN_VISION)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        remove_image_tokens(ids, torch.ones(1, 3), QWEN_VISION)
    with pytest.raises(ValueError, match="only 0 and 1"):
        remove_image_tokens(ids, torch.full_like(ids, 2), QWEN_VISION)
    with pytest.raises(ValueError, match="rows of positions"):
        take_positions(torch.zeros(2, 4), torch.zeros(1, 4, dtype=torch.long))


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "smolvlm"])
def test_the_real_processors_prompt_without_its_image_tokens_is_the_text_only_prompt(arch):
    """Removing the vision tokens gives the ids of the prompt text without its image placeholders.

    Qwen's template writes nothing around an image but its own tokens, so this is the prompt the
    template makes without the image. SmolVLM's template writes "User:<image>..." with an image
    first but "User: ..." without one: the removed prompt keeps the first form, one space less.
    """
    pytest.importorskip("transformers")
    from PIL import Image

    from vppo.models import build_tiny_vlm, vision_layout

    model, processor = build_tiny_vlm(arch, seed=0)
    vision = vision_layout(processor, model.config)
    processor.tokenizer.padding_side = "left"
    image = Image.new("RGB", (56, 56), (120, 30, 200))
    counts = [1, 2, 0]
    questions = ["What colour?", "Which is larger?", "Two plus two?"]

    def texts(with_images: bool) -> list[str]:
        return [
            processor.apply_chat_template(
                [
                    {
                        "role": "user",
                        "content": [{"type": "image"}] * (n if with_images else 0)
                        + [{"type": "text", "text": q}],
                    }
                ],
                tokenize=False,
                add_generation_prompt=True,
            )
            for n, q in zip(counts, questions, strict=True)
        ]

    images = [[image] * n for n in counts]
    if arch == "qwen2_5_vl":
        images = [img for row in images for img in row]
    full = processor(text=texts(True), images=images, padding=True, return_tensors="pt")
    if arch == "qwen2_5_vl":
        plain = texts(False)
    else:
        plain = [t.replace("<image>", "") for t in texts(True)]
        assert plain[0] != texts(False)[0]  # "User:What" against "User: What"
    text_only = processor(text=plain, padding=True, return_tensors="pt")
    assert torch.isin(full["input_ids"], torch.tensor(vision.pad_token_ids_to_ban)).any()
    ids, mask = remove_image_tokens(
        full["input_ids"],
        full["attention_mask"],
        vision.pad_token_ids_to_ban,
        pad_token_id=processor.tokenizer.pad_token_id,
    )
    assert ids.tolist() == text_only["input_ids"].tolist()
    assert mask.tolist() == text_only["attention_mask"].tolist()
