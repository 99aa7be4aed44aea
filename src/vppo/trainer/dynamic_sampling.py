"""Dynamic sampling for `VPPOTrainer`: drop groups with uniform rewards, generate again.

After TRL scores a generation batch, `_group_filter` keeps the groups whose pass rate lies strictly
between `dynamic_sampling_low` and `dynamic_sampling_high`; while fewer groups than the batch needs
are kept, `_generate_with_dynamic_sampling` draws fresh prompts from a second, separately seeded
sampler (`_next_refill_batch`), scores them, and cuts each round to the groups it may still
contribute (`_prune_round`), for at most `dynamic_sampling_max_rounds` extra rounds. The batch is
then assembled from the rounds (`vppo.trainer.batching.plan_dynamic_sampling` / `select_rows`).
`refill_state` / `restore_refill_state` save and continue the refill stream across checkpoints.

It needs from the host trainer (a `GRPOTrainer`): `self.args` (a `VPPOConfig`), `self.accelerator`,
`self.state`, `self._metrics`, `self.num_generations`, `self.reward_func_names`,
`self.reward_weights`, `self.train_dataset`, `self._train_batch_size`, `self._get_dataloader`,
`self._tokenizer`, the `vllm_importance_sampling_*` settings, `self._score_round` (one round of
TRL's generation and scoring), `self._last_rewards_per_func` (kept by its `_calculate_rewards`) and
the refill stream's state, which the host's `__init__` sets: `self._refill_iterator` (None),
`self._refill_epoch`, `self._refill_draws` and `self._refill_skip` (0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from trl.trainer.utils import RepeatSampler

from vppo.trainer.batching import (
    group_pass_rates,
    importance_sampling_pad_value,
    plan_dynamic_sampling,
    select_rows,
)

logger = logging.getLogger(__name__)


@dataclass
class _Round:
    """One generation round of dynamic sampling, cut to the groups it may still contribute.

    `piece` is its scored batch (TRL's output) and `batch` its input rows, in the same order, both
    None once nothing of the round can be used; `keep` is bool [groups]: which of its (retained)
    groups pass the accuracy filter.
    """

    piece: dict[str, Any] | None
    batch: list[dict[str, Any]] | None
    keep: torch.Tensor


class DynamicSamplingMixin:
    """`VPPOTrainer`'s dynamic-sampling rounds and refill stream (see the module docstring for what
    it needs from the host trainer)."""

    def _group_filter(self, rows: int) -> torch.Tensor:
        """bool [rows / G]: which local groups of the last scored batch pass the accuracy filter."""
        rewards = self._last_rewards_per_func
        names = list(self.reward_func_names)
        if self.args.dynamic_sampling_reward in names:
            signal = rewards[:, names.index(self.args.dynamic_sampling_reward)]
        else:
            signal = (rewards * self.reward_weights.to(rewards.device)).nansum(dim=1)
        start = self.accelerator.process_index * rows
        rates = group_pass_rates(signal[start : start + rows], self.num_generations)
        return (rates > self.args.dynamic_sampling_low) & (rates < self.args.dynamic_sampling_high)

    def _next_refill_batch(self) -> list[dict[str, Any]]:
        """Fresh prompts for dynamic sampling, from a second sampler with its own seed."""
        while True:
            if self._refill_iterator is None:
                self._refill_epoch += 1
                local_rows = self._train_batch_size * self.args.steps_per_generation
                sampler = RepeatSampler(
                    data_source=self.train_dataset,
                    mini_repeat_count=self.num_generations,
                    batch_size=self.args.generation_batch_size // self.num_generations,
                    repeat_count=1,
                    shuffle=True,
                    # A new shuffle per refill epoch, distinct from TRL's sampler (seed + 0); the
                    # prime stride keeps epochs of nearby seeds from sharing a shuffle.
                    seed=self.args.seed + 7919 * self._refill_epoch,
                )
                skip, self._refill_draws, self._refill_skip = self._refill_skip, 0, 0
                # Building and starting a loader draws from the global RNG: keep that out of the sampling
                # stream, so a resumed run (which starts it at another step) samples as the uninterrupted one.
                with torch.random.fork_rng(devices=[]):
                    loader = self._get_dataloader(
                        dataset=self.train_dataset,
                        description="Refill",
                        batch_size=local_rows,
                        sampler_fn=lambda _dataset=None, _sampler=sampler: _sampler,
                        is_training=True,
                    )
                    self._refill_iterator = iter(loader)
                    # A resumed run continues the epoch's stream where the checkpoint left it.
                    for _ in range(skip):
                        next(self._refill_iterator)
                        self._refill_draws += 1
            try:
                batch = next(self._refill_iterator)
            except StopIteration:
                self._refill_iterator = None
                continue
            self._refill_draws += 1
            return batch

    def refill_state(self) -> dict[str, int]:
        """Where the dynamic-sampling refill stream stands: saved with every checkpoint."""
        if self._refill_iterator is None:  # the next draw starts epoch `_refill_epoch + 1` afresh
            return {"refill_epoch": self._refill_epoch, "refill_draws": 0}
        return {"refill_epoch": self._refill_epoch, "refill_draws": self._refill_draws}

    def restore_refill_state(self, state: dict[str, int]) -> None:
        """Continue the refill stream of a checkpoint's `refill_state()` exactly."""
        epoch, draws = int(state["refill_epoch"]), int(state["refill_draws"])
        self._refill_iterator = None
        self._refill_epoch = epoch - 1 if draws else epoch
        self._refill_skip = draws

    def _prune_round(self, scored: list[_Round], index: int, groups_needed: int) -> None:
        """Cut round `index` to its kept groups and the dropped groups that may still fill the batch."""
        keep = scored[index].keep
        kept_total = sum(int(r.keep.sum()) for r in scored)
        reserved = sum(
            int((~r.keep).sum()) for i, r in enumerate(scored) if i != index and r.piece is not None
        )
        room = max(0, groups_needed - kept_total - reserved)
        dropped = (~keep).nonzero().flatten().tolist()
        retained = sorted(keep.nonzero().flatten().tolist() + dropped[:room])
        if len(retained) == keep.numel():
            return
        group = self.num_generations
        if not retained:
            scored[index] = _Round(None, None, keep[:0])
            return
        rows = [g * group + j for g in retained for j in range(group)]
        piece = select_rows(
            [scored[index].piece], [(0, r) for r in rows], self._tokenizer.pad_token_id
        )
        scored[index] = _Round(piece, [scored[index].batch[r] for r in rows], keep[retained])

    def _generate_with_dynamic_sampling(
        self, inputs: list[dict[str, Any]]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The scored batch and its input rows, in the same order (rows may come from several rounds).

        Once a second round is needed, each round is cut to the groups it may contribute as soon as it
        is scored: its kept groups, plus as many dropped groups as could still have to fill the batch
        (the earliest ones, which are the ones that fill it). The batch is the same as if every round
        were kept whole.
        """
        rows = len(inputs)
        group = self.num_generations
        groups_needed = rows // group
        # The group filter reads the rewards of the round scored just before it.
        scored = [_Round(self._score_round(inputs, defer=True), inputs, self._group_filter(rows))]
        first_dropped = int((~scored[0].keep).sum())
        rounds = 0
        while rounds < self.args.dynamic_sampling_max_rounds:
            short = torch.tensor(
                float(sum(int(r.keep.sum()) for r in scored) < groups_needed),
                device=self.accelerator.device,
            )
            # Every process generates the same number of times (collectives inside TRL's scoring).
            if self.accelerator.gather(short).sum().item() == 0:
                break
            if rounds == 0:
                self._prune_round(scored, 0, groups_needed)
            batch = self._next_refill_batch()
            scored.append(
                _Round(self._score_round(batch, defer=True), batch, self._group_filter(rows))
            )
            self._prune_round(scored, len(scored) - 1, groups_needed)
            rounds += 1
        used = [i for i, r in enumerate(scored) if r.piece is not None]
        picks, filler = plan_dynamic_sampling([scored[i].keep for i in used], group, rows)
        if filler and filler < groups_needed:  # all filler: the warning after the gather
            logger.warning(
                "Dynamic sampling kept fewer informative groups than needed after %d extra rounds; "
                "%d groups with uniform rewards (zero advantage) fill the batch. Raise "
                "dynamic_sampling_max_rounds or check the task's difficulty.",
                rounds,
                filler,
            )
        if rounds == 0:
            # One round: every group is kept or fills in, so the batch is the round itself (same on
            # every process, which matters for the gather below).
            output, inputs = scored[0].piece, scored[0].batch
        else:
            pad = 1.0
            if "importance_sampling_ratio" in scored[used[0]].piece:
                pad = importance_sampling_pad_value(
                    self.vllm_importance_sampling_mode,
                    self.vllm_importance_sampling_clip_min,
                    self.vllm_importance_sampling_clip_max,
                )
            output = select_rows(
                [scored[i].piece for i in used],
                picks,
                self._tokenizer.pad_token_id,
                importance_sampling_pad=pad,
            )
            output["num_items_in_batch"] = self.accelerator.gather(
                output["num_items_in_batch"]
            ).sum()
            inputs = [scored[used[piece]].batch[row] for piece, row in picks]
        stats = torch.tensor(
            [first_dropped, groups_needed, rounds, filler],
            dtype=torch.float32,
            device=self.accelerator.device,
        )
        stats = self.accelerator.gather(stats).view(-1, 4).sum(0)
        if stats[3] == stats[1] and self.accelerator.is_main_process:
            # Every group is filler: all advantages are 0 and the policy-gradient term is 0 this step.
            trains = (
                "only the NLL term trains" if self.args.nll_coef > 0 else "the step changes nothing"
            )
            logger.warning(
                "Step %d: dynamic sampling found no group with mixed rewards in %d rounds (every group's "
                "rewards are uniform), so every advantage is 0 and %s; check the reward function and the "
                "task's difficulty.",
                self.state.global_step + 1,
                rounds + 1,
                trains,
            )
        metrics = self._metrics["train"]
        metrics["vppo/dynamic_sampling/dropped_frac"].append((stats[0] / stats[1]).item())
        metrics["vppo/dynamic_sampling/extra_rounds"].append(
            stats[2].item() / self.accelerator.num_processes
        )
        metrics["vppo/dynamic_sampling/filler_groups"].append(stats[3].item())
        return output, inputs
