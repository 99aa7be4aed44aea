"""The supervised warm start: batches, loss masking, prompt parity with the trainer, a short run."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

import vppo
from vppo.data.settings import resolve_prompt_settings
from vppo.data.synthetic import SYNTHETIC_VOCAB_TEXTS, make_synthetic_dataset, reference_solution
from vppo.models import build_tiny_vlm, load_model_and_processor
from vppo.toy.warmstart import (
    WarmStartConfig,
    choose_num_threads,
    collate_sft,
    encode_sft_example,
    main,
    prompt_messages,
    sft_loss,
    warm_start,
)

PIXELS = 56 * 56


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_vlm(
        "qwen2_5_vl",
        seed=0,
        vocab_texts=SYNTHETIC_VOCAB_TEXTS,
        min_pixels=PIXELS,
        max_pixels=PIXELS,
    )


@pytest.fixture(scope="module")
def rows():
    return make_synthetic_dataset(
        3, split="train", seed=0, task_types=["count", "colour", "digit_sum"]
    )


def test_collate_puts_labels_on_response_tokens_only(tiny, rows):
    model, processor = tiny
    tokenizer = processor.tokenizer
    encoded = [encode_sft_example(processor, row) for row in rows]
    batch = collate_sft(encoded, tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    for i, (row, ex) in enumerate(zip(rows, encoded, strict=True)):
        n_prompt = ex["prompt"]["input_ids"].shape[1]
        n_resp = len(ex["response"])
        n_pad = width - n_prompt - n_resp
        labels = batch["labels"][i]
        # Left padding, then the prompt (no labels), then the response (labelled, ending with EOS).
        assert batch["attention_mask"][i].tolist() == [0] * n_pad + [1] * (n_prompt + n_resp)
        assert (labels[: n_pad + n_prompt] == -100).all()
        assert labels[n_pad + n_prompt :].tolist() == ex["response"]
        assert batch["input_ids"][i, n_pad + n_prompt :].tolist() == ex["response"]
        assert ex["response"][-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ex["response"][:-1]) == reference_solution(row)
        # Response tokens are text, not image slots.
        assert batch["mm_token_type_ids"][i, n_pad + n_prompt :].eq(0).all()
    per_image = encoded[0]["prompt"]["pixel_values"].shape[0]
    assert batch["pixel_values"].shape[0] == per_image * len(rows)
    assert batch["image_grid_thw"].shape == (len(rows), 3)


def test_sft_prompt_is_the_prompt_the_trainer_sees(tiny, rows):
    """The warm start must train on exactly the token layout RL later samples from."""
    from vppo.toy.demo import training_dataset

    _, processor = tiny
    trl_rows = training_dataset(rows)
    for raw, trl_row in zip(rows, trl_rows, strict=True):
        ours = processor.apply_chat_template(
            prompt_messages(raw["problem"]), tokenize=False, add_generation_prompt=True
        )
        theirs = processor.apply_chat_template(
            trl_row["prompt"], tokenize=False, add_generation_prompt=True
        )
        assert ours == theirs
        assert "<image>" not in ours and ours.count("<|image_pad|>") == 1


def test_sft_loss_is_token_mean_over_response_tokens(tiny, rows):
    model, processor = tiny
    encoded = [encode_sft_example(processor, row) for row in rows]
    batch = collate_sft(encoded, processor.tokenizer.pad_token_id)
    with torch.no_grad():
        loss = sft_loss(model, batch)
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1)
    targets = batch["labels"][:, 1:]
    mask = targets != -100
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    expected = -(picked * mask).sum() / mask.sum()
    assert mask.sum() == sum(len(ex["response"]) for ex in encoded)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="learning_rate"):
        WarmStartConfig(learning_rate=0.0)
    with pytest.raises(ValueError, match="task_types"):
        WarmStartConfig(task_types=("count", "nonsense"))
    with pytest.raises(ValueError, match="target_pass_rate"):
        WarmStartConfig(target_pass_rate=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        WarmStartConfig(batch_size=0)
    with pytest.raises(ValueError, match="arch"):
        WarmStartConfig(arch="llama")


def test_choose_num_threads():
    assert choose_num_threads(3) == 3
    auto = choose_num_threads()
    assert 1 <= auto <= (os.cpu_count() or 1)
    with pytest.raises(ValueError, match="threads"):
        choose_num_threads(0)


def test_encode_rejects_rows_without_a_scene(tiny):
    _, processor = tiny
    row = {
        "problem": "<image>How many shapes are in the image?",
        "answer": "2",
        "images": [],
        "task_type": "count",
    }
    with pytest.raises(ValueError, match="'scene'"):
        encode_sft_example(processor, row)


@pytest.mark.slow
def test_short_warm_start_beats_chance_and_reloads(tmp_path):
    # One task with four answers (chance 0.25) and a smaller model: the template is learnt in a
    # few dozen steps, counting the shapes shortly after.
    config = WarmStartConfig(
        task_types=("count",),
        hidden_size=64,
        num_layers=2,
        vision_hidden_size=32,
        train_size=128,
        steps=480,
        batch_size=16,
        learning_rate=1e-3,
        eval_every=40,
        eval_size=16,
        eval_samples=2,
        target_pass_rate=0.6,
    )
    result = warm_start(tmp_path / "ws", config, progress=False, log=None)
    assert result.chance == pytest.approx(0.25)
    assert result.pass_rate >= 0.6 > result.chance
    assert result.steps < 480 and result.steps % 40 == 0  # stopped early, at a measurement
    assert math.isfinite(result.final_loss)
    info = json.loads((tmp_path / "ws" / "vppo_warmstart.json").read_text())
    assert info["pass_rate"] == pytest.approx(result.pass_rate)
    assert [h["step"] for h in info["history"]] == list(range(40, result.steps + 1, 40))
    # a rebuild records the prompt settings the shipped checkpoint carries, so commands given the
    # folder prompt as the warm start did
    shipped = json.loads(
        (Path(vppo.__file__).parent / "assets" / "warmstart" / "vppo_warmstart.json").read_text()
    )
    assert (
        info["prompt"]
        == shipped["prompt"]
        == {"template": "plain", "system_prompt": None, "min_pixels": 3136, "max_pixels": 3136}
    )
    assert resolve_prompt_settings(tmp_path / "ws").source.endswith("vppo_warmstart.json")
    model, processor = load_model_and_processor(tmp_path / "ws", dtype="float32")
    assert model.config.model_type == "qwen2_5_vl"
    assert processor.tokenizer.convert_tokens_to_ids("<think>") != processor.tokenizer.unk_token_id


def test_cli_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="steps"):
        main(["--output", str(tmp_path / "x"), "--steps", "0", "--threads", "1"])
