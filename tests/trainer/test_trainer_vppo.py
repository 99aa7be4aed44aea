"""End-to-end VPPOTrainer tests on tiny real architectures (CPU, offline)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from datasets import Dataset
from PIL import Image
from trl import GRPOTrainer

from vppo.algorithm import clipped_pg_loss
from vppo.models import build_tiny_vlm
from vppo.trainer import VPPOConfig, VPPOTrainer
from vppo.trainer import scoring as scoring_module
from vppo.trainer import trainer as trainer_module

pytestmark = pytest.mark.slow


def _dataset(n: int = 16, mode: str = "RGB") -> Dataset:
    rows = []
    for i in range(n):
        image = Image.new("RGB", (56, 56), ((i * 40) % 255, 100, 200))
        image.paste((255, 255, 255), (8 * (i % 5), 8, 8 * (i % 5) + 14, 22))
        rows.append(
            {
                "prompt": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image"},
                            {"type": "text", "text": f"What colour {i}?"},
                        ],
                    }
                ],
                "images": [image.convert(mode)],
                "answer": str(i % 3),
            }
        )
    return Dataset.from_list(rows)


def parity_reward(completions, **kwargs):
    """Deterministic mixed rewards: 1 when the completion has an even number of characters."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [float(len(t) % 2 == 0) for t in texts]


def constant_reward(completions, **kwargs):
    return [1.0 for _ in completions]


def _trainer(tmp_path, arch="qwen2_5_vl", reward=parity_reward, dataset=None, **overrides):
    model, processor = build_tiny_vlm(arch, seed=0)
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
        learning_rate=1e-4,
        seed=0,
    )
    settings.update(overrides)
    args = VPPOConfig(**settings)
    return VPPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=dataset if dataset is not None else _dataset(),
        processing_class=processor,
    )


