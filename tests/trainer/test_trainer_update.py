"""The padding-free update: each optimizer step's gradient equals TRL's full-width one.

TRL cuts a shuffled generation batch into micro-batches as wide as the whole batch. VPPOTrainer
keeps the rows TRL gives each optimizer step, regroups them by length where the loss allows it and
trims every micro-batch to its own widths (`update_micro_batches`). Here both are run through the
real `compute_loss` + backward of a tiny float32 trainer (VPPO's [B, T] advantages with TGF zeros,
the NLL term, clipped ratios from perturbed old log-probs) and the summed gradients are compared.
Tolerance: 1e-5 of the largest gradient entry (float32 summation order; measured ~1e-7).
"""

from __future__ import annotations

import pytest
import torch
from test_trainer_scoring import _shorten
from test_trainer_vppo import _trainer
from trl.trainer.utils import (
    shuffle_sequence_dict,
    split_pixel_values_by_grid,
    split_tensor_dict,
    unsplit_pixel_values_by_grid,
)

from vppo.trainer.batching import update_micro_batches, update_window

pytestmark = pytest.mark.slow

MICRO, STEPS = 2, 4  # 4 micro-batches of 2 rows: one optimizer step per generation batch


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A tiny VPPO trainer and one scored generation batch of 8 rows with varied completion lengths."""
    trainer = _trainer(
        tmp_path_factory.mktemp("update"),
        per_device_train_batch_size=MICRO,
        num_generations=2,
        steps_per_generation=STEPS,
        gradient_accumulation_steps=STEPS,
        max_completion_length=10,
        nll_coef=0.1,
        disable_dropout=True,
    )
    trainer.model.train()
    inputs = next(iter(trainer.get_train_dataloader()))
    output = trainer._generate_and_score_completions(inputs)
    output = _shorten(output, trainer._tokenizer.pad_token_id)
    output["advantages"] = output["advantages"] * output["completion_mask"]
    assert output["advantages"].dim() == 2 and (output["advantages"] == 0).any()  # TGF's zeros
    # Old log-probs away from the current ones, so that some ratios fall outside the clip range.
    noise = torch.randn(output["completion_mask"].shape, generator=torch.Generator().manual_seed(0))
    current = trainer._scoring_pass(output, None, old_logps=True)["logps"]
    output["old_per_token_logps"] = (current + 0.5 * noise) * output["completion_mask"]
    return trainer, output


def _trl_micro_batches(output, seed):
    """TRL 1.16's `_prepare_inputs` split, verbatim."""
    torch.manual_seed(seed)
    batch = shuffle_sequence_dict(split_pixel_values_by_grid(dict(output)))
    return [unsplit_pixel_values_by_grid(b) for b in split_tensor_dict(batch, STEPS)]


def _ours(trainer, output, seed, window):
    torch.manual_seed(seed)
    order = torch.randperm(output["prompt_ids"].size(0)).tolist()
    return update_micro_batches(output, order, MICRO, window, trainer._tokenizer.pad_token_id)


def _gradient(trainer, micro_batches):
    """The accumulated gradient of one optimizer step, flattened, and the tokens fed to the forwards."""
    model = trainer.model
    model.zero_grad(set_to_none=True)
    trainer.current_gradient_accumulation_steps = STEPS
    tokens = 0
    for micro in micro_batches:
        trainer.compute_loss(model, micro).backward()
        tokens += micro["prompt_ids"].numel() + micro["completion_ids"].numel()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return grads, tokens


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo", "bnpo"])
def test_each_optimizer_step_gradient_equals_trls_full_width_one(scored, loss_type):
    trainer, output = scored
    trainer.loss_type = trainer.args.loss_type = loss_type
    try:
        window = trainer._regroup_window()
        assert window == (1 if loss_type == "bnpo" else STEPS)
        reference, full_tokens = _gradient(trainer, _trl_micro_batches(output, seed=3))
        ours, trimmed_tokens = _gradient(trainer, _ours(trainer, output, seed=3, window=window))
    finally:
        trainer.loss_type = trainer.args.loss_type = "dapo"
    assert reference.abs().max() > 0
    assert (ours - reference).abs().max() <= 1e-5 * reference.abs().max()
    assert trimmed_tokens < full_tokens


def test_the_comparison_sees_a_wrong_regrouping(scored):
    """bnpo divides by each micro-batch's token count: regrouping its rows changes the gradient."""
    trainer, output = scored
    trainer.loss_type = trainer.args.loss_type = "bnpo"
    try:
        reference, _ = _gradient(trainer, _trl_micro_batches(output, seed=3))
        regrouped, _ = _gradient(trainer, _ours(trainer, output, seed=3, window=STEPS))
    finally:
        trainer.loss_type = trainer.args.loss_type = "dapo"
    assert (regrouped - reference).abs().max() > 1e-3 * reference.abs().max()


def test_the_80_20_entropy_mask_keeps_trls_gradient_and_its_rows(scored):
    """TRL's top_entropy_quantile is a quantile over each micro-batch's response tokens: its rows are
    never regrouped (window 1), only trimmed, and the trimmed step's gradient is TRL's full-width
    one; regrouping them would change it."""
    trainer, output = scored
    trainer.top_entropy_quantile = trainer.args.top_entropy_quantile = 0.2
    try:
        assert trainer._regroup_window() == 1
        reference, full_tokens = _gradient(trainer, _trl_micro_batches(output, seed=3))
        ours, trimmed_tokens = _gradient(trainer, _ours(trainer, output, seed=3, window=1))
        regrouped, _ = _gradient(trainer, _ours(trainer, output, seed=3, window=STEPS))
        trainer.top_entropy_quantile = trainer.args.top_entropy_quantile = 1.0
        unmasked, _ = _gradient(trainer, _ours(trainer, output, seed=3, window=1))
    finally:
        trainer.top_entropy_quantile = trainer.args.top_entropy_quantile = 1.0
    assert reference.abs().max() > 0
    assert (ours - reference).abs().max() <= 1e-5 * reference.abs().max()
    assert trimmed_tokens < full_tokens
    assert (regrouped - reference).abs().max() > 1e-3 * reference.abs().max()
    assert (unmasked - reference).abs().max() > 1e-2 * reference.abs().max()  # the mask is live


