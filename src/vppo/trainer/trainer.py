"""`VPPOTrainer`: TRL's GRPOTrainer with visual-dependency token credit assignment.

This module and its two mixins are the only ones that know TRL internals: `ScoringMixin`
(scoring.py: the padding-free no-grad passes, LM-head gathering, perturbed images) and
`DynamicSamplingMixin` (dynamic_sampling.py: the rounds and the refill stream); here are TRL's
hooks, the set-up, checkpointing and `_apply_vppo`. It overrides four hooks of TRL 1.16's
GRPOTrainer, each by calling `super()` and post-processing (tests/trainer/test_trainer_hooks.py fails
loudly when their signatures change):

- `_generate_and_score_completions`: after TRL scores a generation batch, (1) dynamic sampling
  drops groups whose pass rate is ≤ low or ≥ high and generates again, pruning each round to the
  groups it may use as soon as it is scored; (2) one no-grad pass over the kept rows computes the
  old log-probs TRL needs (deferred, see below) together with the real-image scores, and one more
  on the perturbed image scores every token's visual dependency; both skip padding (rows sorted by
  length, each chunk trimmed to its own widths); (3) TAS and TGF turn the [B] advantages into
  [B, T] per-token advantages, which TRL's loss accepts as they are.
- `_calculate_rewards`: remembers the gathered rewards so dynamic sampling can filter groups.
- `_get_per_token_logps_and_entropies`: (a) during TRL's scoring, answers TRL's old-log-prob call
  with a placeholder, so old log-probs are computed once, on the rows that are trained on, after
  dynamic sampling (not when vLLM importance sampling needs them per round); (b) with
  `compute_loss`, keeps the policy's per-token log-probs of the loss pass so the sampled-token NLL
  term (the official "entropy penalty") and PAPO's implicit perception loss (arXiv 2507.06448,
  `papo_coef`; its masked-image log-probs come from the same no-grad perturbed pass as VPPO's
  dependency, stored per token as "papo_masked_logps", or, with `papo_masked_grad`, from a forward
  with gradient on the stored masked images "papo_masked_pixel_values") are added to TRL's loss
  rather than copying it.

TGF as zero advantage: TRL's token-mean loss divides by all response tokens, so a zero advantage on
a filtered token is exactly the official masked loss (filtered tokens still count in the
denominator).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import ProcessorMixin
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import (
    shuffle_sequence_dict,
    split_pixel_values_by_grid,
    split_tensor_dict,
    unsplit_pixel_values_by_grid,
)

from vppo.algorithm import (
    TOKEN_SELECTIONS,
    papo_token_terms,
    perception_kl,
    select_tokens,
    tas_scale,
    token_advantages,
)
from vppo.models import collapse_placeholder_runs, vision_layout
from vppo.models.processors import vllm_image_options
from vppo.perception import NO_IMAGE, trajectory_dependency
from vppo.trainer.batching import (
    ROW_UNSPLITTABLE_KEYS,
    splits_by_row,
    update_micro_batches,
    update_window,
)
from vppo.trainer.config import VPPOConfig
from vppo.trainer.dynamic_sampling import DynamicSamplingMixin
from vppo.trainer.resume import (
    load_renamed_checkpoint,
    read_checkpoint_state,
    write_checkpoint_state,
)
from vppo.trainer.scoring import _FORWARD_KEYS, ScoringMixin, full_lm_head  # noqa: F401 (importable here as before)

logger = logging.getLogger(__name__)


# The forward keys that describe images (the per-token type ids stay: they are zeros without images).
_VISION_KEYS = tuple(k for k in _FORWARD_KEYS if k not in ("token_type_ids", "mm_token_type_ids"))


def _drop_empty_vision_inputs(module, args, kwargs):
    """Forward pre-hook: a batch whose rows have no image runs as text only.

    TRL slices the collated batch per chunk, so a chunk of text-only rows gets ``pixel_values`` with
    0 rows, on which Qwen2.5-VL's vision path fails (``torch.cat(): expected a non-empty list``).
    """
    pixel_values = kwargs.get("pixel_values")
    if torch.is_tensor(pixel_values) and pixel_values.size(0) == 0:
        kwargs = {k: v for k, v in kwargs.items() if k not in _VISION_KEYS}
        return args, kwargs
    return None


def rows_without_images(dataset) -> tuple[int, int | None]:
    """(number of rows without any image, index of the first) of a training dataset, read from its
    Arrow table (no image is decoded). An ``images`` list column counts empty and null lists; an
    ``image`` column counts nulls; a dataset with neither has no image at all."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = getattr(dataset, "data", None)
    names = getattr(dataset, "column_names", None) or []
    if table is None:
        return 0, None  # an IterableDataset: not known up front
    column = "images" if "images" in names else "image" if "image" in names else None
    if column is not None:
        values = table.column(column)
        if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            empty = pc.equal(pc.fill_null(pc.list_value_length(values), 0), 0)
        else:  # one image per row
            empty = pc.is_null(values)
    else:
        return len(dataset), 0 if len(dataset) else None
    empty = empty.to_numpy(zero_copy_only=False)
    indices = getattr(dataset, "_indices", None)
    if indices is not None:  # a selected/shuffled view: map its rows onto the table's
        empty = empty[indices.column(0).to_numpy()]
    count = int(empty.sum())
    return count, (int(empty.argmax()) if count else None)


