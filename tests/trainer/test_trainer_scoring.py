"""VPPOTrainer's no-grad passes: padding skipped, exact KL chunked, old log-probs on kept rows only.

Every test compares the new path with a reference computed the old way (TRL's full-width chunks,
naive full logits) on tiny float32 models.
"""

from __future__ import annotations

import pytest
import torch
from test_trainer_vppo import _dataset, _trainer
from trl import GRPOTrainer

from vppo.trainer import scoring as scoring_module
from vppo.trainer.batching import length_sorted_chunks, trim_padding
from vppo.trainer.scoring import full_lm_head

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------------------ batching helpers
def test_length_sorted_chunks_longest_first_with_bounded_padding():
    prompt = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 0, 1], [1, 1, 1], [0, 1, 1]])
    completion = torch.tensor([[1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]])
    # real lengths 3, 6, 3, 4, 5: sorted 1, 4, 3, 0, 2
    assert length_sorted_chunks(prompt, completion, 2, max_padding=1.0) == [[1, 4], [3, 0], [2]]
    # [1, 4] trimmed is 2 x (3 + 3) = 12 tokens for 11 real ones: more than 2% padding
    assert length_sorted_chunks(prompt, completion, 2, max_padding=0.02) == [
        [1],
        [4],
        [3],
        [0],
        [2],
    ]
    # ... but within the default 10%
    assert length_sorted_chunks(prompt, completion, 2) == [[1, 4], [3], [0], [2]]
    # the most expensive chunk is halved until every process has as many chunks
    assert length_sorted_chunks(prompt, completion, 2, max_padding=1.0, num_chunks=4) == [
        [1],
        [4],
        [3, 0],
        [2],
    ]
    with pytest.raises(ValueError, match="rows_per_chunk"):
        length_sorted_chunks(prompt, completion, 0)
    with pytest.raises(ValueError, match="num_chunks"):
        length_sorted_chunks(prompt, completion, 2, num_chunks=6)


def test_trim_padding_drops_only_columns_that_are_padding_in_every_row():
    batch = {
        "prompt_ids": torch.tensor([[0, 0, 5, 6], [0, 0, 0, 7]]),
        "prompt_mask": torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1]]),
        "completion_ids": torch.tensor([[8, 9, 0, 0], [8, 0, 0, 0]]),
        "completion_mask": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]]),
        "mm_token_type_ids": torch.arange(16).view(2, 8),
        "num_images": [1, 1],
    }
    out = trim_padding(batch)
    assert out["prompt_ids"].tolist() == [[5, 6], [0, 7]]
    assert out["completion_mask"].tolist() == [[1, 1], [1, 0]]
    assert out["mm_token_type_ids"].tolist() == [[2, 3, 4, 5], [10, 11, 12, 13]]
    assert out["num_images"] == [1, 1]


# ------------------------------------------------------------------------------ trainer passes
def _shorten(output, pad_id):
    """Give the completions varied lengths (as EOS would), so trimming has padding to skip."""
    out = dict(output)
    mask, ids = out["completion_mask"].clone(), out["completion_ids"].clone()
    for row in range(mask.size(0)):
        keep = 1 + (3 * row) % mask.size(1)
        mask[row, keep:] = 0
        ids[row, keep:] = pad_id
    out["completion_mask"], out["completion_ids"] = mask, ids
    return out


class _ForwardCounter:
    """Rows and tokens of the no-grad forwards of `trainer.model` (padding included)."""

    def __init__(self, trainer):
        self.rows = self.tokens = 0
        trainer.model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        if not torch.is_grad_enabled() and "past_key_values" not in kwargs:
            self.rows += kwargs["input_ids"].size(0)
            self.tokens += kwargs["input_ids"].numel()


@pytest.fixture(scope="module", params=["qwen2_5_vl", "smolvlm"])
def scored(request, tmp_path_factory):
    """A tiny trainer and one scored batch of 8 rows (varied prompt and completion lengths)."""
    trainer = _trainer(
        tmp_path_factory.mktemp("scoring"),
        arch=request.param,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=10,
    )
    trainer.args.per_device_train_batch_size = 3  # chunks of 3 rows: 3 chunks of different widths
    trainer.model.train()
    inputs = next(iter(trainer.get_train_dataloader()))
    output = GRPOTrainer._generate_and_score_completions(trainer, inputs)
    return trainer, inputs, _shorten(output, trainer._tokenizer.pad_token_id)


def _full_width(trainer, output, pixel_values=None, entropy=False):
    """Today's pass: TRL's own chunks of full width."""
    kwargs = trainer._forward_kwargs(output)
    if pixel_values is not None:
        kwargs["pixel_values"] = pixel_values
    ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
    attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
    with torch.no_grad():
        return GRPOTrainer._get_per_token_logps_and_entropies(
            trainer,
            trainer.model,
            ids,
            attention,
            output["completion_ids"].size(1),
            batch_size=trainer.args.per_device_train_batch_size,
            compute_entropy=entropy,
            **kwargs,
        )


def test_padding_free_logps_equal_full_width_logps(scored):
    trainer, _, output = scored
    counter = _ForwardCounter(trainer)
    scores = trainer._scoring_pass(output, None, old_logps=True, entropy=True)
    trimmed_tokens = counter.tokens
    logps, entropies, _ = _full_width(trainer, output, entropy=True)
    assert counter.tokens - trimmed_tokens > trimmed_tokens  # the full-width pass computed more
    torch.testing.assert_close(scores["logps"], logps, atol=1e-6, rtol=0)
    mask = output["completion_mask"].bool()
    torch.testing.assert_close(scores["entropies"][mask], entropies[mask], atol=1e-6, rtol=0)
    assert (scores["logps"][~mask] == 0).all() and (logps[~mask] == 0).all()