def test_micro_batches_keep_trls_rows_per_optimizer_step_and_trim_every_per_token_key(scored):
    trainer, output = scored
    trl = _trl_micro_batches(output, seed=5)
    ours = _ours(trainer, output, seed=5, window=2)  # two optimizer steps of 2 micro-batches each
    key = output["completion_ids"].sum(-1) * 1000 + output["prompt_ids"].sum(
        -1
    )  # a row fingerprint
    assert key.unique().numel() == key.numel()

    def rows(micro):
        return sorted(
            (micro["completion_ids"].sum(-1) * 1000 + micro["prompt_ids"].sum(-1)).tolist()
        )

    for step in range(2):
        assert sorted(rows(trl[2 * step]) + rows(trl[2 * step + 1])) == sorted(
            rows(ours[2 * step]) + rows(ours[2 * step + 1])
        )
    for micro in ours:
        width = micro["completion_mask"].size(1)
        assert micro["completion_mask"][:, -1].any() and micro["prompt_mask"][:, 0].any()  # trimmed
        for name in ("completion_ids", "advantages", "old_per_token_logps"):
            assert micro[name].shape == (MICRO, width), name
        assert micro["num_items_in_batch"] == output["num_items_in_batch"]
        assert micro["pixel_values"].size(0) == int(micro["image_grid_thw"].prod(-1).sum())


def test_update_window_is_the_micro_batches_that_always_share_an_optimizer_step():
    assert update_window(96, 32) == 32  # the 7B recipe: 3 updates per rollout
    assert update_window(4, 8) == 4  # two generation batches per optimizer step
    assert update_window(6, 4) == 1  # steps cross generation batches unevenly: trim only
    assert update_window(1, 1) == 1


def test_the_trainer_buffers_the_padding_free_micro_batches(scored, monkeypatch):
    """`_prepare_inputs` draws TRL's permutation and buffers `update_micro_batches` of the scored batch."""
    trainer, output = scored
    monkeypatch.setattr(trainer, "_generate_and_score_completions", lambda batch: dict(output))
    trainer._step, trainer._buffered_inputs = 0, None
    torch.manual_seed(11)
    first = trainer._prepare_inputs(None)
    buffered = trainer._buffered_inputs
    expected = _ours(trainer, output, seed=11, window=trainer._regroup_window())
    assert len(buffered) == STEPS and first is buffered[0]
    for micro, want in zip(buffered, expected, strict=True):
        assert micro.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(micro[key], value), key
    full = STEPS * MICRO * (output["prompt_ids"].size(1) + output["completion_ids"].size(1))
    assert sum(m["prompt_ids"].numel() + m["completion_ids"].numel() for m in buffered) < full
    trainer._step = 1
    assert (
        trainer._prepare_inputs(None) is buffered[1]
    )  # no new rollout inside the generation batch
    # The next rollout generates with the previous one's micro-batches already released.
    held = []
    monkeypatch.setattr(
        trainer,
        "_generate_and_score_completions",
        lambda batch: held.append(trainer._buffered_inputs) or dict(output),
    )
    trainer._step = STEPS
    trainer._prepare_inputs(None)
    assert held == [None] and trainer._buffered_inputs is not buffered
    trainer._step, trainer._buffered_inputs = 0, None


def test_per_token_ratios_are_trimmed_and_per_sequence_ones_kept():
    def batch(ratio):
        return {
            "prompt_ids": torch.tensor([[0, 5, 6], [0, 0, 7], [4, 5, 6], [0, 0, 7]]),
            "prompt_mask": torch.tensor([[0, 1, 1], [0, 0, 1], [1, 1, 1], [0, 0, 1]]),
            "completion_ids": torch.tensor(
                [[8, 9, 0, 0], [8, 0, 0, 0], [8, 9, 9, 9], [8, 0, 0, 0]]
            ),
            "completion_mask": torch.tensor(
                [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
            ),
            "advantages": torch.arange(16.0).view(4, 4),
            "importance_sampling_ratio": ratio,
            "num_items_in_batch": torch.tensor(8),
        }

    per_token = torch.arange(16.0).view(4, 4) / 10
    micro = update_micro_batches(batch(per_token), [0, 1, 2, 3], 2, 2, pad_token_id=0)
    # longest first: rows 2 and 0 together (width 3 + 4), rows 1 and 3 (width 1 + 1)
    assert micro[0]["importance_sampling_ratio"].tolist() == per_token[[2, 0]].tolist()
    assert micro[1]["importance_sampling_ratio"].tolist() == per_token[[1, 3], :1].tolist()
    assert micro[1]["advantages"].tolist() == [[4.0], [12.0]] and micro[1][
        "prompt_ids"
    ].tolist() == [[7], [7]]
    assert all(m["num_items_in_batch"] == 8 for m in micro)
    per_sequence = torch.tensor([[0.5], [0.6], [0.7], [0.8]])
    micro = update_micro_batches(batch(per_sequence), [0, 1, 2, 3], 2, 2, pad_token_id=0)
    assert torch.equal(micro[1]["importance_sampling_ratio"], per_sequence[[1, 3]])