def _trainer_dtype(model, args: VPPOConfig) -> str:
    """The dtype the trainer computes in: what the colocated vLLM engine must sample in."""
    if args.bf16:
        return "bfloat16"
    if args.fp16:
        return "float16"
    if isinstance(model, torch.nn.Module):
        return str(next(model.parameters()).dtype).removeprefix("torch.")
    return "auto"


@contextmanager
def _vllm_engine_options(dtype: str | None, processor: Any = None) -> Iterator[None]:
    """Within this block TRL's colocated `vllm.LLM` gets `dtype` and the processor's image range.

    TRL 1.16 builds its engine without a dtype, and vLLM's "auto" casts a float32 checkpoint to
    bfloat16: a float32 trainer would score samples drawn from a bfloat16 policy (|Δ log p| ~0.01
    per token on the tiny models). Nor does it pass image limits, so vLLM resizes with the
    checkpoint's processor config and profiles its encoder for that config's largest image
    (`vllm_image_options`). `dtype` None: no engine is built here, nothing is changed.
    """
    if dtype is None:
        yield
        return
    import trl.generation.vllm_generation as vllm_generation

    engine = vllm_generation.LLM
    options = {"dtype": dtype, **vllm_image_options(processor)}

    def build(*args, **kwargs):
        return engine(*args, **{**options, **kwargs})

    vllm_generation.LLM = build
    try:
        yield
    finally:
        vllm_generation.LLM = engine


def check_vllm_prompts(ran: list[list[int]], expected: list[list[int]], placeholder: int) -> None:
    """Raise unless vLLM ran exactly the trainer's prompt ids, row for row.

    Args:
        ran: the prompt token ids vLLM reports for each row (after its own image expansion).
        expected: the trainer's prompt ids (the processor's, which the loss scores).
        placeholder: the image placeholder id, counted in the message.
    """
    if len(ran) != len(expected):
        raise RuntimeError(f"vLLM returned {len(ran)} prompts for {len(expected)} rows.")
    for row, (got, want) in enumerate(zip(ran, expected, strict=True)):
        if list(got) != list(want):
            raise RuntimeError(
                f"vLLM ran another prompt than the trainer scores for row {row}: {len(got)} tokens "
                f"({list(got).count(placeholder)} image placeholders) instead of {len(want)} "
                f"({list(want).count(placeholder)}); the rollouts would be off-policy. This model's "
                "prompt form is not one vppo hands vLLM correctly: train it with use_vllm=false."
            )


def _out_of_space(err: BaseException) -> bool:
    """Whether a save failed for want of disk space (an OSError, or a library error that wraps one)."""
    import errno

    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(err) or "Disk quota exceeded" in str(err):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


class CheckpointSpaceError(OSError):
    """A checkpoint save ran out of disk space: one sentence naming the folder and what it needs."""

    def __init__(self, folder: str, model: torch.nn.Module):
        import shutil

        parent = os.path.dirname(folder) or "."
        free = shutil.disk_usage(parent).free
        previous = _newest_checkpoint_size(parent, exclude=os.path.basename(folder))
        # Weights plus Adam's two moments, in float32: an estimate when no checkpoint was written yet.
        estimate = previous or 3 * 4 * sum(p.numel() for p in model.parameters())
        super().__init__(
            f"no space left on the device of {parent} while saving {os.path.basename(folder)} (about "
            f"{estimate / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free); free space, then continue with "
            "--resume_from_checkpoint last (the incomplete checkpoint is skipped)."
        )


def _newest_checkpoint_size(folder: str, exclude: str) -> int:
    from vppo.trainer.resume import last_complete_checkpoint

    last, _ = last_complete_checkpoint(folder)
    if last is None or last.name == exclude:
        return 0
    return sum(path.stat().st_size for path in last.rglob("*") if path.is_file())


# Settings a resumed run is compared with its checkpoint on (a change is reported, one line each).
_RESUME_FIELDS = (
    "token_selection",
    "token_ratio",
    "entropy_ratio",
    "use_tas",
    "tas_beta_min",
    "tas_scope",
    "dependency_estimator",
    "dependency_clip",
    "perturbation",
    "perturbation_prob",
    "perturbation_seed",
    "nll_coef",
    "papo_coef",
    "papo_kl_estimator",
    "papo_kl_clip",
    "papo_entropy_coef",
    "papo_masked_entropy_coef",
    "loss_type",
    "epsilon",
    "epsilon_high",
    "delta",
    "beta",
    "learning_rate",
    "num_generations",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "steps_per_generation",
    "num_iterations",
    "max_completion_length",
    "temperature",
    "top_p",
    "dynamic_sampling",
    "dynamic_sampling_low",
    "dynamic_sampling_high",
    "seed",
)


def _resume_settings(trainer: VPPOTrainer) -> dict[str, Any]:
    settings = {
        key: getattr(trainer.args, key) for key in _RESUME_FIELDS if hasattr(trainer.args, key)
    }
    settings["num_processes"] = trainer.accelerator.num_processes
    return json.loads(json.dumps(settings, default=str))


