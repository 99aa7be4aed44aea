"""PAPO's implicit perception loss in VPPOTrainer (tiny Qwen2.5-VL, CPU, float32)."""

from __future__ import annotations

import logging

import pytest
import torch
from test_trainer_mixed_rows import _trainer as mixed_trainer
from test_trainer_vppo import _trainer
from trl import GRPOTrainer
from trl.trainer.utils import (
    shuffle_sequence_dict,
    split_pixel_values_by_grid,
    split_tensor_dict,
    unsplit_pixel_values_by_grid,
)

from vppo.algorithm import papo_loss
from vppo.trainer import VPPOConfig
from vppo.trainer.batching import update_micro_batches

pytestmark = pytest.mark.slow

# The official masking (PIL squares of 14 px, each blackened with probability 0.6), on DAPO.
PAPO = dict(
    token_selection="none",
    use_tas=False,
    papo_coef=0.02,
    papo_entropy_coef=0.05,
    papo_masked_entropy_coef=0.03,
    perturbation="blacken_image",
    perturbation_prob=0.6,
    perturbation_patch_size=14,
)
PAPO_COEFS = ("papo_coef", "papo_entropy_coef", "papo_masked_entropy_coef")


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A PAPO_D-like trainer, one scored batch of 8 rows, and the perturbed pixel_values it used."""
    trainer = _trainer(
        tmp_path_factory.mktemp("papo"),
        per_device_train_batch_size=8,
        num_generations=4,
        disable_dropout=True,
        **PAPO,
    )
    perturbed = []
    original = trainer.perturb_pixel_values

    def recording(output, inputs, generator):
        result = original(output, inputs, generator)
        perturbed.append(result.clone())
        return result

    trainer.perturb_pixel_values = recording
    trainer.model.train()
    inputs = next(iter(trainer.get_train_dataloader()))
    output = trainer._generate_and_score_completions(inputs)
    del trainer.perturb_pixel_values
    assert len(perturbed) == 1
    return trainer, output, perturbed[0]


def _loss_and_logp_grad(trainer, batch, monkeypatch, **coefs):
    """compute_loss on `batch` with the given PAPO coefficients: (loss, d loss / d loss-pass logps)."""
    captured = {}
    original = GRPOTrainer._get_per_token_logps_and_entropies

    def capture(self, *args, **kwargs):
        logps, entropies, aux = original(self, *args, **kwargs)
        if torch.is_grad_enabled():
            logps.retain_grad()
            captured["logps"] = logps
        return logps, entropies, aux

    saved = {name: getattr(trainer.args, name) for name in PAPO_COEFS}
    monkeypatch.setattr(GRPOTrainer, "_get_per_token_logps_and_entropies", capture)
    try:
        for name, value in coefs.items():
            setattr(trainer.args, name, value)
        trainer.current_gradient_accumulation_steps = 1
        trainer.model.zero_grad(set_to_none=True)
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
    finally:
        for name, value in saved.items():
            setattr(trainer.args, name, value)
        monkeypatch.undo()
        trainer.model.zero_grad(set_to_none=True)
    return loss.detach(), captured["logps"]


def test_the_papo_gradient_equals_the_pure_functions(scored, monkeypatch):
    trainer, output, _ = scored
    off = dict.fromkeys(PAPO_COEFS, 0.0)
    base_loss, base_logps = _loss_and_logp_grad(trainer, output, monkeypatch, **off)
    loss, logps = _loss_and_logp_grad(trainer, output, monkeypatch)
    # The loss pass is deterministic on CPU: both runs see the same log-probs.
    torch.testing.assert_close(logps.detach(), base_logps.detach(), rtol=0, atol=0)
    mask = output["completion_mask"].bool()
    reference_logps = logps.detach().clone().requires_grad_(True)
    # DAPO normalisation with one process, steps_per_generation = accumulation = 1: N = all tokens.
    reference = papo_loss(
        reference_logps,
        output["papo_masked_logps"],
        mask,
        0.02,
        entropy_coef=0.05,
        masked_entropy_coef=0.03,
        num_items=output["num_items_in_batch"],
    )
    reference.backward()
    # float32 throughout: the PAPO part of the loss and of d loss / d logp to 1e-6 relative
    # (the gradients are ~1e-3, and each side differs from the other by float32 rounding only).
    torch.testing.assert_close(loss - base_loss, reference.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(
        logps.grad - base_logps.grad, reference_logps.grad, rtol=1e-5, atol=1e-9
    )
    assert (logps.grad[~mask] == 0).all()
    k = (output["papo_masked_logps"] - logps.detach())[mask]
    assert k.abs().max() > 1e-4  # the masked image changes the log-probs: the KL term is live
    log = trainer._metrics["train"]
    assert log["papo/kl"][-1] > 0 and log["papo/entropy"][-1] > log["papo/kl"][-1]


def test_masked_logps_equal_an_independent_forward_on_the_perturbed_pixels(scored):
    trainer, output, perturbed = scored
    model = trainer.model
    ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
    attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
    width = output["completion_ids"].size(1)
    with torch.no_grad():
        logits = model(
            input_ids=ids,
            attention_mask=attention,
            pixel_values=perturbed,
            image_grid_thw=output["image_grid_thw"],
            mm_token_type_ids=output["mm_token_type_ids"],  # Qwen2.5-VL's rope index reads it
        ).logits
    logits = logits[:, -width - 1 : -1].float() / trainer.temperature
    expected = torch.log_softmax(logits, dim=-1).gather(-1, output["completion_ids"][..., None])
    expected = expected.squeeze(-1)
    mask = output["completion_mask"].bool()
    assert not torch.equal(perturbed, output["pixel_values"])
    # Padding-free, length-sorted chunks against one full-width forward: float32 agreement.
    torch.testing.assert_close(
        output["papo_masked_logps"][mask], expected[mask], rtol=1e-5, atol=1e-5
    )
    assert (output["papo_masked_logps"][~mask] == 0).all()


def test_the_papo_gradient_does_not_depend_on_the_micro_batch_grouping(tmp_path, monkeypatch):
    steps, micro = 4, 2
    trainer = _trainer(
        tmp_path,
        per_device_train_batch_size=micro,
        num_generations=2,
        steps_per_generation=steps,
        gradient_accumulation_steps=steps,
        max_completion_length=10,
        nll_coef=0.0,
        disable_dropout=True,
        **PAPO,
    )
    trainer.model.train()
    output = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    assert "papo_masked_logps" in output

    def gradient(batches):
        trainer.model.zero_grad(set_to_none=True)
        trainer.current_gradient_accumulation_steps = steps
        for batch in batches:
            trainer.compute_loss(trainer.model, batch).backward()
        grads = [p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None]
        trainer.model.zero_grad(set_to_none=True)
        return torch.cat(grads)

    for loss_type in ("dapo", "grpo"):
        trainer.loss_type = trainer.args.loss_type = loss_type
        torch.manual_seed(3)
        full = shuffle_sequence_dict(split_pixel_values_by_grid(dict(output)))
        trl_batches = [unsplit_pixel_values_by_grid(b) for b in split_tensor_dict(full, steps)]
        torch.manual_seed(3)
        order = torch.randperm(output["prompt_ids"].size(0)).tolist()
        ours = update_micro_batches(
            output, order, micro, trainer._regroup_window(), trainer._tokenizer.pad_token_id
        )
        assert all(b["papo_masked_logps"].shape == b["completion_ids"].shape for b in ours)
        reference, regrouped = gradient(trl_batches), gradient(ours)
        assert reference.abs().max() > 0
        assert (regrouped - reference).abs().max() <= 1e-5 * reference.abs().max()


def test_papo_coef_zero_leaves_dapo_bit_identical(tmp_path, monkeypatch):
    results = []
    calls = []
    for extra in ({}, dict(papo_kl_estimator="mse", papo_kl_clip=0.2, papo_coef=0.0)):
        trainer = _trainer(
            tmp_path / str(len(results)), token_selection="none", use_tas=False, **extra
        )
        monkeypatch.setattr(trainer, "perturb_pixel_values", lambda *a, **k: calls.append(1))
        trainer.train()
        assert not any(k.startswith("papo/") for h in trainer.state.log_history for k in h)
        results.append(
            (
                [p.detach().clone() for p in trainer.model.parameters()],
                [h["loss"] for h in trainer.state.log_history if "loss" in h],
            )
        )
    assert calls == []
    assert all(torch.equal(a, b) for a, b in zip(results[0][0], results[1][0], strict=True))
    assert results[0][1] == results[1][1]


def test_papo_with_vppo_shares_one_perturbed_pass_and_text_only_rows_get_kl_zero(
    tmp_path, monkeypatch, caplog
):
    trainer = mixed_trainer(
        tmp_path,
        "qwen2_5_vl",
        papo_coef=0.02,
        papo_entropy_coef=0.05,
        papo_masked_entropy_coef=0.05,
    )
    calls, outputs = [], []
    original = trainer.perturb_pixel_values
    monkeypatch.setattr(
        trainer, "perturb_pixel_values", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    score = trainer._generate_and_score_completions
    trainer._generate_and_score_completions = lambda inputs: (
        outputs.append(score(inputs)) or (outputs[-1])
    )
    # The logger named: a `vppo demo` run earlier in the process sets vppo.trainer to ERROR.
    with caplog.at_level(logging.WARNING, logger="vppo.trainer"):
        trainer.train()
    assert len(calls) == len(outputs) == 1  # VPPO's dependency and PAPO's masked log-probs
    output = outputs[0]
    text_only = torch.tensor([c == 0 for c in output["num_images"]])
    assert text_only.any() and not text_only.all()
    mask = output["completion_mask"].bool()
    # A text-only row's "masked" input is its prompt: its masked log-probs are its real old ones.
    torch.testing.assert_close(
        output["papo_masked_logps"][text_only][mask[text_only]],
        output["old_per_token_logps"][text_only][mask[text_only]],
        rtol=1e-5,
        atol=1e-5,
    )
    logs = [h for h in trainer.state.log_history if "papo/kl" in h]
    assert len(logs) == 3 and "vppo/dependency_mean" in logs[0]  # VPPO logs once a rollout
    assert any("PAPO's masked input is their unchanged prompt" in r.message for r in caplog.records)


def test_config_checks_and_which_configs_run_the_perturbed_pass():
    base = dict(output_dir="x", use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match="VPPOConfig.papo_coef must be non-negative"):
        VPPOConfig(**base, papo_coef=-0.1)
    with pytest.raises(ValueError, match="VPPOConfig.papo_masked_entropy_coef"):
        VPPOConfig(**base, papo_masked_entropy_coef=-1.0)
    with pytest.raises(ValueError, match="VPPOConfig.papo_kl_estimator"):
        VPPOConfig(**base, papo_kl_estimator="full")
    with pytest.raises(ValueError, match="VPPOConfig.papo_kl_clip"):
        VPPOConfig(**base, papo_kl_clip=0.0)
    with pytest.raises(ValueError, match="VPPOConfig.papo_coef, papo_entropy_coef"):
        VPPOConfig(**base, papo_coef=0.02, loss_type="cispo", nll_coef=0.0)
    dapo = dict(base, token_selection="none", use_tas=False)
    assert not VPPOConfig(**dapo).needs_perturbed_pass
    assert not VPPOConfig(**dapo, loss_type="grpo").needs_perturbed_pass
    assert not VPPOConfig(**dapo, papo_entropy_coef=0.05).needs_perturbed_pass
    assert VPPOConfig(**dapo, papo_entropy_coef=0.05).uses_papo
    assert VPPOConfig(**dapo, papo_coef=0.01).needs_perturbed_pass
    assert VPPOConfig(**dapo, papo_masked_entropy_coef=0.01).needs_perturbed_pass
    assert VPPOConfig(**base).needs_perturbed_pass and not VPPOConfig(**base).uses_papo


# ------------------------------------------------------------------ papo_masked_grad (official
# RECOMPUTE_AUG_LOG_PROBS): the masked log-probs from a forward with gradient in the update.
def _logps_with_grad(trainer, output, pixel_values):
    """Sampled-token log-probs [B, T] of one full-width forward of the model, with gradient."""
    ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
    attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
    width = output["completion_ids"].size(1)
    logits = trainer.model(
        input_ids=ids,
        attention_mask=attention,
        pixel_values=pixel_values,
        image_grid_thw=output["image_grid_thw"],
        mm_token_type_ids=output["mm_token_type_ids"],
    ).logits
    logits = logits[:, -width - 1 : -1].float() / trainer.temperature
    logps = torch.log_softmax(logits, dim=-1).gather(-1, output["completion_ids"][..., None])
    return logps.squeeze(-1)


def _parameter_grad(trainer, loss):
    trainer.model.zero_grad(set_to_none=True)
    loss.backward()
    grads = [
        p.grad.flatten() if p.grad is not None else torch.zeros(p.numel())
        for p in trainer.model.parameters()
    ]
    trainer.model.zero_grad(set_to_none=True)
    return torch.cat(grads)


def test_masked_grad_gradient_equals_two_forwards_with_gradient(tmp_path, monkeypatch):
    trainer = _trainer(
        tmp_path,
        per_device_train_batch_size=8,
        num_generations=4,
        disable_dropout=True,
        papo_masked_grad=True,
        **PAPO,
    )
    perturbed, no_grad_perturbed_passes = [], []
    original, scoring = trainer.perturb_pixel_values, trainer._scoring_pass
    monkeypatch.setattr(
        trainer,
        "perturb_pixel_values",
        lambda *a: perturbed.append(original(*a)) or perturbed[-1],
    )
    monkeypatch.setattr(
        trainer,
        "_scoring_pass",
        lambda *a, **k: no_grad_perturbed_passes.append(k.get("dependency")) or scoring(*a, **k),
    )
    trainer.model.train()
    output = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    # The masked images are drawn once and kept; θ_old's masked pass is not run at all.
    assert len(perturbed) == 1 and torch.equal(output["papo_masked_pixel_values"], perturbed[0])
    assert not torch.equal(perturbed[0], output["pixel_values"])
    assert "papo_masked_logps" not in output and not any(no_grad_perturbed_passes)

    trainer.current_gradient_accumulation_steps = 1
    grad = _parameter_grad(trainer, trainer.compute_loss(trainer.model, output))
    saved = {name: getattr(trainer.args, name) for name in PAPO_COEFS}
    for name in PAPO_COEFS:
        setattr(trainer.args, name, 0.0)
    try:
        base = _parameter_grad(trainer, trainer.compute_loss(trainer.model, output))
    finally:
        for name, value in saved.items():
            setattr(trainer.args, name, value)

    mask = output["completion_mask"].bool()
    real = _logps_with_grad(trainer, output, output["pixel_values"])
    masked = _logps_with_grad(trainer, output, perturbed[0])
    coefs = dict(
        entropy_coef=0.05, masked_entropy_coef=0.03, num_items=output["num_items_in_batch"]
    )
    reference = _parameter_grad(
        trainer, papo_loss(real, masked, mask, 0.02, masked_grad=True, **coefs)
    )
    scale = reference.abs().max()
    assert scale > 0
    # float32: the trainer's forwards against one full-width forward each, to 1e-4 of the largest entry.
    assert (grad - base - reference).abs().max() <= 1e-4 * scale
    # The gradient through the masked forward is a real part of it: detaching that side moves the
    # gradient by far more than the tolerance.
    real = _logps_with_grad(trainer, output, output["pixel_values"])
    masked = _logps_with_grad(trainer, output, perturbed[0]).detach()
    detached = _parameter_grad(trainer, papo_loss(real, masked, mask, 0.02, **coefs))
    assert (detached - reference).abs().max() > 1e-2 * scale


@pytest.mark.parametrize("perturbation", ["blacken_image", "none"])
def test_masked_grad_training_runs_a_masked_forward_with_gradient_per_micro_batch(
    tmp_path, monkeypatch, perturbation
):
    steps, micro = 2, 2
    trainer = _trainer(
        tmp_path,
        per_device_train_batch_size=micro,
        num_generations=2,
        steps_per_generation=steps,
        gradient_accumulation_steps=steps,
        max_steps=2,
        papo_masked_grad=True,
        **dict(PAPO, perturbation=perturbation),
    )
    vision_ids = set(trainer.vision.pad_token_ids_to_ban)
    forwards = []  # (has pixel_values, has a vision token) of every forward with gradient

    def record(module, args, kwargs):
        if torch.is_grad_enabled():
            ids = kwargs["input_ids"]
            has_vision = bool(sum((ids == t).sum() for t in vision_ids))
            forwards.append((kwargs.get("pixel_values") is not None, has_vision, kwargs))

    trainer.model.register_forward_pre_hook(record, with_kwargs=True)
    trainer.train()
    micro_batches = 2 * steps  # two optimizer steps, one rollout each, 2 micro-batches of 2 rows
    assert len(forwards) == 2 * micro_batches  # the loss pass, then the masked pass
    for real, masked in zip(forwards[::2], forwards[1::2], strict=True):
        assert real[:2] == (True, True)
        if perturbation == "none":
            assert masked[:2] == (False, False)  # the prompt without its image
        else:
            assert masked[:2] == (True, True)
            assert not torch.equal(masked[2]["pixel_values"], real[2]["pixel_values"])
            assert torch.equal(masked[2]["input_ids"], real[2]["input_ids"])
    logs = [h for h in trainer.state.log_history if "papo/kl" in h]
    assert logs and all(h["papo/kl"] > 0 for h in logs)
    assert not any("papo/perturbation_time" in h for h in trainer.state.log_history)


def test_masked_grad_config_checks():
    base = dict(output_dir="x", use_cpu=True, bf16=False, token_selection="none", use_tas=False)
    with pytest.raises(ValueError, match="VPPOConfig.papo_masked_grad needs a PAPO term"):
        VPPOConfig(**base, papo_masked_grad=True)
    with pytest.raises(ValueError, match="VPPOConfig.papo_masked_grad needs a PAPO term"):
        VPPOConfig(**base, papo_masked_grad=True, papo_entropy_coef=0.05)
    papo = VPPOConfig(**base, papo_masked_grad=True, papo_coef=0.01)
    assert papo.needs_perturbation and not papo.needs_perturbed_pass
    vppo = VPPOConfig(
        output_dir="x", use_cpu=True, bf16=False, papo_coef=0.01, papo_masked_grad=True
    )
    assert vppo.needs_perturbed_pass  # VPPO's dependency still needs θ_old's perturbed pass


def test_masked_grad_refuses_an_image_layout_it_cannot_cut_by_row(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path, papo_masked_grad=True, **PAPO)
    trainer.model.train()
    scored = {
        "prompt_ids": torch.ones(4, 3, dtype=torch.long),
        "num_tiles": [1, 1, 1, 1],  # a tiled layout (e.g. InternVL's): TRL's full-width split
        "pixel_values": torch.zeros(4, 3),
        "papo_masked_pixel_values": torch.zeros(4, 3),
    }
    monkeypatch.setattr(trainer, "_generate_and_score_completions", lambda inputs: scored)
    with pytest.raises(
        ValueError, match=r"papo_masked_grad=True .*\['num_tiles'\].*set papo_masked_grad=False"
    ):
        trainer._prepare_inputs([])
