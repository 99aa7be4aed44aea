"""perturbation='none': the perturbed pass runs on the prompts without their images.

What the forward sees (no image tensor, no vision token, fresh type ids), and that its log-probs
equal an independent forward of the text-only prompt the chat template makes without the image,
row by row and unpadded, on tiny float32 models; text-only rows score 0; a few training steps.
"""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from test_trainer_mixed_rows import _mixed_rows
from test_trainer_scoring import _shorten
from test_trainer_vppo import _trainer
from trl import GRPOTrainer

from vppo.perception import dependency_from_passes
from vppo.trainer import scoring as scoring_module
from vppo.trainer import trainer as trainer_module

pytestmark = pytest.mark.slow

_IMAGE_KEYS = ("pixel_values", "image_grid_thw", "pixel_attention_mask", "image_sizes")
TOLERANCE = 1e-5


def _refuse_pixel_perturbation(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("perturb_pixel_values ran with perturbation='none'")

    monkeypatch.setattr(scoring_module, "perturb_pixel_values", refuse)


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def scored(request, tmp_path_factory):
    """A trainer with perturbation='none' and a scored batch of 12 rows: 0, 1 and 2 images."""
    trainer = _trainer(
        tmp_path_factory.mktemp("no_image"),
        arch=request.param,
        dataset=Dataset.from_list(_mixed_rows(6)),
        per_device_train_batch_size=12,
        num_generations=2,
        max_completion_length=10,
        perturbation="none",
    )
    trainer.args.per_device_train_batch_size = 3  # chunks of at most 3 rows, each its own widths
    trainer.model.train()
    inputs = next(iter(trainer.get_train_dataloader()))
    output = GRPOTrainer._generate_and_score_completions(trainer, inputs)
    assert sorted(set(output["num_images"])) == [0, 1, 2]
    return trainer, inputs, _shorten(output, trainer._tokenizer.pad_token_id)


class _Forwards:
    """The keyword inputs of every no-grad forward of the model, in order."""

    def __init__(self, model):
        self.calls: list[dict] = []
        self._handle = model.register_forward_pre_hook(self._keep, with_kwargs=True)

    def _keep(self, module, args, kwargs):
        if not torch.is_grad_enabled():
            self.calls.append(dict(kwargs))

    def close(self):
        self._handle.remove()


def _text_only_logits(trainer, inputs, output, row):
    """Logits [n, V] predicting row's completion tokens: one unpadded forward of the prompt the chat
    template makes without the row's images, followed by the completion."""
    processor = trainer.processing_class
    messages = [
        {
            **m,
            "content": m["content"]
            if isinstance(m["content"], str)
            else [p for p in m["content"] if p.get("type") != "image"],
        }
        for m in inputs[row]["prompt"]
    ]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt = processor(text=[text], return_tensors="pt")["input_ids"][0]
    n = int(output["completion_mask"][row].sum())
    ids = torch.cat([prompt, output["completion_ids"][row, :n]])[None]
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    return logits[0, prompt.numel() - 1 : prompt.numel() + n - 1].float() / trainer.temperature


def _text_only_logps(trainer, inputs, output):
    expected = torch.zeros(output["completion_mask"].shape)
    for row in range(expected.size(0)):
        logits = _text_only_logits(trainer, inputs, output, row)
        n = logits.size(0)
        tokens = output["completion_ids"][row, :n]
        expected[row, :n] = torch.log_softmax(logits, -1).gather(1, tokens[:, None])[:, 0]
    return expected


def test_the_perturbed_forward_sees_no_image_and_no_vision_token(scored, monkeypatch):
    trainer, inputs, output = scored
    _refuse_pixel_perturbation(monkeypatch)
    assert trainer.perturb_pixel_values(output, inputs, torch.Generator()) is None
    vision_ids = torch.tensor(trainer.vision.pad_token_ids_to_ban)
    forwards = _Forwards(trainer.model)
    try:
        scores = trainer._scoring_pass(output, None, old_logps=True, dependency=True)
    finally:
        forwards.close()
    real, perturbed = forwards.calls[0::2], forwards.calls[1::2]
    assert len(real) == len(perturbed) >= 3  # one real and one no-image forward per chunk
    assert any("pixel_values" in call for call in real)
    for call in perturbed:
        assert not any(key in call for key in _IMAGE_KEYS), sorted(call)
        assert "position_ids" not in call
        assert not torch.isin(call["input_ids"], vision_ids).any()
        # the type ids are rebuilt for the new ids: as wide, and no image token left to mark
        assert call["mm_token_type_ids"].shape == call["input_ids"].shape
        assert not call["mm_token_type_ids"].any()
    # ... and it is shorter: every image's tokens are gone
    assert sum(c["input_ids"].numel() for c in perturbed) < sum(
        c["input_ids"].numel() for c in real
    )
    mask = output["completion_mask"].bool()
    assert (scores["logps_perturbed"][~mask] == 0).all()


@pytest.mark.parametrize("split", [True, False])
def test_no_image_logps_equal_a_forward_of_the_text_only_prompt(scored, monkeypatch, split):
    """Padding-free chunks (split) and TRL's full-width chunks (layouts that cannot be cut by row)."""
    trainer, inputs, output = scored
    monkeypatch.setattr(scoring_module, "splits_by_row", lambda batch: split)
    scores = trainer._scoring_pass(output, None, old_logps=True, dependency=True)
    expected = _text_only_logps(trainer, inputs, output)
    mask = output["completion_mask"].bool()
    diff = (scores["logps_perturbed"] - expected)[mask].abs().max()
    assert diff <= TOLERANCE, float(diff)
    # a text-only row's prompt is unchanged: its no-image log-probs are its real ones
    text_only = torch.tensor([c == 0 for c in output["num_images"]])
    rows = mask & text_only[:, None]
    assert rows.any()
    assert (scores["logps_perturbed"] - scores["logps"])[rows].abs().max() <= TOLERANCE
    # with images, removing them changes the log-probs
    assert (scores["logps_perturbed"] - scores["logps"])[
        mask & ~text_only[:, None]
    ].abs().max() > 1e-3


@pytest.mark.parametrize("estimator", ["k3", "kl", "jsd"])
def test_dependency_against_the_text_only_prompt(scored, estimator):
    trainer, inputs, output = scored
    trainer.args.dependency_estimator, trainer.args.kl_chunk_size = estimator, 4
    try:
        scores = trainer._dependency_scores(output, None, need_entropy=False, old_logps=True)
    finally:
        trainer.args.dependency_estimator, trainer.args.kl_chunk_size = "k3", 1024
    mask = output["completion_mask"].bool()
    real, _, _ = trainer._get_per_token_logps_and_entropies(
        trainer.model,
        torch.cat([output["prompt_ids"], output["completion_ids"]], 1),
        torch.cat([output["prompt_mask"], output["completion_mask"]], 1),
        output["completion_ids"].size(1),
        **trainer._forward_kwargs(output),
    )
    if estimator == "k3":
        expected = dependency_from_passes(
            "k3",
            mask=mask,
            logp_real=real,
            logp_perturbed=_text_only_logps(trainer, inputs, output),
            clip=trainer.args.dependency_clip,
        )
    else:  # from full logits: the real image (unpadded per row too) and the text-only prompt
        expected = torch.zeros(mask.shape)
        for row in range(mask.size(0)):
            logits_none = _text_only_logits(trainer, inputs, output, row)
            n = logits_none.size(0)
            ids = torch.cat([output["prompt_ids"], output["completion_ids"]], 1)[row : row + 1]
            attention = torch.cat([output["prompt_mask"], output["completion_mask"]], 1)[
                row : row + 1
            ]
            kwargs = {
                k: v
                for k, v in trainer._forward_kwargs(output).items()
                if k not in ("num_images", "num_tiles")
            }
            kwargs = _row_vision_kwargs(kwargs, output, row)
            with torch.no_grad():
                logits = trainer.model(input_ids=ids, attention_mask=attention, **kwargs).logits
            t = output["completion_ids"].size(1)
            logits_real = logits[0, -t - 1 : -1][:n].float() / trainer.temperature
            p = torch.log_softmax(logits_real, -1)
            q = torch.log_softmax(logits_none, -1)
            if estimator == "kl":
                expected[row, :n] = (p.exp() * (p - q)).sum(-1)
            else:
                m = torch.logsumexp(torch.stack([p, q]), 0) - math.log(2)
                expected[row, :n] = 0.5 * (p.exp() * (p - m)).sum(-1) + 0.5 * (
                    q.exp() * (q - m)
                ).sum(-1)
    diff = (scores["dependency"] - expected)[mask].abs().max()
    assert diff <= TOLERANCE, float(diff)
    assert expected[mask].sum() > 0
    text_only = torch.tensor([c == 0 for c in output["num_images"]])
    assert scores["dependency"][mask & text_only[:, None]].abs().max() <= TOLERANCE


def test_text_only_rows_get_dependency_zero_and_image_rows_do_not(scored, monkeypatch):
    trainer, inputs, output = scored
    _refuse_pixel_perturbation(monkeypatch)
    deps = []
    original = trainer_module.token_advantages

    def recording(advantages, dep, mask, **kwargs):
        deps.append(dep.clone())
        return original(advantages, dep, mask, **kwargs)

    monkeypatch.setattr(trainer_module, "token_advantages", recording)
    trainer._apply_vppo(dict(output, advantages=output["advantages"].clone()), inputs)
    (dep,) = deps
    text_only = torch.tensor([c == 0 for c in output["num_images"]])
    assert (dep[text_only] == 0).all()
    assert (dep[~text_only].sum(-1) > 0).all()


def _row_vision_kwargs(kwargs, output, row):
    """The vision tensors of one row of a Qwen scored batch (rows of pixel_values per image)."""
    counts = output["num_images"]
    first, count = sum(counts[:row]), counts[row]
    out = {k: v[row : row + 1] for k, v in kwargs.items() if k in ("mm_token_type_ids",)}
    if count:
        per_image = output["image_grid_thw"].prod(-1)
        start = int(per_image[:first].sum())
        stop = start + int(per_image[first : first + count].sum())
        out["pixel_values"] = output["pixel_values"][start:stop]
        out["image_grid_thw"] = output["image_grid_thw"][first : first + count]
    return out


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl", "smolvlm"])
def test_training_steps_with_no_image_reference(tmp_path, monkeypatch, arch):
    _refuse_pixel_perturbation(monkeypatch)
    deps = []
    original = scoring_module.ScoringMixin._dependency_scores

    def recording(self, *args, **kwargs):
        scores = original(self, *args, **kwargs)
        deps.append(scores)
        return scores

    monkeypatch.setattr(scoring_module.ScoringMixin, "_dependency_scores", recording)
    trainer = _trainer(tmp_path, arch, perturbation="none")
    trainer.train()
    logs = [h for h in trainer.state.log_history if "vppo/kept_token_frac" in h]
    assert len(logs) == 2
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)
    assert deps and all("logps_perturbed" in s for s in deps)
    assert any(float(s["dependency"].sum()) > 0 for s in deps)


@pytest.mark.parametrize("with_vppo", [False, True])
def test_papo_masked_logps_are_the_no_image_logps(scored, monkeypatch, with_vppo):
    """PAPO reads the same pass: its masked log-probs are the text-only prompt's."""
    trainer, inputs, output = scored
    _refuse_pixel_perturbation(monkeypatch)
    args = trainer.args
    saved = (args.papo_coef, args.token_selection, args.use_tas)
    args.papo_coef = 0.02
    if not with_vppo:  # PAPO alone: the perturbed pass without a dependency estimate
        args.token_selection, args.use_tas = "none", False
    try:
        shaped = trainer._apply_vppo(dict(output, advantages=output["advantages"].clone()), inputs)
    finally:
        args.papo_coef, args.token_selection, args.use_tas = saved
    mask = output["completion_mask"].bool()
    expected = _text_only_logps(trainer, inputs, output)
    diff = (shaped["papo_masked_logps"] - expected)[mask].abs().max()
    assert diff <= TOLERANCE, float(diff)
