"""Canary: the TRL / transformers internals VPPOTrainer relies on. When TRL changes one of them,
this file fails first and names the hook, instead of a training run failing obscurely."""

from __future__ import annotations

import inspect

import trl
from transformers import Trainer
from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_trl_minor_version_is_the_tested_one():
    assert trl.__version__.startswith("1.16."), (
        f"vppo is tested against trl 1.16.x, found {trl.__version__}; re-run the hook tests and update the pin."
    )


def test_generate_and_score_completions_signature():
    assert _params(GRPOTrainer._generate_and_score_completions) == ["self", "inputs"]


def test_calculate_rewards_signature():
    assert _params(GRPOTrainer._calculate_rewards) == [
        "self",
        "inputs",
        "prompts",
        "completions",
        "completion_ids_list",
    ]


def test_per_token_logps_signature_and_keywords():
    params = _params(GRPOTrainer._get_per_token_logps_and_entropies)
    assert params[:5] == ["self", "model", "input_ids", "attention_mask", "logits_to_keep"]
    for name in (
        "batch_size",
        "compute_entropy",
        "pixel_values",
        "image_grid_thw",
        "num_images",
        "pixel_attention_mask",
        "image_sizes",
        "token_type_ids",
        "mm_token_type_ids",
        "num_tiles",
    ):
        assert name in params, f"_get_per_token_logps_and_entropies lost its `{name}` argument"
    # It must return (logps, entropies, aux_loss): the 3-tuple arrived in trl 1.9.
    source = inspect.getsource(GRPOTrainer._get_per_token_logps_and_entropies)
    assert "return logps, entropies, aux_loss" in source


def test_compute_loss_signature_and_token_level_advantages():
    assert _params(GRPOTrainer.compute_loss) == [
        "self",
        "model",
        "inputs",
        "return_outputs",
        "num_items_in_batch",
    ]
    source = inspect.getsource(GRPOTrainer._compute_loss)
    # VPPO hands TRL [B, T] advantages; TRL must keep accepting them unchanged.
    assert "if advantages.dim() == 1:" in source
    # The loss mask must stay completion_mask (x tool_mask): TGF relies on zero advantages, not masks.
    assert (
        'mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]'
        in source
    )
    # The NLL term reproduces the dapo normalizer.
    assert (
        'normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes'
        in source
    )


def test_dataloader_and_sampler_hooks_for_dynamic_sampling():
    assert _params(Trainer._get_dataloader)[:6] == [
        "self",
        "dataset",
        "description",
        "batch_size",
        "sampler_fn",
        "is_training",
    ]
    assert _params(RepeatSampler.__init__) == [
        "self",
        "data_source",
        "mini_repeat_count",
        "batch_size",
        "repeat_count",
        "shuffle",
        "seed",
    ]


def test_scored_batch_keys_are_known_to_the_merger():
    """Every key TRL's scored batch can hold is handled by vppo.trainer.batching (or refused)."""
    from vppo.trainer import batching

    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    produced = set()
    for line in source.splitlines():
        line = line.strip()
        if line.startswith('output["') and "] =" in line:
            produced.add(line.split('"')[1])
    handled = (
        set(batching._LEFT_PADDED)
        | set(batching._RIGHT_PADDED)
        | set(batching._SEQUENCE_KEYS)
        | set(batching._PER_ROW_KEYS)
        | set(batching._SCALAR_KEYS)
        | set(batching._IMAGE_KEYS)
        | set(batching._IMPORTANCE_SAMPLING_KEYS)
        | set(batching.ROW_UNSPLITTABLE_KEYS)
    )
    assert produced, "could not read the keys of TRL's scored batch"
    assert produced <= handled, (
        f"TRL produces keys the dynamic-sampling merger does not know: {produced - handled}"
    )


def test_old_logps_are_the_first_logps_call_of_scoring_under_the_condition_vppo_mirrors():
    """VPPOTrainer answers TRL's old log-prob pass with a placeholder and computes it after dynamic
    sampling: that call must stay the first `_get_per_token_logps_and_entropies` call of scoring, under
    the condition `VPPOTrainer._trl_needs_old_logps` restates, and its only other reader must be vLLM
    importance sampling (which VPPO never defers)."""
    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    first_call = source.index("self._get_per_token_logps_and_entropies(")
    assert source.rindex("\n", 0, first_call) == source.rindex(
        "\n",
        0,
        source.index("old_per_token_logps, _, _ = self._get_per_token_logps_and_entropies("),
    )
    assert "generate_every = self.args.steps_per_generation * self.num_iterations" in source
    assert (
        "if self.args.gradient_accumulation_steps % generate_every != 0 or (\n"
        "                self.use_vllm and self.vllm_importance_sampling_correction\n            ):"
    ) in source
    uses = [
        line.strip()
        for line in source.splitlines()
        if "old_per_token_logps" in line and "#" not in line
    ]
    assert uses == [
        "old_per_token_logps, _, _ = self._get_per_token_logps_and_entropies(",
        "old_per_token_logps = None",
        "per_token_logps_diff = (old_per_token_logps - sampling_per_token_logps) * mask",
        "delta = torch.abs(old_per_token_logps - sampling_per_token_logps)",
        "if old_per_token_logps is not None:",
        'output["old_per_token_logps"] = old_per_token_logps',
    ], "TRL reads old_per_token_logps somewhere new while scoring; check VPPOTrainer's deferral"
    for helper in (GRPOTrainer._generate, GRPOTrainer._calculate_rewards):
        assert "_get_per_token_logps_and_entropies" not in inspect.getsource(helper)


def test_prepare_inputs_buffers_one_shuffled_generation_batch_as_vppo_restates():
    """VPPOTrainer._prepare_inputs replaces TRL's split of the generation batch into update
    micro-batches (the same randperm, then trimmed micro-batches); TRL's must stay this."""
    source = inspect.getsource(GRPOTrainer._prepare_inputs)
    for line in (
        "generate_every = self.args.steps_per_generation * self.num_iterations",
        "if self._step % generate_every == 0 or self._buffered_inputs is None:",
        "generation_batch = self._generate_and_score_completions(generation_batch)",
        "generation_batch = split_pixel_values_by_grid(generation_batch)",
        "generation_batch = shuffle_sequence_dict(generation_batch)",
        "generation_batches = split_tensor_dict(generation_batch, self.args.steps_per_generation)",
        "self._buffered_inputs = [unsplit_pixel_values_by_grid(batch) for batch in generation_batches]",
        "inputs = self._buffered_inputs[self._step % self.args.steps_per_generation]",
    ):
        assert line in source, f"TRL's _prepare_inputs changed: {line!r} is gone"
    from trl.trainer.utils import shuffle_sequence_dict

    assert "permutation = torch.randperm(batch_size)" in inspect.getsource(shuffle_sequence_dict)


def test_the_renamed_checkpointing_fields_are_one_without_a_warning(tmp_path):
    """transformers 5 renamed gradient_checkpointing to activation_checkpointing and warns on the old
    name, which TRL's GRPOConfig default and the recipes use; VPPOConfig takes both, silently."""
    import warnings

    from vppo.trainer import VPPOConfig

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        default = VPPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
        old = VPPOConfig(
            output_dir=str(tmp_path),
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    assert (
        default.gradient_checkpointing is default.activation_checkpointing is True
    )  # TRL's default
    assert old.activation_checkpointing is False
    assert old.activation_checkpointing_kwargs == {"use_reentrant": False}
