"""The no-grad scoring passes of `VPPOTrainer`: padding-free forwards and LM-head gathering.

`ScoringMixin._scoring_pass` runs the real-image and perturbed-image forwards over a scored batch
without the policy's gradients, rows sorted by length and each chunk trimmed to its own widths;
it yields TRL's old log-probs, the entropies, the perturbed log-probs and, for the exact
estimators ('kl'/'jsd'), the dependency from the two passes' last hidden states multiplied by the
LM head (`full_lm_head`, gathered when the head is sharded). `compute_visual_dependency` /
`_dependency_scores` turn these into per-token visual dependency; `perturb_pixel_values` builds
the uninformative images, and with perturbation 'none' `_without_images` the prompts without any
image (vision tokens removed, no image tensors: the perturbed forward skips the vision tower).

The mixin has no state of its own. It needs from the host trainer (a `GRPOTrainer`):
`self.args` (a `VPPOConfig`), `self.model`, `self.accelerator`, `self.state` (the global step),
`self.vision` (the model's vision layout), `self.processing_class`, `self._tokenizer`,
`self.temperature` and `self._get_per_token_logps_and_entropies` (TRL's log-prob pass).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from trl.models.utils import disable_gradient_checkpointing

from vppo.perception import (
    NO_IMAGE,
    TOKEN_ESTIMATORS,
    dependency_from_passes,
    perturb_pixel_values,
    take_positions,
    text_only_positions,
)
from vppo.trainer.batching import length_sorted_chunks, splits_by_row, take_rows

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


# Per-token keys over the full sequence [prompt | completion] (the processor's type ids).
_SEQUENCE_KEYS = ("token_type_ids", "mm_token_type_ids")

# Keys a row chunk of the scored batch needs for a forward pass.
_CHUNK_KEYS = (
    "prompt_ids",
    "prompt_mask",
    "completion_ids",
    "completion_mask",
    "num_images",
    "num_tiles",
    *_FORWARD_KEYS,
)


@contextmanager
def full_lm_head(head: torch.nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """(weight [V, H], bias [V] or None) of the LM head as whole tensors, also when it is sharded.

    The exact KL multiplies hidden states by the head itself, outside the model's forward, so the
    head's shards are never gathered for it by the engine. Every process must enter this together
    (it is a collective when sharded):

    - FSDP2: the parameters are DTensors; `full_tensor()` all-gathers a plain copy for this use.
    - DeepSpeed ZeRO-3: the parameters are empty outside their module's forward;
      `deepspeed.zero.GatheredParameters` materialises them (read-only, `modifier_rank=None`) for
      the duration of the block and re-partitions them on exit. A parameter that is already
      gathered (a head tied to the input embeddings, kept available by ZeRO) is left alone.
    - Otherwise (single device, DDP, ZeRO-1/2): the parameters themselves.
    """
    weight, bias = head.weight, getattr(head, "bias", None)
    params = [p for p in (weight, bias) if p is not None]
    # ZeRO-3 marks its parameters with ds_status; NOT_AVAILABLE means partitioned away.
    partitioned = [
        p
        for p in params
        if getattr(getattr(p, "ds_status", None), "name", "AVAILABLE") != "AVAILABLE"
    ]
    gather = nullcontext()
    if partitioned:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None)
    with gather:
        try:
            from torch.distributed.tensor import DTensor
        except ImportError:  # torch built without distributed support
            DTensor = ()  # noqa: N806
        if isinstance(weight, DTensor):
            weight = weight.full_tensor()
        if isinstance(bias, DTensor):
            bias = bias.full_tensor()
        yield weight.detach(), None if bias is None else bias.detach()


class _LastHiddenState:
    """Forward hook on the model's backbone that keeps the last hidden states of the completion
    positions only ([n, T, H], a copy, so the backbone's [n, L, H] output is freed at once)."""

    def __init__(self, backbone: torch.nn.Module):
        self.backbone = backbone
        self.completion_width = 0
        self.hidden: list[torch.Tensor] = []

    def __enter__(self) -> _LastHiddenState:
        self._handle = self.backbone.register_forward_hook(self._keep)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def _keep(self, module, args, output) -> None:
        t = self.completion_width
        # Position i predicts token i + 1: the completion's predictors are the T positions before the end.
        self.hidden.append(output.last_hidden_state[:, -t - 1 : -1].clone())

    def pop(self) -> torch.Tensor:
        hidden, self.hidden = torch.cat(self.hidden, dim=0), []
        return hidden


class ScoringMixin:
    """`VPPOTrainer`'s no-grad passes and visual-dependency scores (see the module docstring for
    what it needs from the host trainer)."""

    def _perturbation_generator(self, purpose: str = "perturbation") -> torch.Generator:
        """Seeded by (perturbation_seed, purpose, global step, process): reproducible and resumable."""
        key = (
            f"{self.args.perturbation_seed}:{purpose}:{self.state.global_step}:"
            f"{self.accelerator.process_index}"
        )
        seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & (2**63 - 1)
        return torch.Generator().manual_seed(seed)

    def perturb_pixel_values(
        self, output: dict[str, Any], inputs: list[dict[str, Any]], generator: torch.Generator
    ) -> torch.Tensor:
        """pixel_values of the uninformative images I', laid out exactly like `output["pixel_values"]`.

        Override to add a layout or a perturbation; every response gets its own random mask.
        With perturbation 'none' there is nothing to perturb: None, and the perturbed pass runs on
        the prompts without their images (`_without_images`).
        """
        if self.args.perturbation == NO_IMAGE:
            return None
        images = None
        if self.args.perturbation != "blacken":
            images = [
                [
                    img
                    for img in (row.get("images") if "images" in row else [row.get("image")]) or []
                    if img is not None
                ]
                for row in inputs
            ]
        return perturb_pixel_values(
            output["pixel_values"],
            self.vision,
            self.args.perturbation,
            self.args.perturbation_prob,
            generator,
            output.get("pixel_attention_mask"),
            patch_size=self.args.perturbation_patch_size,
            images=images,
            image_processor=self.processing_class.image_processor,
        )

    def _without_images(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The scored batch with every vision token removed from its prompts (perturbation 'none').

        The prompts lose their vision token ids (`self.vision.pad_token_ids_to_ban`: placeholders and
        start/end markers) and are left-padded again; the completions stay as they are, so the
        completion positions and `logits_to_keep` are the real pass's. No image tensor is passed
        (the vision tower does not run), and the per-token type ids follow the kept prompt columns.
        The model computes its positions (Qwen's M-RoPE included) from the new ids and mask.
        """
        prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_mask"]
        positions = text_only_positions(prompt_ids, prompt_mask, self.vision.pad_token_ids_to_ban)
        out = {
            k: v
            for k, v in batch.items()
            if k not in _FORWARD_KEYS and k not in ("num_images", "num_tiles")
        }
        out["prompt_ids"] = take_positions(prompt_ids, positions, fill=self._tokenizer.pad_token_id)
        out["prompt_mask"] = take_positions(prompt_mask, positions, fill=0)
        width = prompt_ids.size(1)
        for key in _SEQUENCE_KEYS:
            if key in batch:
                values = batch[key]
                prompt_part = take_positions(values[:, :width], positions, fill=0)
                out[key] = torch.cat([prompt_part, values[:, width:]], dim=1)
        return out

    def _forward_kwargs(self, output: dict[str, Any]) -> dict[str, Any]:
        kwargs = {k: output[k] for k in _FORWARD_KEYS if k in output}
        kwargs["num_images"] = output.get("num_images")
        kwargs["num_tiles"] = output.get("num_tiles")
        return kwargs

    def compute_visual_dependency(
        self,
        output: dict[str, Any],
        perturbed_pixel_values: torch.Tensor | None,
        need_entropy: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-token dependency [B, T] (and entropies [B, T] if asked), no grad, policy θ_old."""
        scores = self._dependency_scores(
            output, perturbed_pixel_values, need_entropy, old_logps=False
        )
        return scores["dependency"], scores.get("entropies")

    def _dependency_scores(
        self,
        output: dict[str, Any],
        perturbed_pixel_values: torch.Tensor | None,
        need_entropy: bool,
        old_logps: bool,
    ) -> dict[str, torch.Tensor]:
        """`_scoring_pass` with the perturbed image: "dependency" [B, T], and "entropies" / "logps".

        The real-image pass yields the old log-probs ("logps") when `old_logps`, so they cost no extra
        pass; k3 reuses old log-probs TRL already has (vLLM importance sampling) when it can.
        """
        args = self.args
        mask = output["completion_mask"].bool()
        if args.dependency_estimator in TOKEN_ESTIMATORS:
            reuse = None if old_logps or need_entropy else output.get("old_per_token_logps")
            scores = self._scoring_pass(
                output,
                perturbed_pixel_values,
                old_logps=reuse is None,
                entropy=need_entropy,
                dependency=True,
            )
            logp_real = scores["logps"] if reuse is None else reuse
            scores["dependency"] = dependency_from_passes(
                args.dependency_estimator,
                mask=mask,
                logp_real=logp_real,
                logp_perturbed=scores["logps_perturbed"],
                clip=args.dependency_clip,
            )
            return scores
        return self._scoring_pass(
            output,
            perturbed_pixel_values,
            old_logps=old_logps,
            entropy=need_entropy,
            dependency=True,
            exact=True,
        )

    def _scoring_pass(
        self,
        output: dict[str, Any],
        perturbed_pixel_values: torch.Tensor | None,
        *,
        old_logps: bool = False,
        entropy: bool = False,
        dependency: bool = False,
        exact: bool = False,
    ) -> dict[str, Any]:
        """No-grad forwards over the scored batch that skip padding, chunk by chunk.

        Rows are sorted by length and cut into chunks of at most `per_device_train_batch_size` rows
        and at most 10% padding (the same number of chunks on every process), each trimmed to its
        own widths. Per chunk: one real-image forward when its log-probs, entropies or
        hidden states are needed, then, with `dependency`, one forward on `perturbed_pixel_values`
        (None on a process without images: its own, absent, pixels), or, with perturbation 'none',
        on the prompts without their vision tokens and without any image tensor. With `exact`,
        the 'kl'/'jsd' dependency is computed from the two passes' last hidden states before the next
        chunk runs, so memory stays O(chunk × V) for the whole step.

        Returns [B, T] tensors, 0 at padding, under the keys that apply: "logps" (real image; TRL's
        old log-probs), "entropies", "logps_perturbed", "dependency".
        """
        args = self.args
        mask = output["completion_mask"]
        rows, width = mask.shape
        batch = {k: output[k] for k in _CHUNK_KEYS if k in output}
        perturbed_batch = None
        if dependency and args.perturbation == NO_IMAGE:
            perturbed_batch = self._without_images(batch)
        elif dependency:
            perturbed_batch = dict(batch)
            if perturbed_pixel_values is not None:
                perturbed_batch["pixel_values"] = perturbed_pixel_values
        real = old_logps or entropy or exact
        chunk_rows = args.per_device_train_batch_size
        split = splits_by_row(output)
        if split:
            chunks = length_sorted_chunks(batch["prompt_mask"], mask, chunk_rows)
            # Sharded engines need the same number of forwards on every process.
            count = torch.tensor([len(chunks)], device=mask.device)
            count = int(self.accelerator.gather(count).max())
            if count > len(chunks):
                chunks = length_sorted_chunks(
                    batch["prompt_mask"], mask, chunk_rows, num_chunks=count
                )
        else:
            chunks = [list(range(rows))]  # TRL slices the batch into chunks of full width
        results: dict[str, torch.Tensor] = {}

        def store(key: str, value: torch.Tensor, index: list[int]) -> None:
            if key not in results:
                results[key] = mask.new_zeros((rows, width), dtype=value.dtype)
            results[key][index, : value.size(1)] = value

        unwrapped = self.accelerator.unwrap_model(self.model)
        base = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
        capture = _LastHiddenState(base.base_model) if exact else nullcontext()
        head = full_lm_head(base.get_output_embeddings()) if exact else nullcontext((None, None))
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, args.gradient_checkpointing_kwargs),
            capture,
            head as (weight, bias),
        ):
            for index in chunks:
                if not split:
                    sub, sub_perturbed = batch, perturbed_batch
                else:
                    sub = take_rows(batch, index, self._tokenizer.pad_token_id)
                    sub_perturbed = (
                        None
                        if perturbed_batch is None
                        else take_rows(perturbed_batch, index, self._tokenizer.pad_token_id)
                    )
                t = sub["completion_ids"].size(1)
                if exact:
                    capture.completion_width = t
                hidden = []
                for images, wanted in ((sub, real), (sub_perturbed, sub_perturbed is not None)):
                    if not wanted:
                        continue
                    ids = torch.cat([images["prompt_ids"], images["completion_ids"]], dim=1)
                    attention = torch.cat([images["prompt_mask"], images["completion_mask"]], dim=1)
                    logps, entropies, _ = self._get_per_token_logps_and_entropies(
                        self.model,
                        ids,
                        attention,
                        t,
                        batch_size=chunk_rows,
                        compute_entropy=entropy and images is sub,
                        **self._forward_kwargs(images),
                    )
                    if images is sub:
                        store("logps", logps, index)
                        if entropies is not None:
                            store("entropies", entropies, index)
                    else:
                        store("logps_perturbed", logps, index)
                    if exact:
                        hidden.append(capture.pop())
                if exact:
                    dep = dependency_from_passes(
                        args.dependency_estimator,
                        mask=sub["completion_mask"].bool(),
                        hidden_real=hidden[0],
                        hidden_perturbed=hidden[1],
                        lm_head_weight=weight,
                        lm_head_bias=bias,
                        temperature=self.temperature,
                        chunk_size=args.kl_chunk_size,
                    )
                    store("dependency", dep, index)
        return results

    def _rows_with_images(self, output: dict[str, Any], rows: int) -> torch.Tensor:
        device = output["completion_ids"].device
        if "pixel_values" not in output:
            return torch.zeros(rows, dtype=torch.bool, device=device)
        counts = output.get("num_images")
        if counts is None:
            return torch.ones(rows, dtype=torch.bool, device=device)
        return torch.tensor([c > 0 for c in counts], dtype=torch.bool, device=device)