def _naive_kl(trainer, output, pixel_values):
    """KL(π_I ‖ π_I') from full [B, L, V] logits of the unfused forward."""
    log_probs = []
    for pv in (output["pixel_values"], pixel_values):
        kwargs = {
            k: v
            for k, v in trainer._forward_kwargs(output).items()
            if k not in ("num_images", "num_tiles")
        }
        kwargs["pixel_values"] = pv
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        with torch.no_grad():
            logits = trainer.model(input_ids=ids, attention_mask=attention, **kwargs).logits
        t = output["completion_ids"].size(1)
        log_probs.append(
            torch.log_softmax(logits[:, -t - 1 : -1].float() / trainer.temperature, dim=-1)
        )
    real, perturbed = log_probs
    kl = (real.exp() * (real - perturbed)).sum(-1)
    return kl * output["completion_mask"]


def test_exact_kl_equals_naive_full_logits_kl(scored):
    trainer, inputs, output = scored
    trainer.args.dependency_estimator, trainer.args.kl_chunk_size = "kl", 4
    try:
        perturbed = trainer.perturb_pixel_values(output, inputs, torch.Generator().manual_seed(0))
        dep, _ = trainer.compute_visual_dependency(dict(output), perturbed, need_entropy=False)
    finally:
        trainer.args.dependency_estimator, trainer.args.kl_chunk_size = "k3", 1024
    expected = _naive_kl(trainer, output, perturbed)
    assert expected.sum() > 0
    torch.testing.assert_close(dep, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("estimator", ["k3", "kl", "jsd"])
def test_dependency_and_advantages_equal_the_full_width_path(scored, monkeypatch, estimator):
    trainer, inputs, output = scored
    deps, advantages = [], []
    original = trainer._dependency_scores

    def recording(*args, **kwargs):
        scores = original(*args, **kwargs)
        deps.append(scores["dependency"])
        return scores

    monkeypatch.setattr(trainer, "_dependency_scores", recording)
    trainer.args.dependency_estimator = estimator
    try:
        for split in (
            True,
            False,
        ):  # False: the full-width branch (layouts that cannot be cut by row)
            monkeypatch.setattr(scoring_module, "splits_by_row", lambda batch, split=split: split)
            shaped = trainer._apply_vppo(
                dict(output, advantages=output["advantages"].clone()), inputs
            )
            advantages.append(shaped["advantages"])
    finally:
        trainer.args.dependency_estimator = "k3"
    torch.testing.assert_close(deps[0], deps[1], atol=1e-6, rtol=0)
    # Same TGF tokens; TAS divides by the batch's spread of mean dependency, which magnifies float noise.
    assert torch.equal(advantages[0] != 0, advantages[1] != 0)
    torch.testing.assert_close(advantages[0], advantages[1], atol=1e-6, rtol=1e-4)
    assert advantages[0].abs().sum() > 0


def test_full_lm_head_is_the_plain_weight_when_not_sharded():
    head = torch.nn.Linear(4, 6, bias=True)
    with full_lm_head(head) as (weight, bias):
        assert torch.equal(weight, head.weight) and torch.equal(bias, head.bias)
        assert not weight.requires_grad


# ------------------------------------------------------------------------------ old log-probs
def _official_trainer(tmp_path, **overrides):
    """steps_per_generation = 2 × gradient_accumulation_steps: TRL needs old log-probs."""
    settings = dict(
        dynamic_sampling=True,
        dynamic_sampling_max_rounds=3,
        per_device_train_batch_size=4,
        num_generations=2,
        steps_per_generation=2,
        max_steps=2,
        max_completion_length=6,
    )
    settings.update(overrides)
    return _trainer(tmp_path, dataset=_dataset(32), **settings)


@pytest.mark.parametrize(
    "method, passes", [({"token_selection": "none", "use_tas": False}, 1), ({}, 2)]
)
def test_old_logps_are_computed_once_on_the_kept_rows(tmp_path, method, passes):
    trainer = _official_trainer(tmp_path, **method)
    assert trainer._trl_needs_old_logps()
    trainer.model.train()
    counter = _ForwardCounter(trainer)
    scored_rows = []
    original = GRPOTrainer._generate_and_score_completions

    def counting(self, inputs):
        scored_rows.append(len(inputs))
        return original(self, inputs)

    GRPOTrainer._generate_and_score_completions = counting
    try:
        output = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    finally:
        GRPOTrainer._generate_and_score_completions = original
    rows = output["completion_ids"].size(0)
    assert len(scored_rows) > 1, "the test needs a refill round: some groups must be dropped"
    # No no-grad forward ran inside TRL's scoring of any round; then `passes` over the kept rows.
    assert counter.rows == passes * rows
    logps, _, _ = _full_width(trainer, output)
    torch.testing.assert_close(output["old_per_token_logps"], logps, atol=1e-6, rtol=0)


def test_pruned_rounds_give_the_batch_of_whole_rounds(tmp_path):
    """Cutting each round to its usable groups as soon as it is scored changes no row of the batch."""
    outputs = []
    for prune in (True, False):
        trainer = _official_trainer(tmp_path / str(prune), token_selection="none", use_tas=False)
        if not prune:
            trainer._prune_round = lambda *args: None
        trainer.model.train()
        torch.manual_seed(0)
        outputs.append(
            trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
        )
    assert trainer._metrics["train"]["vppo/dynamic_sampling/extra_rounds"][-1] > 0
    pruned, whole = outputs
    assert pruned.keys() == whole.keys()
    for key, value in pruned.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, whole[key], atol=1e-6, rtol=0, msg=key)
        else:
            assert value == whole[key], key
