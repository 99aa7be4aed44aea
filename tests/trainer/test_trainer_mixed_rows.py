"""A dataset mixing text-only, one-image and two-image rows trains (transformers generation; the
vLLM colocate path is in tests/trainer/test_vllm_equality.py, the CLI's own-data flow below).

What a text-only row gets (docs/trainer.md): dependency 0, α = 1 (TAS leaves its advantage
unscaled and it does not enter the min-max statistics) and every token kept by TGF.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from datasets import Dataset
from PIL import Image

from vppo.models import build_tiny_vlm
from vppo.trainer import VPPOConfig, VPPOTrainer
from vppo.trainer import trainer as trainer_module
from vppo.trainer.trainer import _drop_empty_vision_inputs, rows_without_images

pytestmark = pytest.mark.slow


def _mixed_rows(n: int = 12) -> list[dict]:
    """Rows cycling through one image, two images of other sizes and no image."""
    image = {"type": "image"}
    rows = []
    for i in range(n):
        colour = ((i * 40) % 255, 100, 200)
        kind = i % 3
        if kind == 0:
            content, images = (
                [image, {"type": "text", "text": f"Colour {i}?"}],
                [Image.new("RGB", (56, 56), colour)],
            )
        elif kind == 1:
            content = [image, image, {"type": "text", "text": f"Which is larger, {i}?"}]
            images = [Image.new("RGB", (84, 56), colour), Image.new("RGB", (56, 112), colour[::-1])]
        else:
            content, images = [{"type": "text", "text": f"What is {i} + 1?"}], []
        rows.append(
            {"prompt": [{"role": "user", "content": content}], "images": images, "kind": kind}
        )
    return rows


def _reward(completions, **kwargs):
    return [float(len(c[0]["content"] if not isinstance(c, str) else c) % 2) for c in completions]


def _trainer(tmp_path, arch, **overrides):
    model, processor = build_tiny_vlm(arch, seed=0, min_pixels=56 * 56, max_pixels=112 * 112)
    settings = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        steps_per_generation=3,
        num_generations=2,
        max_completion_length=8,
        max_steps=3,
        bf16=False,
        use_cpu=True,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        gradient_checkpointing=False,
        dynamic_sampling=False,
        learning_rate=1e-4,
        seed=0,
    )
    settings.update(overrides)
    return VPPOTrainer(
        model=model,
        reward_funcs=[_reward],
        args=VPPOConfig(**settings),
        train_dataset=Dataset.from_list(_mixed_rows(3)),
        processing_class=processor,
    )


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_mixed_rows_train_with_text_only_rows_at_dependency_zero(tmp_path, monkeypatch, arch):
    calls, forwards = [], []
    original = trainer_module.token_advantages

    def recording(advantages, dep, mask, **kwargs):
        calls.append(
            {
                "dep": dep.clone(),
                "mask": mask.clone(),
                "scale": kwargs["scale"].clone(),
                "weights": kwargs["token_weights"].clone(),
                "advantages": advantages.clone(),
            }
        )
        return original(advantages, dep, mask, **kwargs)

    monkeypatch.setattr(trainer_module, "token_advantages", recording)
    trainer = _trainer(tmp_path, arch)
    rows_seen = []
    score = trainer._generate_and_score_completions

    def recording_score(inputs):
        output = score(inputs)
        rows_seen.append([len(row["images"]) for row in inputs])
        return output

    trainer._generate_and_score_completions = recording_score
    # Every forward the trainer runs: text-only chunks must reach the model without vision tensors.
    handle = trainer.model.register_forward_pre_hook(
        lambda module, args, kwargs: forwards.append("pixel_values" in kwargs), with_kwargs=True
    )
    trainer.train()
    handle.remove()

    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 3 and all(math.isfinite(h["loss"]) for h in logs)
    (call,), (counts,) = calls, rows_seen  # one rollout of 3 prompts x 2 samples, 3 updates
    assert sorted(counts) == [0, 0, 1, 1, 2, 2]
    text_only = torch.tensor([c == 0 for c in counts])
    mask = call["mask"]
    # text-only rows: dependency 0, α = 1, every token kept
    assert (call["dep"][text_only] == 0).all()
    assert (call["scale"][text_only] == 1).all()
    assert torch.equal(call["weights"][text_only], mask[text_only].float())
    # image rows: a random model's dependency is positive, TGF keeps ceil(0.4 n), mean α = 1 over them
    assert (call["dep"][~text_only][mask[~text_only]] > 0).all()
    kept = call["weights"][~text_only].sum(-1).tolist()
    assert kept == [math.ceil(0.4 * n - 1e-9) for n in mask[~text_only].sum(-1).tolist()]
    assert call["scale"][~text_only].mean().item() == pytest.approx(1.0, abs=1e-5)
    # the padding-free passes put the two text-only rows in a chunk of their own (length-sorted)
    assert not all(forwards)


def test_an_empty_vision_batch_runs_as_text_only():
    model, processor = build_tiny_vlm("qwen2_5_vl", seed=0)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    inputs = processor(text=[text], return_tensors="pt")
    empty = {
        "pixel_values": torch.zeros(0, 1176),
        "image_grid_thw": torch.zeros(0, 3, dtype=torch.long),
    }
    with torch.no_grad(), pytest.raises((ValueError, RuntimeError)):
        model(**inputs, **empty)  # the failure the hook exists for
    handle = model.register_forward_pre_hook(_drop_empty_vision_inputs, with_kwargs=True)
    with torch.no_grad():
        assert torch.equal(model(**inputs, **empty).logits, model(**inputs).logits)
    handle.remove()


def test_rows_without_images_reads_the_arrow_table():
    rows = _mixed_rows(6)
    data = Dataset.from_list([{"images": r["images"], "k": r["kind"]} for r in rows])
    assert rows_without_images(data) == (2, 2)
    assert rows_without_images(data.select([1, 0, 4, 3])) == (0, None)
    assert rows_without_images(data.select([1, 5, 2])) == (2, 1)
    single = Dataset.from_list([{"image": None}, {"image": rows[0]["images"][0]}])
    assert rows_without_images(single) == (1, 0)
    assert rows_without_images(Dataset.from_list([{"q": "a"}, {"q": "b"}])) == (2, 0)
    one_per_row = Dataset.from_list([{"images": rows[0]["images"][0]}, {"images": None}])
    assert rows_without_images(one_per_row) == (1, 1)


def test_vppo_train_on_a_mixed_parquet(tmp_path):
    """The README's own-data flow on a file whose rows have one image, two images or none."""
    from datasets import Features, List, Value
    from datasets import Image as ImageFeature

    from vppo.cli import main as vppo_main
    from vppo.demo import default_checkpoint

    rows = []
    for i, row in enumerate(_mixed_rows(12)):
        problem = "<image>" * len(row["images"]) + f"What is {i}? Put the answer in \\boxed{{}}."
        rows.append({"problem": problem, "images": row["images"], "answer": str(i)})
    features = Features(
        {"problem": Value("string"), "images": List(ImageFeature()), "answer": Value("string")}
    )
    Dataset.from_list(rows, features=features).to_parquet(tmp_path / "mixed.parquet")
    run = tmp_path / "run"
    assert (
        vppo_main(
            [
                "train",
                "--model_name_or_path",
                str(default_checkpoint()),
                "--dataset_name",
                str(tmp_path / "mixed.parquet"),
                "--output_dir",
                str(run),
                "--max_steps",
                "2",
                "--num_generations",
                "2",
                "--per_device_train_batch_size",
                "12",
                "--max_completion_length",
                "32",
                "--logging_steps",
                "1",
            ]
        )
        == 0
    )
    history = json.loads((run / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
