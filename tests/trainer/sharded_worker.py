"""Runs `vppo train` inside each rank of tests/trainer/test_trainer_sharded.py and records, at the first
rollout, what the test compares with a single-process computation. Not a test module itself.

Recorded per rank in $VPPO_TEST_DUMP/rank{R}.pt: which parameters are not shards (FSDP2 DTensors
or DeepSpeed ZeRO-3 partitions) and the local/full element counts; the scored batch (ids, masks, pixel values, the perturbed pixel
values); the dependency, raw advantages and per-token advantages handed to TRL's loss. With
`papo_masked_grad`, also $VPPO_TEST_DUMP/masked{R}.pt: the first update micro-batch's inputs and the
masked-image log-probs its forward with gradient gave.
"""

from __future__ import annotations

import os
import sys

import torch
from transformers import TrainerCallback

from vppo.trainer import scoring as scoring_module
from vppo.trainer import trainer as trainer_module
from vppo.trainer.cli import main

DUMP = os.environ["VPPO_TEST_DUMP"]
_recorded: dict = {}


def _sharding(model) -> dict:
    """Which parameters are shards (FSDP2 DTensors or DeepSpeed ZeRO-3 partitions) and their sizes."""
    from torch.distributed.tensor import DTensor

    named = list(model.named_parameters())
    if any(hasattr(p, "ds_tensor") for _, p in named):  # DeepSpeed ZeRO-3
        head = model.get_output_embeddings().weight
        return {
            "head_partitioned": head.numel() == 0 and head.ds_tensor.numel() < head.ds_numel,
            "not_sharded": [n for n, p in named if not hasattr(p, "ds_tensor")],
            "local_numel": sum(p.ds_tensor.numel() for _, p in named if hasattr(p, "ds_tensor")),
            "full_numel": sum(getattr(p, "ds_numel", p.numel()) for _, p in named),
        }
    return {
        "not_sharded": [n for n, p in named if not isinstance(p, DTensor)],
        "local_numel": sum(
            (p.to_local() if isinstance(p, DTensor) else p).numel() for _, p in named
        ),
        "full_numel": sum(p.numel() for _, p in named),
    }


_perturb = trainer_module.VPPOTrainer.perturb_pixel_values
_apply = trainer_module.VPPOTrainer._apply_vppo
_token_advantages = trainer_module.token_advantages
_dependency_from_passes = scoring_module.dependency_from_passes


def dependency_from_passes(estimator, **kwargs):
    if kwargs.get("logp_real") is not None:  # the sampled-token estimators (k3)
        _recorded.setdefault("logp_real", kwargs["logp_real"].detach().clone())
        _recorded.setdefault("logp_perturbed", kwargs["logp_perturbed"].detach().clone())
    return _dependency_from_passes(estimator, **kwargs)


def perturb_pixel_values(self, output, inputs, generator):
    perturbed = _perturb(self, output, inputs, generator)
    if perturbed is not None:  # perturbation 'none' has no perturbed pixels
        _recorded.setdefault("perturbed_pixel_values", perturbed.detach().clone())
    return perturbed


def token_advantages(advantages, dep, mask, **kwargs):
    out = _token_advantages(advantages, dep, mask, **kwargs)
    _recorded.setdefault("dep", dep.detach().clone())
    _recorded.setdefault("token_advantages", out.detach().clone())
    return out


class _RecordSharding(TrainerCallback):
    """At train begin (model prepared, no forward yet: FSDP2 keeps its last group, the final norm
    and LM head, gathered from a forward until the backward) every parameter is a shard."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        _recorded["sharding"] = _sharding(model)


_init = trainer_module.VPPOTrainer.__init__


def init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.add_callback(_RecordSharding())


def apply_vppo(self, output, inputs, **kwargs):
    first = self.state.global_step == 0 and "rank" not in _recorded
    if first:
        _recorded["rank"] = self.accelerator.process_index
        _recorded["advantages"] = output["advantages"].detach().clone()
        _recorded["forward_keys"] = [k for k in trainer_module._FORWARD_KEYS if k in output]
        for key in (
            "prompt_ids",
            "prompt_mask",
            "completion_ids",
            "completion_mask",
            *_recorded["forward_keys"],
        ):
            _recorded[key] = output[key].detach().clone()
    result = _apply(self, output, inputs, **kwargs)
    if first:
        torch.save(_recorded, os.path.join(DUMP, f"rank{_recorded['rank']}.pt"))
    return result


_masked_logps_with_grad = trainer_module.VPPOTrainer._masked_logps_with_grad
_masked_recorded = False


def masked_logps_with_grad(self, model, inputs):
    global _masked_recorded
    logps = _masked_logps_with_grad(self, model, inputs)
    if not _masked_recorded:
        _masked_recorded = True
        keys = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
        record = {k: inputs[k].detach().clone() for k in keys}
        record["forward_keys"] = [k for k in trainer_module._FORWARD_KEYS if k in inputs]
        for key in (*record["forward_keys"], "papo_masked_pixel_values"):
            record[key] = inputs[key].detach().clone()
        record["logps"] = logps.detach().clone()
        record["requires_grad"] = logps.requires_grad
        rank = self.accelerator.process_index
        torch.save(record, os.path.join(DUMP, f"masked{rank}.pt"))
    return logps


trainer_module.VPPOTrainer._masked_logps_with_grad = masked_logps_with_grad
trainer_module.VPPOTrainer.__init__ = init
trainer_module.VPPOTrainer.perturb_pixel_values = perturb_pixel_values
trainer_module.VPPOTrainer._apply_vppo = apply_vppo
trainer_module.token_advantages = token_advantages
scoring_module.dependency_from_passes = dependency_from_passes

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