class _Recorder:
    """Records what VPPOTrainer hands to `token_advantages` (A [B], α [B], weights [B,T], mask)."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = trainer_module.token_advantages

        def recording(advantages, dep, mask, **kwargs):
            out = original(advantages, dep, mask, **kwargs)
            self.calls.append(
                {
                    "advantages": advantages.clone(),
                    "dep": dep.clone(),
                    "mask": mask.clone(),
                    "scale": kwargs["scale"].clone(),
                    "weights": kwargs["token_weights"].clone(),
                    "token_advantages": out.clone(),
                }
            )
            return out

        monkeypatch.setattr(trainer_module, "token_advantages", recording)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl", "smolvlm"])
def test_vppo_trains_each_architecture_with_sane_metrics(tmp_path, monkeypatch, arch):
    recorder = _Recorder(monkeypatch)
    trainer = _trainer(tmp_path, arch)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "vppo/kept_token_frac" in h]
    assert len(logs) == 2
    assert len(recorder.calls) == 2
    for log, call in zip(logs, recorder.calls, strict=True):
        lengths = call["mask"].sum(-1).tolist()
        expected = sum(math.ceil(0.4 * n - 1e-9) for n in lengths) / sum(lengths)
        assert log["vppo/kept_token_frac"] == pytest.approx(expected, abs=1e-6)
        assert call["weights"].sum(-1).tolist() == [math.ceil(0.4 * n - 1e-9) for n in lengths]
        assert log["vppo/tas_scale_mean"] == pytest.approx(1.0, abs=1e-5)
        assert log["vppo/tas_scale_min"] >= 0.9 - 1e-6
        assert log["vppo/dependency_mean"] >= 0
        assert log["vppo/dependency_selected_mean"] >= log["vppo/dependency_rejected_mean"]
        assert call["scale"].mean().item() == pytest.approx(1.0, abs=1e-5)
        assert (call["token_advantages"][~call["mask"]] == 0).all()
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


def _loss_gradient(trainer, monkeypatch):
    """One scored batch, then d loss / d per-token log-probs of the loss pass."""
    trainer.model.train()
    generation_batch = next(iter(trainer.get_train_dataloader()))
    # Score without TRL's shuffle so rows line up with what the recorder saw.
    batch = trainer._generate_and_score_completions(generation_batch)
    captured = {}
    original = GRPOTrainer._get_per_token_logps_and_entropies

    def capture(self, *args, **kwargs):
        logps, entropies, aux = original(self, *args, **kwargs)
        if torch.is_grad_enabled():
            logps.retain_grad()
            captured["logps"] = logps
        return logps, entropies, aux

    monkeypatch.setattr(GRPOTrainer, "_get_per_token_logps_and_entropies", capture)
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop outside of train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return batch, captured["logps"]


@pytest.mark.parametrize("nll_coef", [0.0, 0.06])
def test_filtered_tokens_get_exactly_zero_policy_gradient(tmp_path, monkeypatch, nll_coef):
    recorder = _Recorder(monkeypatch)
    trainer = _trainer(
        tmp_path, nll_coef=nll_coef, per_device_train_batch_size=8, num_generations=4
    )
    batch, logps = _loss_gradient(trainer, monkeypatch)
    call = recorder.calls[-1]
    mask, weights = call["mask"], call["weights"]
    grad = logps.grad
    tokens = mask.sum()
    # The official masked formula: sum_t w_t * clipped-PG(α_i A_i) / (all valid tokens) (+ NLL).
    reference_logps = logps.detach().clone().requires_grad_(True)
    reference, _ = clipped_pg_loss(
        reference_logps,
        logps.detach(),
        call["advantages"] * call["scale"],
        mask,
        eps_low=0.2,
        eps_high=0.28,
        token_weights=weights,
    )
    reference = reference + nll_coef * (-(reference_logps * mask).sum() / tokens)
    reference.backward()
    torch.testing.assert_close(grad, reference_logps.grad, rtol=1e-5, atol=1e-7)
    filtered = mask & (weights == 0)
    assert filtered.any()
    # Only the NLL push reaches filtered tokens: exactly zero policy gradient.
    expected = torch.full_like(grad[filtered], -nll_coef / tokens.item())
    torch.testing.assert_close(grad[filtered], expected, rtol=1e-6, atol=0.0)
    assert (grad[~mask] == 0).all()


def test_exact_kl_estimator_trains(tmp_path, monkeypatch):
    recorder = _Recorder(monkeypatch)
    trainer = _trainer(tmp_path, dependency_estimator="kl", max_steps=1, kl_chunk_size=5)
    trainer.train()
    dep, mask = recorder.calls[0]["dep"], recorder.calls[0]["mask"]
    assert (dep[mask] >= 0).all() and dep[mask].sum() > 0
    assert (dep[~mask] == 0).all()


def test_baseline_runs_no_perturbed_forward(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, token_selection="none", use_tas=False, max_steps=1)
    calls = []
    monkeypatch.setattr(trainer, "perturb_pixel_values", lambda *a, **k: calls.append(1))
    trainer.train()
    assert calls == []
    assert not any("vppo/dependency_mean" in h for h in trainer.state.log_history)


def test_dynamic_sampling_refills_and_stops_at_its_bound(tmp_path, caplog):
    trainer = _trainer(
        tmp_path,
        reward=constant_reward,
        dynamic_sampling=True,
        dynamic_sampling_max_rounds=2,
        max_steps=1,
    )
    with caplog.at_level(logging.WARNING, logger="vppo.trainer.dynamic_sampling"):
        trainer.train()
    log = next(h for h in trainer.state.log_history if "vppo/dynamic_sampling/dropped_frac" in h)
    assert log["vppo/dynamic_sampling/dropped_frac"] == 1.0
    assert log["vppo/dynamic_sampling/extra_rounds"] == 2.0
    assert log["vppo/dynamic_sampling/filler_groups"] == 2.0
    assert "found no group with mixed rewards in 3 rounds" in caplog.text  # every group was filler


def test_dynamic_sampling_keeps_only_informative_groups(tmp_path, monkeypatch):
    recorder = _Recorder(monkeypatch)
    trainer = _trainer(
        tmp_path,
        dynamic_sampling=True,
        dynamic_sampling_max_rounds=6,
        max_steps=1,
        per_device_train_batch_size=8,
        num_generations=4,
    )
    trainer.train()
    log = next(h for h in trainer.state.log_history if "vppo/dynamic_sampling/dropped_frac" in h)
    advantages = recorder.calls[0]["advantages"].view(-1, 4)
    if log["vppo/dynamic_sampling/filler_groups"] == 0:
        # every kept group has mixed rewards, hence non-zero advantages
        assert (advantages.abs().sum(-1) > 0).all()


def test_dynamic_sampling_perturbs_each_row_from_its_own_image(tmp_path, monkeypatch):
    """Rows re-selected from a refill round get I' built from their own images, not the first round's."""
    calls = []

    def uniform_then_mixed(completions, **kwargs):
        calls.append(len(completions))
        if (
            len(calls) == 1
        ):  # the first round's groups are all uniform: dropped, the batch is a refill
            return [1.0 for _ in completions]
        return [float(j % 2) for j in range(len(completions))]  # mixed in every group: kept

    trainer = _trainer(
        tmp_path,
        reward=uniform_then_mixed,
        dynamic_sampling=True,
        dynamic_sampling_max_rounds=1,
        max_steps=1,
        perturbation="blur",
    )
    seen = []
    original = trainer.perturb_pixel_values

    def recording(output, inputs, generator):
        perturbed = original(output, inputs, generator)
        seen.append(
            (
                output["pixel_values"].clone(),
                output["image_grid_thw"].clone(),
                list(inputs),
                perturbed,
            )
        )
        return perturbed

    monkeypatch.setattr(trainer, "perturb_pixel_values", recording)
    trainer.train()
    log = next(h for h in trainer.state.log_history if "vppo/dynamic_sampling/dropped_frac" in h)
    assert (
        log["vppo/dynamic_sampling/dropped_frac"],
        log["vppo/dynamic_sampling/extra_rounds"],
        log["vppo/dynamic_sampling/filler_groups"],
    ) == (1.0, 1.0, 0.0)
    assert len(seen) == 1
    pixel_values, grid, inputs, perturbed = seen[0]
    assert len(inputs) == grid.size(0) == 4
    image_processor = trainer.processing_class.image_processor
    starts = [0, *grid.prod(-1).cumsum(0).tolist()]
    for row, example in enumerate(inputs):
        own = slice(starts[row], starts[row + 1])
        # The input row handed to VPPO is the one whose image the policy saw in this output row ...
        real = image_processor(images=example["images"], return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(pixel_values[own], real)
        # ... so the perturbed image I' of that row is the blur of its own image.
        expected = scoring_module.perturb_pixel_values(
            pixel_values[own],
            trainer.vision,
            "blur",
            images=[example["images"]],
            image_processor=image_processor,
        )
        torch.testing.assert_close(perturbed[own], expected)


def test_training_resumes_from_checkpoint(tmp_path):
    first = _trainer(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)
    first.train()
    checkpoint = tmp_path / "out" / "checkpoint-2"
    assert checkpoint.is_dir()
    second = _trainer(tmp_path, max_steps=3, save_strategy="steps", save_steps=1)
    second.train(resume_from_checkpoint=str(checkpoint))
    assert second.state.global_step == 3
    assert (tmp_path / "out" / "checkpoint-3").is_dir()


def test_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="dependency_estimator"):
        VPPOConfig(output_dir="x", dependency_estimator="l2", use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match="token_ratio"):
        VPPOConfig(output_dir="x", token_ratio=1.5, use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match="tas_beta_max"):
        VPPOConfig(output_dir="x", tas_beta_max="0.5", use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match="perturbation"):
        VPPOConfig(output_dir="x", perturbation="pixelate", use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match="nll_coef"):
        VPPOConfig(output_dir="x", nll_coef=0.06, loss_type="cispo", use_cpu=True, bf16=False)


def test_config_refuses_dynamic_sampling_over_partial_groups_per_process(monkeypatch):
    # Two processes of 2 rows: the global batch (4) holds one group of 4, each process half of one.
    monkeypatch.setattr(VPPOConfig, "world_size", property(lambda self: 2))
    settings = dict(
        output_dir="x",
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=2,
        steps_per_generation=1,
        num_generations=4,
        gradient_accumulation_steps=1,
    )
    with pytest.raises(
        ValueError,
        match=r"VPPOConfig.dynamic_sampling needs each process's generation batch "
        r"\(2 rows",
    ):
        VPPOConfig(**settings)
    assert VPPOConfig(**settings, dynamic_sampling=False).generation_batch_size == 4


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """One scored generation batch of a tiny Qwen2.5-VL trainer (before VPPO shaping), in train mode."""
    trainer = _trainer(
        tmp_path_factory.mktemp("scored"),
        per_device_train_batch_size=8,
        num_generations=4,
        token_selection="none",
        use_tas=False,
    )
    trainer.model.train()
    inputs = next(iter(trainer.get_train_dataloader()))
    output = trainer._generate_and_score_completions(inputs)
    assert output["advantages"].dim() == 1
    trainer.args.token_selection, trainer.args.use_tas = "topk", True
    return trainer, inputs, output


@pytest.mark.parametrize("perturbation", ["blacken", "blacken_image", "noise", "blur", "grey"])
def test_every_perturbation_keeps_the_pixel_layout(scored, perturbation):
    trainer, inputs, output = scored
    trainer.args.perturbation = perturbation
    try:
        perturbed = trainer.perturb_pixel_values(output, inputs, torch.Generator().manual_seed(0))
    finally:
        trainer.args.perturbation = "blacken"
    original = output["pixel_values"]
    assert perturbed.shape == original.shape and perturbed.dtype == original.dtype
    assert not torch.equal(perturbed, original)
    if perturbation == "blacken":
        black = torch.tensor(trainer.vision.black_value).repeat_interleave(2 * 14 * 14)
        changed = (perturbed != original).any(-1)
        assert torch.allclose(perturbed[changed], black.expand(int(changed.sum()), -1))


@pytest.mark.parametrize("selection", ["soft", "entropy", "random", "union", "none"])
def test_every_token_selection_shapes_advantages(scored, monkeypatch, selection):
    trainer, inputs, output = scored
    recorder = _Recorder(monkeypatch)
    trainer.args.token_selection = selection
    try:
        shaped = trainer._apply_vppo(dict(output, advantages=output["advantages"].clone()), inputs)
    finally:
        trainer.args.token_selection = "topk"
    call = recorder.calls[-1]
    mask, weights = call["mask"], call["weights"]
    assert shaped["advantages"].shape == mask.shape
    assert (weights[~mask] == 0).all() and ((weights >= 0) & (weights <= 1)).all()
    lengths = mask.sum(-1)
    if selection in ("entropy", "random"):
        assert weights.sum(-1).tolist() == [math.ceil(0.4 * n - 1e-9) for n in lengths.tolist()]
    elif selection == "soft":
        assert torch.allclose(
            weights.sum(-1) / lengths, torch.full_like(weights[:, 0], 0.4), atol=1e-3
        )
    elif selection == "union":
        assert (
            weights.sum(-1) >= torch.tensor([math.ceil(0.4 * n - 1e-9) for n in lengths.tolist()])
        ).all()
    else:
        assert torch.equal(weights, mask.float())


def test_left_padding_and_banned_vision_tokens(tmp_path):
    model, processor = build_tiny_vlm("qwen2_5_vl", seed=0)
    processor.tokenizer.padding_side = "right"
    args = VPPOConfig(
        output_dir=str(tmp_path),
        bf16=False,
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
    )
    trainer = VPPOTrainer(
        model=model,
        reward_funcs=[parity_reward],
        args=args,
        train_dataset=_dataset(4),
        processing_class=processor,
    )
    assert processor.tokenizer.padding_side == "left"
    banned = set(trainer.vision.pad_token_ids_to_ban)
    assert {model.config.image_token_id, model.config.video_token_id} <= banned
    assert banned <= set(trainer.generation_kwargs["suppress_tokens"])
    vllm_kwargs = VPPOTrainer._ban_vision_tokens(
        VPPOConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, use_vllm=True), tuple(banned)
    )
    assert vllm_kwargs["logit_bias"] == {i: -100.0 for i in banned}