class VPPOTrainer(ScoringMixin, DynamicSamplingMixin, GRPOTrainer):
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

    def __init__(
        self,
        model,
        reward_funcs,
        args: VPPOConfig,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        **kwargs,
    ):
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
        if args.use_vllm and args.vllm_mode == "colocate" and self.vision.layout == "bnchw":
            raise ValueError(
                "use_vllm with vllm_mode='colocate' supports Qwen-VL-style models, whose image placeholder is "
                "one repeated token; this model's (SmolVLM/Idefics3) image blocks would reach vLLM expanded "
                "twice: set use_vllm=false."
            )
        with _vllm_engine_options(
            _trainer_dtype(model, args) if args.use_vllm else None, processing_class
        ):
            super().__init__(
                model=model,
                reward_funcs=reward_funcs,
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                **kwargs,
            )
        if args.freeze_vision_tower or args.freeze_projector:  # before the optimizer is built
            from vppo.trainer.freezing import freeze_vision_parts

            frozen = freeze_vision_parts(
                self.model, vision_tower=args.freeze_vision_tower, projector=args.freeze_projector
            )
            logger.info(
                "Frozen: %s parameters.", ", ".join(f"{k} {v:,}" for k, v in frozen.items() if v)
            )
        self._refuse_text_only_rows_when_sharded()
        # A chunk of text-only rows carries empty vision tensors, which Qwen-VL's forward rejects.
        for model_ in (self.model, getattr(self, "ref_model", None)):
            if model_ is not None:
                model_.register_forward_pre_hook(_drop_empty_vision_inputs, with_kwargs=True)
        self._last_rewards_per_func: torch.Tensor | None = None
        self._capture_logps = False
        self._captured_logps: torch.Tensor | None = None
        self._refill_iterator = None
        self._refill_epoch = 0
        self._refill_draws = 0  # batches drawn from the refill stream in its current epoch
        self._refill_skip = 0  # draws to skip when the stream restarts (resumed from a checkpoint)
        self._warned_text_only = False
        self._warned_papo_text_only = False
        # Old log-probs TRL would compute per generation round are computed once on the kept rows.
        self._defer_old_logps = False
        self._old_logps_deferred = False
        if args.dynamic_sampling:
            if isinstance(self.train_dataset, torch.utils.data.IterableDataset):
                raise ValueError(
                    "dynamic_sampling needs an indexable train_dataset, not an IterableDataset."
                )
        self._refuse_a_dataset_smaller_than_one_rollout()

    # ------------------------------------------------------------------------------ set-up
    def _refuse_a_dataset_smaller_than_one_rollout(self) -> None:
        """TRL's sampler yields only whole generation batches: with fewer prompts than one, training
        would run 0 steps and save the initial model."""
        data = self.train_dataset
        if (
            data is None
            or isinstance(data, torch.utils.data.IterableDataset)
            or not hasattr(data, "__len__")
        ):
            return
        args = self.args
        prompts = args.generation_batch_size // self.num_generations
        if len(data) < prompts:
            raise ValueError(
                f"train_dataset has {len(data)} rows, fewer than one rollout needs: {prompts} prompts "
                f"(generation_batch_size {args.generation_batch_size} = per_device_train_batch_size "
                f"{args.per_device_train_batch_size} x steps_per_generation {args.steps_per_generation} x "
                f"{self.accelerator.num_processes} processes, each prompt sampled num_generations="
                f"{self.num_generations} times), so training would run 0 steps; add rows or lower "
                "per_device_train_batch_size or steps_per_generation."
            )

    def _refuse_text_only_rows_when_sharded(self) -> None:
        """FSDP and ZeRO-3 gather the vision tower's shards inside its forward, a collective: a process
        whose micro-batch has no image would skip it while the others wait, and training would hang."""
        zero3 = (
            self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3
        )
        if not (self.is_fsdp_enabled or zero3) or self.train_dataset is None:
            return
        count, first = rows_without_images(self.train_dataset)
        if count:
            engine = "FSDP" if self.is_fsdp_enabled else "DeepSpeed ZeRO-3"
            raise ValueError(
                f"train_dataset has {count} rows without an image (the first is row {first}); under {engine} "
                "a process whose micro-batch holds no image would skip the sharded vision tower while the "
                "others gather it, and training would hang: drop those rows or give each one an image, or "
                "train them without sharding (one process, DDP or ZeRO-1/2)."
            )

    @staticmethod
    def _enforce_left_padding(processor: ProcessorMixin) -> None:
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is not None and tokenizer.padding_side != "left":
            logger.warning(
                "Setting the tokenizer's padding_side to 'left' (TRL left-pads prompts)."
            )
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

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        card = os.path.join(self.args.output_dir, "README.md")
        if not self.is_world_process_zero() or not os.path.isfile(card):
            return
        # TRL names a local base model "None"; say what it was and how the model was trained.
        base = getattr(self.model.config, "_name_or_path", None) or "an unnamed model"
        args = self.args
        method = (
            f"VPPO (arXiv 2510.09285; token_selection={args.token_selection}, token_ratio="
            f"{args.token_ratio:g}, use_tas={args.use_tas}, dependency_estimator={args.dependency_estimator})"
            if args.needs_dependency
            else f"the {args.loss_type.upper()} baseline of vppo (no visual dependency)"
        )
        if args.uses_papo:
            method += (
                f", with PAPO's implicit perception loss (arXiv 2507.06448; papo_coef={args.papo_coef:g}, "
                f"papo_entropy_coef={args.papo_entropy_coef:g}, "
                f"papo_masked_entropy_coef={args.papo_masked_entropy_coef:g}"
                + (", papo_masked_grad=True" if args.papo_masked_grad else "")
                + ")"
            )
        with open(card, encoding="utf-8") as handle:
            text = handle.read()
        text = text.replace("[None](https://huggingface.co/None)", f"`{base}`")
        text = text.replace('model="None"', f'model="{args.output_dir}"')
        text = text.replace(
            "It has been trained using [TRL](https://github.com/huggingface/trl).",
            f"It has been trained with {method}, using vppo on "
            "[TRL](https://github.com/huggingface/trl).",
            1,
        )
        with open(card, "w", encoding="utf-8") as handle:
            handle.write(text)

    def _save_checkpoint(self, model, trial):
        folder = os.path.join(
            self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}"
        )
        try:
            super()._save_checkpoint(model, trial)
        except Exception as err:
            if not _out_of_space(err):
                raise
            raise CheckpointSpaceError(folder, self.model) from err
        # Written last, once every process has written its part: a checkpoint without this file is
        # incomplete (a save that was killed or ran out of space), and its manifest finds truncated files.
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            write_checkpoint_state(
                folder, {**self.refill_state(), "settings": _resume_settings(self)}
            )

    def _load_rng_state(self, checkpoint):
        # Called on every engine once, when training resumes from `checkpoint`, before its first step.
        super()._load_rng_state(checkpoint)
        state = read_checkpoint_state(checkpoint) if checkpoint else None
        if state is None:
            return
        saved, now = state.get("settings", {}), _resume_settings(self)
        changed = [key for key in now if key in saved and saved[key] != now[key]]
        layout = (
            "num_generations",
            "per_device_train_batch_size",
            "steps_per_generation",
            "num_processes",
        )
        if state.get("refill_draws") and any(key in layout for key in changed):
            raise ValueError(
                f"cannot resume {checkpoint} with another batch layout ("
                + ", ".join(f"{key} {saved[key]} -> {now[key]}" for key in changed if key in layout)
                + "): its dynamic-sampling refill stream was part-way through an epoch laid out in the old "
                "batches; resume with the checkpoint's values."
            )
        for key in changed:
            logger.warning(
                "Resuming %s with %s changed: %s -> %s.", checkpoint, key, saved[key], now[key]
            )
        self.restore_refill_state(state)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # transformers 5.23 reads checkpoint weights without undoing save_pretrained's key renaming
        # (Qwen-VL): the renamed weights would silently keep their initial values (trainer/resume.py).
        if self.is_fsdp_enabled or not load_renamed_checkpoint(
            model or self.model, resume_from_checkpoint
        ):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    # ------------------------------------------------------------------------------ hooks
    def _generate(self, prompts):
        result = super()._generate(prompts)
        images = result[6]
        if images is not None and any(row is None for row in images):
            # TRL marks a text-only row's images None, which its own processor call then rejects in a
            # batch that has images; [] is the processor's "no image" for that row.
            result = (*result[:6], [row or [] for row in images], *result[7:])
        return result

    def _generate_single_turn(
        self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False
    ):
        if not self.use_vllm:
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        with self._vllm_runs_trainer_prompts():
            return super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )

    @contextmanager
    def _vllm_runs_trainer_prompts(self) -> Iterator[None]:
        """vLLM samples from the prompt the trainer scores, and says so.

        TRL hands vLLM the processor's token ids, in which every image's placeholder is already
        expanded to its N feature tokens, together with the raw images; in colocate mode vLLM 0.30
        expands the first placeholder again (2N − 1 tokens per image, huggingface/trl#6294), so every
        rollout would come from a corrupted prompt while the trainer scores the right one. Colocate
        mode therefore gets each run of placeholders cut to one token, which vLLM expands to exactly
        the processor's ids. Server mode is left as it is: TRL sends the processed image features
        placed on the expanded runs. Either way the prompt ids vLLM reports having run must equal the
        trainer's, row for row, or generation stops with the first row that differs.
        """
        generation = self.vllm_generation
        original = generation.generate
        placeholder = self.vision.image_token_id

        def generate(prompts, images, num_generations, profiler=None):
            sent = prompts
            if generation.mode == "colocate" and images is not None:
                sent = [collapse_placeholder_runs(ids, placeholder) for ids in prompts]
            ran, *rest = original(
                prompts=sent, images=images, num_generations=num_generations, profiler=profiler
            )
            check_vllm_prompts(ran, prompts, placeholder)
            return (ran, *rest)

        generation.generate = generate
        try:
            yield
        finally:
            del generation.generate  # the class's method again

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        self._last_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
    ):
        if self._defer_old_logps:
            # TRL's first call while scoring is the old log-prob pass (tests/trainer/test_trainer_hooks.py checks
            # the order): answer it with a placeholder; _apply_vppo computes the real ones on the kept rows.
            self._defer_old_logps = False
            self._old_logps_deferred = True
            return (
                input_ids.new_zeros(input_ids.size(0), logits_to_keep, dtype=torch.float32),
                None,
                None,
            )
        result = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, *args, **kwargs
        )
        if self._capture_logps:
            self._captured_logps = result[0]
            self._capture_logps = False
        return result

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        coef = self.args.nll_coef
        # PAPO's term is a training loss: an eval batch has no masked-image pass.
        papo = self.args.uses_papo and self.model.training
        self._capture_logps = coef > 0 or papo
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if coef > 0 or papo:
            logps, self._captured_logps = self._captured_logps, None
            if coef > 0:
                loss = loss + coef * self._nll_term(logps, inputs)
            if papo:
                loss = loss + self._papo_term(model, logps, inputs)
        return loss

    def _prepare_inputs(self, generation_batch):
        """TRL's buffering of a generation batch into update micro-batches, without its padding.

        TRL shuffles the scored batch and cuts it into `steps_per_generation` micro-batches, each as
        wide as the whole batch. The same shuffle (one `torch.randperm`, drawn as TRL draws it) decides
        here which rows each optimizer step trains on; within an optimizer step the rows are regrouped
        by length where the loss allows it (`_regroup_window`), and each micro-batch is trimmed to its
        own widths. Every optimizer step's gradient equals TRL's (tests/trainer/test_trainer_update.py).
        """
        if not self.model.training:
            return super()._prepare_inputs(generation_batch)
        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            # Every micro-batch of the previous rollout is used: free them (their pixel_values too)
            # before this rollout generates, so the generation peak holds one rollout, not two.
            self._buffered_inputs = None
            output = self._generate_and_score_completions(generation_batch)
            if splits_by_row(output):
                order = torch.randperm(output["prompt_ids"].size(0)).tolist()
                self._buffered_inputs = update_micro_batches(
                    output,
                    order,
                    self.args.per_device_train_batch_size,
                    self._regroup_window(),
                    self._tokenizer.pad_token_id,
                )
            else:  # image layouts that cannot be cut by row: TRL's full-width micro-batches
                if "papo_masked_pixel_values" in output:
                    raise ValueError(
                        "papo_masked_grad=True keeps the masked images for the update, but this "
                        "model's image layout (it carries "
                        f"{[k for k in ROW_UNSPLITTABLE_KEYS if k in output]}) "
                        "cannot be cut into micro-batches by row; set papo_masked_grad=False."
                    )
                output = shuffle_sequence_dict(split_pixel_values_by_grid(output))
                self._buffered_inputs = [
                    unsplit_pixel_values_by_grid(batch)
                    for batch in split_tensor_dict(output, self.args.steps_per_generation)
                ]
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    def _regroup_window(self) -> int:
        """Micro-batches whose rows may be regrouped by length (see `update_window`).

        1 where a micro-batch's loss depends on which rows share it: bnpo divides by the micro-batch's
        token count, TRL's entropy mask takes a quantile over the micro-batch, and its entropy bonus is
        a per-micro-batch mean. The other losses divide by constants or by a row count that every
        micro-batch shares.
        """
        if (
            self.loss_type == "bnpo"
            or self.top_entropy_quantile < 1.0
            or self._entropy_bonus_enabled
        ):
            return 1
        return update_window(self.args.steps_per_generation, self.args.gradient_accumulation_steps)

    def _generate_and_score_completions(self, inputs):
        """One rollout: generate and score (TRL; several rounds with dynamic sampling), then VPPO.

        TRL's old log-prob pass is deferred while scoring (`_score_round`), so that it runs once, on
        the kept rows, inside VPPO's own no-grad passes (`_apply_vppo`).
        """
        if not self.model.training:
            return super()._generate_and_score_completions(inputs)
        self._old_logps_deferred = False
        if self.args.dynamic_sampling:
            # The rows may come from several generation rounds: VPPO must see each row's own prompt (images).
            output, inputs = self._generate_with_dynamic_sampling(inputs)
        else:
            output = self._score_round(inputs, defer=True)
        deferred, self._old_logps_deferred = self._old_logps_deferred, False
        return self._apply_vppo(output, inputs, old_logps=deferred)

    def _trl_needs_old_logps(self) -> bool:
        """TRL 1.16's condition for computing old log-probs while scoring (checked by the hook tests)."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        return (
            self.args.gradient_accumulation_steps % generate_every != 0
            or self._vllm_is_correction()
        )

    def _vllm_is_correction(self) -> bool:
        return bool(self.use_vllm and self.vllm_importance_sampling_correction)

    def _score_round(self, inputs: list[dict[str, Any]], defer: bool) -> dict[str, Any]:
        """TRL's generation and scoring, with its old log-prob pass deferred when `defer`.

        vLLM importance sampling needs the old log-probs inside TRL's scoring, so they are not deferred then.
        """
        self._defer_old_logps = (
            defer and self._trl_needs_old_logps() and not self._vllm_is_correction()
        )
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self._defer_old_logps = False

    # ------------------------------------------------------------------------------ NLL term
    @staticmethod
    def _loss_mask(inputs: dict[str, Any]) -> torch.Tensor:
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        return mask

    def _policy_loss_mean(
        self, per_token: torch.Tensor, mask: torch.Tensor, inputs: dict[str, Any]
    ) -> torch.Tensor:
        """A per-token loss [B, T] (0 at padding), normalised exactly like TRL normalises the policy
        loss of this loss_type (token count, accumulation and process count included), so that the
        sum over an optimizer step's micro-batches does not depend on how rows are grouped."""
        mode = "train" if self.model.training else "eval"
        accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        loss_type = self.args.loss_type
        if loss_type == "dapo":
            normalizer = (
                inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            )
            if mode == "train":
                normalizer = normalizer * accumulation / self.args.steps_per_generation
            return per_token.sum() / normalizer
        if loss_type == "bnpo":
            return per_token.sum() / mask.sum().clamp(min=1.0) / accumulation
        if loss_type == "grpo":
            return (per_token.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
        if loss_type == "dr_grpo":
            return per_token.sum() / (per_token.size(0) * self.max_completion_length) / accumulation
        # VPPOConfig refuses nll_coef > 0 and PAPO with any other loss_type (NLL_LOSS_TYPES)
        raise ValueError(
            f"the NLL and PAPO terms have no normalisation for loss_type {loss_type!r}."
        )

    def _nll_term(self, logps: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """Sampled-token NLL, normalised exactly like TRL normalises the policy loss of this loss_type."""
        mask = self._loss_mask(inputs)
        nll = -logps * mask
        mode = "train" if self.model.training else "eval"
        term = self._policy_loss_mean(nll, mask, inputs)
        mean_nll = self.accelerator.reduce(
            torch.stack([nll.sum(), mask.sum()]).detach(), reduction="sum"
        )
        self._metrics[mode]["vppo/nll"].append((mean_nll[0] / mean_nll[1].clamp(min=1.0)).item())
        return term

    # ------------------------------------------------------------------------------ PAPO term
    def _papo_term(self, model, logps: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        """PAPO's -γ·KL + η_ori·H + η_aug·H̃ (vppo.algorithm.papo_token_terms) on this micro-batch's
        rows, normalised like the policy loss (`_policy_loss_mean`).

        `logps` are the loss pass's real-image log-probs (with grad). The masked-image ones are
        inputs["papo_masked_logps"], θ_old without grad, scored once per rollout by `_apply_vppo`,
        or, with `papo_masked_grad`, the current policy's, from a forward with gradient on this
        micro-batch's masked images (`_masked_logps_with_grad`). Rows without an image get KL 0
        and keep their entropy terms.
        """
        args = self.args
        mask = self._loss_mask(inputs).bool()
        if args.papo_masked_grad:
            masked = self._masked_logps_with_grad(model, inputs)
        else:
            masked = inputs.get("papo_masked_logps")
        if masked is None:
            if args.papo_reads_masked:
                raise RuntimeError(
                    "PAPO needs the masked-image log-probs of the scored batch (papo_masked_logps), "
                    "which _apply_vppo stores; this batch has none."
                )
            masked = logps.detach()  # only η_ori is on: the masked side is never read
        masked = masked.to(logps.dtype)
        kl_rows = self._rows_with_images(inputs, mask.size(0))
        per_token = papo_token_terms(
            logps,
            masked,
            mask,
            args.papo_coef,
            entropy_coef=args.papo_entropy_coef,
            masked_entropy_coef=args.papo_masked_entropy_coef,
            estimator=args.papo_kl_estimator,
            clip=args.papo_kl_clip,
            kl_rows=kl_rows,
            masked_grad=args.papo_masked_grad,
        )
        term = self._policy_loss_mean(per_token, mask.to(per_token.dtype), inputs)
        with torch.no_grad():
            k = perception_kl(
                logps.detach(),
                masked,
                mask,
                estimator=args.papo_kl_estimator,
                clip=args.papo_kl_clip,
            )
            k = torch.where(kl_rows[:, None], k, 0.0)
            m = mask.to(k.dtype)
            real = torch.where(mask, logps.detach(), 0.0)
            sums = torch.stack(
                [k.sum(), -real.sum(), -torch.where(mask, masked, 0.0).sum(), m.sum()]
            )
            sums = self.accelerator.reduce(sums, reduction="sum")
        metrics = self._metrics["train"]
        count = sums[3].clamp(min=1.0)
        metrics["papo/kl"].append((sums[0] / count).item())
        metrics["papo/entropy"].append((sums[1] / count).item())
        metrics["papo/masked_entropy"].append((sums[2] / count).item())
        return term

    def _masked_logps_with_grad(self, model, inputs: dict[str, Any]) -> torch.Tensor:
        """The current policy's sampled-token log-probs [B, T] on this micro-batch's masked input,
        with gradient (`papo_masked_grad`, the official RECOMPUTE_AUG_LOG_PROBS).

        The masked images are inputs["papo_masked_pixel_values"], drawn once per rollout by
        `_no_grad_passes` and cut into micro-batches with the real ones; with perturbation 'none'
        the input is the prompt without its vision tokens (`_without_images`). A micro-batch
        without images (or a process without any) runs on its own, unchanged input, so that every
        process of a sharded run makes the same forwards.
        """
        if self.args.perturbation == NO_IMAGE:
            masked = self._without_images(inputs)
        else:
            masked = dict(inputs)
            if "papo_masked_pixel_values" in inputs:
                masked["pixel_values"] = inputs["papo_masked_pixel_values"]
        ids = torch.cat([masked["prompt_ids"], masked["completion_ids"]], dim=1)
        attention = torch.cat([masked["prompt_mask"], masked["completion_mask"]], dim=1)
        logps, _, _ = self._get_per_token_logps_and_entropies(
            model,
            ids,
            attention,
            masked["completion_ids"].size(1),
            compute_entropy=False,
            **self._forward_kwargs(masked),
        )
        return logps

    # ------------------------------------------------------------------------------ VPPO
    def _tas_scale(self, traj: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """α [B] for the local rows, with statistics over the configured scope."""
        args = self.args
        beta = {"beta_min": args.tas_beta_min, "beta_max": args.tas_beta_max_value}
        if args.tas_scope == "local":
            return tas_scale(traj, valid=valid, **beta)
        all_traj = self.accelerator.gather(traj)
        all_valid = (
            self.accelerator.gather(valid.float()) > 0.5
        )  # bool collectives are not portable
        group_ids = None
        if args.tas_scope == "group":
            group_ids = torch.arange(all_traj.numel(), device=traj.device) // self.num_generations
        alpha = tas_scale(all_traj, valid=all_valid, group_ids=group_ids, **beta)
        start = self.accelerator.process_index * traj.numel()
        return alpha[start : start + traj.numel()]

    def _apply_vppo(
        self, output: dict[str, Any], inputs: list[dict[str, Any]], old_logps: bool = False
    ) -> dict[str, Any]:
        """VPPO on one scored batch: its no-grad passes, then TGF weights × TAS scale → token advantages.

        With `old_logps` (TRL's old log-prob pass was deferred), the real-image pass also gives the old
        log-probs: this is the one place VPPOTrainer writes `old_per_token_logps`. With PAPO, the
        perturbed pass's log-probs are kept per token as `papo_masked_logps` (the masked image under
        θ_old, no grad), for `compute_loss`.
        """
        args = self.args
        mask = output["completion_mask"].bool()
        if "tool_mask" in output:
            mask = mask & output["tool_mask"].bool()
        has_image = self._rows_with_images(output, mask.size(0))

        scores, elapsed = self._no_grad_passes(output, inputs, has_image, old_logps)
        if old_logps:
            output["old_per_token_logps"] = scores["logps"]
        if args.uses_papo:
            self._keep_papo_masked_logps(output, scores, mask, has_image, elapsed)
        if "papo_masked_pixel_values" in scores:
            output["papo_masked_pixel_values"] = scores.pop("papo_masked_pixel_values")
        if not args.needs_dependency and args.token_selection == "none":
            return output

        # Rows without an image have nothing to depend on: dependency 0 (TAS leaves them at α = 1).
        dep = (
            scores.get("dependency", torch.zeros(mask.shape, device=mask.device))
            * has_image[:, None]
        )
        if args.needs_dependency and not bool(has_image.all()) and not self._warned_text_only:
            logger.warning(
                "Some rows have no image: their visual dependency is 0, TAS leaves their advantage "
                "unscaled (α = 1) and TGF keeps all their tokens."
            )
            self._warned_text_only = True
        weights = self._token_weights(dep, mask, scores.get("entropies"), has_image)
        valid_rows = has_image & (mask.sum(-1) > 0)
        traj = trajectory_dependency(dep, mask)
        alpha = self._tas_scale(traj, valid_rows) if args.use_tas else torch.ones_like(traj)
        output["advantages"] = token_advantages(
            output["advantages"],
            dep,
            mask,
            use_tas=args.use_tas,
            use_tgf=True,
            scale=alpha,
            token_weights=weights,
        )
        self._log_vppo_metrics(
            dep, mask, weights, alpha, traj, valid_rows, elapsed, args.needs_dependency
        )
        return output

    def _no_grad_passes(
        self,
        output: dict[str, Any],
        inputs: list[dict[str, Any]],
        has_image: torch.Tensor,
        old_logps: bool,
    ) -> tuple[dict[str, torch.Tensor], float]:
        """The rollout's no-grad passes under θ_old, and their time: the perturbed pass when VPPO or
        PAPO needs it ("dependency", "logps_perturbed"), with the real-image pass for the old
        log-probs ("logps") and the entropies where they are asked for. With `papo_masked_grad` the
        perturbed images themselves are returned too ("papo_masked_pixel_values"), for the update."""
        args = self.args
        need_entropy = TOKEN_SELECTIONS[args.token_selection].needs_entropy
        papo_masked = args.uses_papo and args.needs_perturbed_pass
        any_image = (
            args.needs_perturbation
            and self.accelerator.gather(has_image.any().float().view(1)).sum().item() > 0
        )
        started = time.perf_counter()
        scores: dict[str, torch.Tensor] = {}
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, args.gradient_checkpointing_kwargs),
        ):
            perturbed = None
            if any_image and "pixel_values" in output and args.perturbation != NO_IMAGE:
                # A rank without images keeps None: sharded engines need the same number of
                # forwards on every rank, and it scores against its own (absent) pixels, which
                # gives dependency 0. With 'none' there are no perturbed pixels: the perturbed
                # pass runs on the prompts without their images.
                perturbed = self.perturb_pixel_values(
                    output, inputs, self._perturbation_generator()
                )
                if args.papo_masked_grad:
                    scores["papo_masked_pixel_values"] = perturbed
            if any_image and args.needs_perturbed_pass:
                if args.needs_dependency:
                    scores |= self._dependency_scores(output, perturbed, need_entropy, old_logps)
                else:  # PAPO only: the perturbed log-probs, without a dependency estimate
                    scores |= self._scoring_pass(
                        output,
                        perturbed,
                        old_logps=old_logps,
                        entropy=need_entropy,
                        dependency=True,
                    )
            elif need_entropy or old_logps or papo_masked:
                # No image anywhere: PAPO's masked input is the real one, scored under θ_old here
                # (unless TRL or the deferred pass has those log-probs already).
                real = papo_masked and not old_logps and output.get("old_per_token_logps") is None
                scores |= self._scoring_pass(
                    output, None, old_logps=old_logps or real, entropy=need_entropy
                )
        return scores, time.perf_counter() - started

    def _keep_papo_masked_logps(
        self,
        output: dict[str, Any],
        scores: dict[str, torch.Tensor],
        mask: torch.Tensor,
        has_image: torch.Tensor,
        elapsed: float,
    ) -> None:
        """PAPO's masked-image log-probs under θ_old, per token, for `compute_loss` (not with
        `papo_masked_grad`: the update computes its own, with gradient)."""
        if self.args.needs_perturbed_pass and not self.args.papo_masked_grad:
            masked = scores.get("logps_perturbed")
            if masked is None:
                masked = scores.get("logps")
            if masked is None:
                masked = output["old_per_token_logps"]
            output["papo_masked_logps"] = torch.where(mask, masked.float(), 0.0)
            self._metrics["train"]["papo/perturbation_time"].append(elapsed)
        if not bool(has_image.all()) and not self._warned_papo_text_only:
            logger.warning(
                "Some rows have no image: PAPO's masked input is their unchanged prompt, so their "
                "masked log-probs equal their real ones and their perception KL is 0 (k = 0); only "
                "the entropy terms apply to them."
            )
            self._warned_papo_text_only = True

    def _token_weights(
        self,
        dep: torch.Tensor,
        mask: torch.Tensor,
        entropies: torch.Tensor | None,
        has_image: torch.Tensor,
    ) -> torch.Tensor:
        """TGF weights [B, T] of the configured selection (`select_tokens`)."""
        args = self.args
        weights = select_tokens(
            args.token_selection,
            dep=dep,
            mask=mask,
            ratio=args.token_ratio,
            entropy=None if entropies is None else entropies.float(),
            generator=self._perturbation_generator("random_selection"),
            entropy_ratio=args.entropy_ratio,
        )
        if TOKEN_SELECTIONS[args.token_selection].needs_dependency:
            # Without an image there is nothing to select by: every token keeps its gradient.
            weights = torch.where(has_image[:, None], weights, mask.float())
        return weights

    def _log_vppo_metrics(self, dep, mask, weights, alpha, traj, valid_rows, elapsed, need_dep):
        gather = self.accelerator.gather
        m = mask.float()
        sums = torch.stack(
            [
                (dep * m).sum(),
                m.sum(),
                (dep * weights * m).sum(),
                (weights * m).sum(),
                (dep * (1 - weights) * m).sum(),
                ((1 - weights) * m).sum(),
            ]
        ).detach()
        sums = gather(sums.view(1, -1)).sum(0)
        metrics = self._metrics["train"]
        if need_dep:
            metrics["vppo/dependency_mean"].append((sums[0] / sums[1].clamp(min=1)).item())
            metrics["vppo/dependency_selected_mean"].append(
                (sums[2] / sums[3].clamp(min=1e-8)).item()
            )
            metrics["vppo/dependency_rejected_mean"].append(
                (sums[4] / sums[5].clamp(min=1e-8)).item()
            )
            all_traj = gather(traj)[gather(valid_rows.float()) > 0.5]
            if all_traj.numel():
                metrics["vppo/trajectory_dependency_mean"].append(all_traj.mean().item())
                metrics["vppo/trajectory_dependency_std"].append(
                    all_traj.std(unbiased=False).item()
                )
            metrics["vppo/perturbation_time"].append(elapsed)
        metrics["vppo/kept_token_frac"].append((sums[3] / sums[1].clamp(min=1)).item())
        all_alpha = gather(alpha)
        metrics["vppo/tas_scale_min"].append(all_alpha.min().item())
        metrics["vppo/tas_scale_mean"].append(all_alpha.mean().item())
        metrics["vppo/tas_scale_max"].append(all_alpha.max().item())
