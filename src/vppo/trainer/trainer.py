"""`VPPOTrainer`: TRL's GRPOTrainer with visual-dependency token credit assignment.

This is the only module that knows TRL internals. It overrides four hooks of TRL 1.16's
GRPOTrainer, each by calling `super()` and post-processing (tests/test_trainer_hooks.py fails
loudly when their signatures change):

- `_generate_and_score_completions`: after TRL scores a generation batch, (1) dynamic sampling
  drops groups whose pass rate is ≤ low or ≥ high and generates again; (2) two no-grad forward
  passes (real image, perturbed image) score every token's visual dependency; (3) TAS and TGF turn
  the [B] advantages into [B, T] per-token advantages, which TRL's loss accepts as they are.
- `_calculate_rewards`: remembers the gathered rewards so dynamic sampling can filter groups.
- `_get_per_token_logps_and_entropies` / `compute_loss`: keep the policy's per-token log-probs of
  the loss pass so the sampled-token NLL term (the official "entropy penalty") is added to TRL's
  loss rather than copying it.

TGF as zero advantage: TRL's token-mean loss divides by all response tokens, so a zero advantage on
a filtered token is exactly the official masked loss (filtered tokens still count in the
denominator).
"""

from __future__ import annotations

import hashlib
import logging
import time
from types import SimpleNamespace
from typing import Any

import torch
from transformers import ProcessorMixin
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import RepeatSampler

from vppo.algorithm import select_tokens, tas_scale, tgf_mask, token_advantages
from vppo.models import vision_layout
from vppo.perception import (
    full_kl_dependency,
    perturb_pixel_values,
    token_dependency,
    trajectory_dependency,
)
from vppo.trainer.batching import (
    group_pass_rates,
    importance_sampling_pad_value,
    plan_dynamic_sampling,
    select_rows,
)
from vppo.trainer.config import VPPOConfig

logger = logging.getLogger(__name__)

# Keys of TRL's scored batch that the model forward takes besides ids and masks.
_FORWARD_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "pixel_attention_mask",
    "spatial_shapes",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)


class _HiddenStateCapture:
    """Stands in for the model inside TRL's chunked log-prob pass and records last hidden states.

    TRL's `_get_per_token_logps_and_entropies` slices pixel values per sample chunk for every VLM
    layout; calling it with this wrapper reuses that slicing for the exact-KL estimator, which needs
    the hidden states of the completion positions instead of the sampled-token log-probs.
    """

    def __init__(self, model: torch.nn.Module, num_completion_tokens: int):
        self.model = model
        self.num_completion_tokens = num_completion_tokens
        self.hidden: list[torch.Tensor] = []

    def __call__(self, labels=None, fused_lm_head=None, **model_inputs):
        out = self.model(**model_inputs, output_hidden_states=True, logits_to_keep=1)
        t = self.num_completion_tokens
        # Position i predicts token i + 1: the completion's predictors are the T positions before the end.
        self.hidden.append(out.hidden_states[-1][:, -t - 1 : -1])
        return SimpleNamespace(log_probs=out.hidden_states[-1].new_zeros(labels.size(0), t))


class VPPOTrainer(GRPOTrainer):
    """GRPOTrainer + VPPO (arXiv 2510.09285). Use with a `VPPOConfig` and a VLM processor.

    With `token_selection="none"` and `use_tas=False` no extra forward pass runs and the trainer
    is the DAPO (or, with GRPO settings, the GRPO) baseline, sharing every other piece of code.
    """

    _tag_names = ["trl", "vppo"]
    _name = "VPPO"
    _paper = {
        "title": "Spotlight on Token Perception for Multimodal Reinforcement Learning",
        "id": "2510.09285",
    }

    def __init__(self, model, reward_funcs, args: VPPOConfig, train_dataset=None, eval_dataset=None,
                 processing_class=None, **kwargs):
        if not isinstance(args, VPPOConfig):
            raise ValueError(f"VPPOTrainer needs a VPPOConfig, got {type(args).__name__}.")
        if not isinstance(processing_class, ProcessorMixin):
            raise ValueError(
                "VPPOTrainer needs the model's processor as processing_class (a ProcessorMixin, e.g. "
                "from vppo.models.load_processor); VPPO scores tokens against images."
            )
        config = model.config if not isinstance(model, str) else None
        self.vision = vision_layout(processing_class, config)
        self._enforce_left_padding(processing_class)
        args.generation_kwargs = self._ban_vision_tokens(args, self.vision.pad_token_ids_to_ban)
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)
        if args.freeze_vision_tower or args.freeze_projector:  # before the optimizer is built
            from vppo.trainer.freezing import freeze_vision_parts

            frozen = freeze_vision_parts(self.model, vision_tower=args.freeze_vision_tower,
                                         projector=args.freeze_projector)
            logger.info("Frozen: %s parameters.", ", ".join(f"{k} {v:,}" for k, v in frozen.items() if v))
        self._last_rewards_per_func: torch.Tensor | None = None
        self._capture_logps = False
        self._captured_logps: torch.Tensor | None = None
        self._refill_iterator = None
        self._refill_epoch = 0
        self._warned_text_only = False
        if args.dynamic_sampling:
            local_rows = args.per_device_train_batch_size * args.steps_per_generation
            if local_rows % self.num_generations != 0:
                raise ValueError(
                    f"dynamic_sampling needs each process's generation batch ({local_rows} rows = "
                    "per_device_train_batch_size × steps_per_generation) to hold whole groups of "
                    f"num_generations={self.num_generations}; change one of them or set dynamic_sampling=False."
                )
            if isinstance(self.train_dataset, torch.utils.data.IterableDataset):
                raise ValueError("dynamic_sampling needs an indexable train_dataset, not an IterableDataset.")

    # ------------------------------------------------------------------------------ set-up
    @staticmethod
    def _enforce_left_padding(processor: ProcessorMixin) -> None:
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is not None and tokenizer.padding_side != "left":
            logger.warning("Setting the tokenizer's padding_side to 'left' (TRL left-pads prompts).")
            tokenizer.padding_side = "left"

    @staticmethod
    def _ban_vision_tokens(args: VPPOConfig, ids: tuple[int, ...]) -> dict[str, Any] | None:
        """Generation kwargs that keep the policy from emitting image/video placeholder tokens."""
        kwargs = dict(args.generation_kwargs or {})
        if not ids:
            return kwargs or None
        if args.use_vllm:
            bias = dict(kwargs.get("logit_bias") or {})
            bias.update({int(i): -100.0 for i in ids})
            kwargs["logit_bias"] = bias
        else:
            kwargs["suppress_tokens"] = sorted(set(kwargs.get("suppress_tokens") or []) | set(ids))
        return kwargs

    # ------------------------------------------------------------------------------ hooks
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._capture_logps:
            self._captured_logps = result[0]
            self._capture_logps = False
        return result

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        coef = self.args.nll_coef
        self._capture_logps = coef > 0
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if coef > 0:
            logps, self._captured_logps = self._captured_logps, None
            nll = self._nll_term(logps, inputs)
            loss = loss + coef * nll
        return loss

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        if mode == "train" and self.args.dynamic_sampling:
            # The rows may come from several generation rounds: VPPO must see each row's own prompt (images).
            output, inputs = self._generate_with_dynamic_sampling(inputs)
        else:
            output = super()._generate_and_score_completions(inputs)
        if mode == "train":
            output = self._apply_vppo(output, inputs)
        return output

    # ------------------------------------------------------------------------------ NLL term
    def _nll_term(self, logps: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """Sampled-token NLL, normalised exactly like TRL normalises the policy loss of this loss_type."""
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        nll = -logps * mask
        mode = "train" if self.model.training else "eval"
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        loss_type = self.args.loss_type
        if loss_type == "dapo":
            normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if mode == "train":
                normalizer = normalizer * accumulation / self.args.steps_per_generation
            term = nll.sum() / normalizer
        elif loss_type == "bnpo":
            term = nll.sum() / mask.sum().clamp(min=1.0) / accumulation
        elif loss_type == "grpo":
            term = (nll.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
        else:  # dr_grpo
            term = nll.sum() / (nll.size(0) * self.max_completion_length) / accumulation
        mean_nll = self.accelerator.reduce(torch.stack([nll.sum(), mask.sum()]).detach(), reduction="sum")
        self._metrics[mode]["vppo/nll"].append((mean_nll[0] / mean_nll[1].clamp(min=1.0)).item())
        return term

    # ------------------------------------------------------------------------------ dynamic sampling
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
                sampler = RepeatSampler(
                    data_source=self.train_dataset,
                    mini_repeat_count=self.num_generations,
                    batch_size=self.args.generation_batch_size // self.num_generations,
                    repeat_count=1,
                    shuffle=True,
                    seed=self.args.seed + 7919 * self._refill_epoch,
                )
                loader = self._get_dataloader(
                    dataset=self.train_dataset,
                    description="Refill",
                    batch_size=self._train_batch_size * self.args.steps_per_generation,
                    sampler_fn=lambda _dataset=None, _sampler=sampler: _sampler,
                    is_training=True,
                )
                self._refill_iterator = iter(loader)
            try:
                return next(self._refill_iterator)
            except StopIteration:
                self._refill_iterator = None

    def _generate_with_dynamic_sampling(
        self, inputs: list[dict[str, Any]]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The scored batch and its input rows, in the same order (rows may come from several rounds)."""
        rows = len(inputs)
        batches = [inputs]
        pieces = [super()._generate_and_score_completions(inputs)]
        keeps = [self._group_filter(rows)]
        first_dropped = int((~keeps[0]).sum())
        rounds = 0
        groups_needed = rows // self.num_generations
        while rounds < self.args.dynamic_sampling_max_rounds:
            short = torch.tensor(float(sum(int(k.sum()) for k in keeps) < groups_needed),
                                 device=self.accelerator.device)
            # Every process generates the same number of times (collectives inside TRL's scoring).
            if self.accelerator.gather(short).sum().item() == 0:
                break
            batches.append(self._next_refill_batch())
            pieces.append(super()._generate_and_score_completions(batches[-1]))
            keeps.append(self._group_filter(rows))
            rounds += 1
        picks, filler = plan_dynamic_sampling(keeps, self.num_generations, rows)
        if filler:
            logger.warning(
                "Dynamic sampling kept fewer informative groups than needed after %d extra rounds; "
                "%d groups with uniform rewards (zero advantage) fill the batch. Raise "
                "dynamic_sampling_max_rounds or check the task's difficulty.", rounds, filler)
        if len(pieces) == 1:
            # One round: every group is kept or fills in, so the batch is the round itself (same on
            # every process, which matters for the gather below).
            output, inputs = pieces[0], batches[0]
        else:
            pad = 1.0
            if "importance_sampling_ratio" in pieces[0]:
                pad = importance_sampling_pad_value(self.vllm_importance_sampling_mode,
                                                    self.vllm_importance_sampling_clip_min,
                                                    self.vllm_importance_sampling_clip_max)
            output = select_rows(pieces, picks, self._tokenizer.pad_token_id, importance_sampling_pad=pad)
            output["num_items_in_batch"] = self.accelerator.gather(output["num_items_in_batch"]).sum()
            inputs = [batches[piece][row] for piece, row in picks]
        stats = torch.tensor([first_dropped, groups_needed, rounds, filler], dtype=torch.float32,
                             device=self.accelerator.device)
        stats = self.accelerator.gather(stats).view(-1, 4).sum(0)
        metrics = self._metrics["train"]
        metrics["vppo/dynamic_sampling/dropped_frac"].append((stats[0] / stats[1]).item())
        metrics["vppo/dynamic_sampling/extra_rounds"].append(stats[2].item() / self.accelerator.num_processes)
        metrics["vppo/dynamic_sampling/filler_groups"].append(stats[3].item())
        return output, inputs

    # ------------------------------------------------------------------------------ VPPO
    def _perturbation_generator(self, purpose: str = "perturbation") -> torch.Generator:
        """Seeded by (perturbation_seed, purpose, global step, process): reproducible and resumable."""
        key = (f"{self.args.perturbation_seed}:{purpose}:{self.state.global_step}:"
               f"{self.accelerator.process_index}")
        seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & (2**63 - 1)
        return torch.Generator().manual_seed(seed)

    def perturb_pixel_values(self, output: dict[str, Any], inputs: list[dict[str, Any]],
                             generator: torch.Generator) -> torch.Tensor:
        """pixel_values of the uninformative images I', laid out exactly like `output["pixel_values"]`.

        Override to add a layout or a perturbation; every response gets its own random mask.
        """
        images = None
        if self.args.perturbation != "blacken":
            images = [[img for img in (row.get("images") if "images" in row else [row.get("image")]) or []
                       if img is not None] for row in inputs]
        return perturb_pixel_values(
            output["pixel_values"], self.vision, self.args.perturbation, self.args.perturbation_prob,
            generator, output.get("pixel_attention_mask"), patch_size=self.args.perturbation_patch_size,
            images=images, image_processor=self.processing_class.image_processor,
        )

    def _forward_kwargs(self, output: dict[str, Any]) -> dict[str, Any]:
        kwargs = {k: output[k] for k in _FORWARD_KEYS if k in output}
        kwargs["num_images"] = output.get("num_images")
        kwargs["num_tiles"] = output.get("num_tiles")
        return kwargs

    def compute_visual_dependency(self, output: dict[str, Any], perturbed_pixel_values: torch.Tensor,
                                  need_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-token dependency [B, T] (and entropies [B, T] if asked), no grad, policy θ_old."""
        args = self.args
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        t = output["completion_ids"].size(1)
        mask = output["completion_mask"].bool()
        kwargs = self._forward_kwargs(output)
        perturbed_kwargs = {**kwargs, "pixel_values": perturbed_pixel_values}
        batch_size = self.args.per_device_train_batch_size
        entropies = None
        if args.dependency_estimator in ("k3", "top1_drop"):
            logp_real = output.get("old_per_token_logps")
            if logp_real is None or need_entropy:
                logp_real, entropies, _ = self._get_per_token_logps_and_entropies(
                    self.model, ids, attention, t, batch_size=batch_size, compute_entropy=need_entropy,
                    **kwargs)
            logp_perturbed, _, _ = self._get_per_token_logps_and_entropies(
                self.model, ids, attention, t, batch_size=batch_size, **perturbed_kwargs)
            dep = token_dependency(logp_real, logp_perturbed, mask, estimator=args.dependency_estimator,
                                   clip=args.dependency_clip)
            return dep, entropies
        hidden = []
        for forward_kwargs in (kwargs, perturbed_kwargs):
            capture = _HiddenStateCapture(self.model, t)
            self._get_per_token_logps_and_entropies(capture, ids, attention, t, batch_size=batch_size,
                                                    **forward_kwargs)
            hidden.append(torch.cat(capture.hidden, dim=0))
        head = self.accelerator.unwrap_model(self.model).get_output_embeddings()
        dep = full_kl_dependency(hidden[0], hidden[1], head.weight, mask, temperature=self.temperature,
                                 chunk_size=args.kl_chunk_size, estimator=args.dependency_estimator,
                                 lm_head_bias=getattr(head, "bias", None))
        if need_entropy:
            _, entropies, _ = self._get_per_token_logps_and_entropies(
                self.model, ids, attention, t, batch_size=batch_size, compute_entropy=True, **kwargs)
        return dep, entropies

    def _rows_with_images(self, output: dict[str, Any], rows: int) -> torch.Tensor:
        device = output["completion_ids"].device
        if "pixel_values" not in output:
            return torch.zeros(rows, dtype=torch.bool, device=device)
        counts = output.get("num_images")
        if counts is None:
            return torch.ones(rows, dtype=torch.bool, device=device)
        return torch.tensor([c > 0 for c in counts], dtype=torch.bool, device=device)

    def _tas_scale(self, traj: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """α [B] for the local rows, with statistics over the configured scope."""
        args = self.args
        beta = {"beta_min": args.tas_beta_min, "beta_max": args.tas_beta_max_value}
        if args.tas_scope == "local":
            return tas_scale(traj, valid=valid, **beta)
        all_traj = self.accelerator.gather(traj)
        all_valid = self.accelerator.gather(valid.float()) > 0.5  # bool collectives are not portable
        group_ids = None
        if args.tas_scope == "group":
            group_ids = torch.arange(all_traj.numel(), device=traj.device) // self.num_generations
        alpha = tas_scale(all_traj, valid=all_valid, group_ids=group_ids, **beta)
        start = self.accelerator.process_index * traj.numel()
        return alpha[start : start + traj.numel()]

    def _apply_vppo(self, output: dict[str, Any], inputs: list[dict[str, Any]]) -> dict[str, Any]:
        args = self.args
        selection = args.token_selection
        need_dep = args.needs_dependency
        need_entropy = selection in ("entropy", "union")
        if not need_dep and selection in ("none",):
            return output
        mask = output["completion_mask"].bool()
        if "tool_mask" in output:
            mask = mask & output["tool_mask"].bool()
        rows = mask.size(0)
        has_image = self._rows_with_images(output, rows)
        any_image = self.accelerator.gather(has_image.any().float().view(1)).sum().item() > 0
        started = time.perf_counter()
        dep = torch.zeros(mask.shape, device=mask.device)
        entropies = None
        with torch.no_grad(), disable_gradient_checkpointing(self.model, args.gradient_checkpointing_kwargs):
            if need_dep and any_image:
                if "pixel_values" in output:
                    perturbed = self.perturb_pixel_values(output, inputs, self._perturbation_generator())
                else:
                    # Sharded engines need the same number of forwards on every rank; a rank without
                    # images scores against its own (absent) pixels, which gives dependency 0.
                    perturbed = None
                dep, entropies = self.compute_visual_dependency(output, perturbed, need_entropy)
            elif need_entropy:
                ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
                attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
                _, entropies, _ = self._get_per_token_logps_and_entropies(
                    self.model, ids, attention, mask.size(1), compute_entropy=True,
                    batch_size=args.per_device_train_batch_size, **self._forward_kwargs(output))
        elapsed = time.perf_counter() - started
        dep = dep * has_image[:, None]
        if need_dep and not bool(has_image.all()) and not self._warned_text_only:
            logger.warning(
                "Some rows have no image: their visual dependency is 0, TAS leaves their advantage "
                "unscaled (α = 1) and TGF keeps all their tokens.")
            self._warned_text_only = True

        valid_rows = has_image & (mask.sum(-1) > 0)
        if selection == "union":
            entropy_ratio = args.entropy_ratio or args.token_ratio
            weights = (tgf_mask(dep, mask, args.token_ratio)
                       | tgf_mask(entropies.float(), mask, entropy_ratio)).float()
        else:
            weights = select_tokens(selection, dep=dep, mask=mask, ratio=args.token_ratio,
                                    entropy=None if entropies is None else entropies.float(),
                                    generator=self._perturbation_generator("random_selection"))
        if selection in ("topk", "soft", "union"):
            # Without an image there is nothing to select by: every token keeps its gradient.
            weights = torch.where(has_image[:, None], weights, mask.float())
        traj = trajectory_dependency(dep, mask)
        alpha = self._tas_scale(traj, valid_rows) if args.use_tas else torch.ones_like(traj)
        advantages = output["advantages"]
        output["advantages"] = token_advantages(advantages, dep, mask, use_tas=args.use_tas,
                                                use_tgf=True, scale=alpha, token_weights=weights)
        self._log_vppo_metrics(dep, mask, weights, alpha, traj, valid_rows, elapsed, need_dep)
        return output

    def _log_vppo_metrics(self, dep, mask, weights, alpha, traj, valid_rows, elapsed, need_dep):
        gather = self.accelerator.gather
        m = mask.float()
        sums = torch.stack([
            (dep * m).sum(), m.sum(),
            (dep * weights * m).sum(), (weights * m).sum(),
            (dep * (1 - weights) * m).sum(), ((1 - weights) * m).sum(),
        ]).detach()
        sums = gather(sums.view(1, -1)).sum(0)
        metrics = self._metrics["train"]
        if need_dep:
            metrics["vppo/dependency_mean"].append((sums[0] / sums[1].clamp(min=1)).item())
            metrics["vppo/dependency_selected_mean"].append((sums[2] / sums[3].clamp(min=1e-8)).item())
            metrics["vppo/dependency_rejected_mean"].append((sums[4] / sums[5].clamp(min=1e-8)).item())
            all_traj = gather(traj)[gather(valid_rows.float()) > 0.5]
            if all_traj.numel():
                metrics["vppo/trajectory_dependency_mean"].append(all_traj.mean().item())
                metrics["vppo/trajectory_dependency_std"].append(all_traj.std(unbiased=False).item())
            metrics["vppo/perturbation_time"].append(elapsed)
        metrics["vppo/kept_token_frac"].append((sums[3] / sums[1].clamp(min=1)).item())
        all_alpha = gather(alpha)
        metrics["vppo/tas_scale_min"].append(all_alpha.min().item())
        metrics["vppo/tas_scale_mean"].append(all_alpha.mean().item())
        metrics["vppo/tas_scale_max"].append(all_alpha.max().item())
