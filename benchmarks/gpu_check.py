"""GPU check of the recipes' structure: DAPO then VPPO on a random Qwen2.5-VL of a released size.

Nothing is downloaded. The model is built in memory from a configuration written below (the
released 3B or 7B shape, random weights, bf16, FlashAttention-2 when `flash_attn` imports, SDPA
otherwise) around the tiny tokenizer and image processor of `vppo.models.build_tiny_vlm`, and
trained through the real `VPPOTrainer` (`Trainer.train()`), first as DAPO, then as VPPO (k3),
from the same weights. Each trainer is freed before the next starts (its memory is checked to have
come back).

The recipes' structure, scaled to one GPU: each rollout is 48 responses (6 prompts x 8) trained by
3 optimizer steps of 4 accumulated micro-batches of 4 rows (steps_per_generation = 3 x
gradient_accumulation_steps), with dynamic sampling on (up to 2 refill rounds; a third of the
prompts score the same in every response, so their groups are dropped and refilled). TRL needs
old log-probs, so DAPO runs 1 no-grad pass per rollout and VPPO 2 (real and perturbed image).
Images give 256-1,280 image tokens (sizes vary row by row; min/max_pixels 256*28*28 .. 1280*28*28).
Completions are synthetic (`bench_step_overhead.synthetic_completions`: random tokens, log-normal
lengths with median a third of the 2,048 cap, ~3% cut at the cap) in place of generation, so
every figure is the trainer's own and vLLM's generation cost is left out.

Per method, per rollout (mean over the timed rollouts, after one warm-up rollout):

- phase times: `scoring` (TRL's `_generate_and_score_completions`, every round, minus VPPO's
  passes), `passes` (`_apply_vppo`: the no-grad passes; old log-probs, and for VPPO the perturbed
  image) and `update` (compute_loss + backward + clipping + optimizer, i.e. the optimizer steps'
  time outside the rollout), with the peak memory of each phase (torch.cuda.max_memory_allocated,
  reset around phases; None on CPU);
- tokens/s (unpadded prompt + completion tokens of the trained rows / the rollout's wall time),
  no-grad passes (rows fed to no-grad forwards / trained rows), generation rounds;
- VPPO/DAPO ratios of each.

bf16 numerics on VPPO's first (warm-up) rollout: trimmed (`_scoring_pass`) vs full-width
(`GRPOTrainer._get_per_token_logps_and_entropies` on the whole batch) log-probs, max |diff| on
completion tokens; the k3 noise floor (dependency against pixel_values x (1 + 1e-3)) next to the
real k3 dependency (means over completion tokens); exact KL vs k3 on the same perturbed batch:
Pearson correlation of the per-response trajectory dependency and the Jaccard overlap of the TGF
top-40% masks (independent masks would overlap 0.4 / 1.6 = 0.25).

Defaults: `--steps 6` (2 timed rollouts, 6 optimizer steps per method), gradient checkpointing on,
optimizer AdamW at 3B and plain SGD at 7B: the model is bf16 (no fp32 master copy), so AdamW's two
bf16 moments would add 2 x 16.6 GB to 7B's 16.6 GB of weights and 16.6 GB of gradients; SGD keeps
no state and leaves room for the activations of 3.4k-token rows. The optimizer's own time is a
small part of the update and the same for both methods (`--optim adamw_torch` to change it).

    python benchmarks/gpu_check.py --size 7b --json gpu_check_7b.json   # one H200: < 8 minutes
    python benchmarks/gpu_check.py --size 3b --json gpu_check_3b.json
    python benchmarks/gpu_check.py --cpu-smoke                          # the same code, tiny, CPU

On a machine without internet where only torch, transformers and accelerate are installed, carry
the rest as wheels from a machine with internet (same Python version and platform; add a
flash-attn wheel built for that torch and CUDA to get FlashAttention-2):

    pip download -d wheels -c constraints.txt trl==1.16.0 datasets peft pyyaml jinja2 sympy \
        pylatexenc tqdm matplotlib . --no-deps        # then on the GPU machine:
    pip install --no-index --find-links wheels --no-deps wheels/*.whl
    python benchmarks/gpu_check.py --size 7b --json gpu_check_7b.json

The test suite runs `--cpu-smoke` (tests/benchmarks/test_gpu_check.py), so the script keeps working.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from PIL import Image
from transformers import (
    PrinterCallback,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    TrainerCallback,
)
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package

from bench_step_overhead import split_reward, synthetic_completions  # noqa: E402

from vppo.algorithm import tgf_mask  # noqa: E402
from vppo.data import load_training_dataset  # noqa: E402
from vppo.data.synthetic import SYNTHETIC_VOCAB_TEXTS  # noqa: E402
from vppo.models import build_tiny_vlm  # noqa: E402
from vppo.perception import trajectory_dependency  # noqa: E402
from vppo.trainer import VPPOConfig, VPPOTrainer  # noqa: E402

try:
    import flash_attn  # noqa: F401

    ATTENTION = "flash_attention_2"
except Exception:  # not installed, or not loadable here
    ATTENTION = "sdpa"

# Released Qwen2.5-VL text and vision shapes (config.json of the Instruct checkpoints).
SIZES: dict[str, dict[str, Any]] = {
    "3b": {
        "text": dict(
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            vocab_size=151_936,
        ),
        "vision": dict(
            depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048
        ),
        "tie_word_embeddings": True,
    },
    "7b": {
        "text": dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            vocab_size=152_064,
        ),
        "vision": dict(
            depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584
        ),
        "tie_word_embeddings": False,
    },
}
METHODS = {"dapo": {"token_selection": "none", "use_tas": False}, "vppo": {}}
DEFAULT_OPTIM = {"3b": "adamw_torch", "7b": "sgd"}
UPDATES_PER_ROLLOUT = 3  # optimizer steps per rollout, as in the 7B and 32B recipes
UNIT = 28  # pixels per side of one image token (14-px patches, 2 x 2 merge)
NOISE_EPS = 1e-3  # the near-zero perturbation of the noise floor: pixel_values x (1 + NOISE_EPS)
TGF_RATIO = 0.4
# The recipes' structure at two scales. grids: image sizes in image tokens (rows x columns of 28 px).
SCALES: dict[str, dict[str, Any]] = {
    "gpu": {
        "num_generations": 8,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 4,
        "max_completion_length": 2048,
        "pixels": (256, 1280),
        "prompts": 64,
        "grids": [(16, 16), (16, 30), (24, 32), (32, 32), (32, 40), (20, 28)],
    },
    "cpu": {
        "num_generations": 4,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 2,
        "max_completion_length": 32,
        "pixels": (4, 16),
        "prompts": 24,
        "grids": [(2, 2), (2, 4), (3, 4), (4, 4)],
    },
}


# ------------------------------------------------------------------------------ CUDA helpers
def _cuda() -> bool:
    return torch.cuda.is_available()


def _sync() -> None:
    if _cuda():
        torch.cuda.synchronize()


def _reset_peak() -> None:
    if _cuda():
        torch.cuda.reset_peak_memory_stats()


def _peak_mb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if _cuda() else None


def _allocated_mb() -> float | None:
    return torch.cuda.memory_allocated() / 2**20 if _cuda() else None


# ------------------------------------------------------------------------------ model and data
def size_config(size: str, tiny_config: Any) -> Any:
    """The Qwen2.5-VL configuration of a released `size`, on the tiny model's token ids."""
    shape = SIZES[size]
    base = tiny_config.to_dict()
    text = {**base["text_config"], **shape["text"], "max_position_embeddings": 32768}
    text.pop("layer_types", None)  # the tiny model's per-layer list; rebuilt for the new depth
    head_dim = shape["text"]["hidden_size"] // shape["text"]["num_attention_heads"]
    text["rope_parameters"] = {**text["rope_parameters"], "mrope_section": [16, 24, 24]}
    assert sum(text["rope_parameters"]["mrope_section"]) * 2 == head_dim
    vision = {**base["vision_config"], **shape["vision"], "fullatt_block_indexes": [7, 15, 23, 31]}
    ids = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=shape["tie_word_embeddings"],
        **{k: base[k] for k in ids},
    )


def tiny_model(scale: dict[str, Any]):
    low, high = scale["pixels"]
    return build_tiny_vlm(
        "qwen2_5_vl",
        vocab_texts=SYNTHETIC_VOCAB_TEXTS,
        seed=0,
        min_pixels=low * UNIT**2,
        max_pixels=high * UNIT**2,
    )


def build_model(size: str | None, scale: dict[str, Any]):
    """A fresh model (the same weights every call) and its processor: the tiny one for `size`
    None, else a random bf16 Qwen2.5-VL of the released shape built directly on the GPU."""
    tiny, processor = tiny_model(scale)
    if size is None:
        return tiny, processor
    config = size_config(size, tiny.config)
    del tiny
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=torch.bfloat16, attn_implementation=ATTENTION
        )
    return model, processor


def recipe_reward(completions, answer, **kwargs) -> list[float]:
    """`split_reward` (mixed rewards within a group of random text), except that prompts whose
    answer is "drop" score 0 in every response: dynamic sampling drops those groups and refills."""
    return [
        0.0 if a == "drop" else r for a, r in zip(answer, split_reward(completions), strict=True)
    ]


def make_dataset(scale: dict[str, Any]):
    """Prompts whose images cycle through `scale["grids"]` (image tokens = pixels / 28²); every
    third prompt's groups are uniform (answer "drop")."""
    rows: dict[str, list[Any]] = {"images": [], "problem": [], "answer": []}
    for i in range(scale["prompts"]):
        h, w = scale["grids"][i % len(scale["grids"])]
        rng = np.random.default_rng(i)
        blocks = rng.integers(
            0, 256, (h * 2, w * 2, 3), dtype=np.uint8
        )  # one colour per 14-px patch
        pixels = np.kron(blocks, np.ones((UNIT // 2, UNIT // 2, 1), dtype=np.uint8))
        rows["images"].append([Image.fromarray(pixels)])
        rows["problem"].append(
            f"<image>Question {i}: how many shapes are in the picture? "
            "Think step by step, then give the number."
        )
        rows["answer"].append("drop" if i % 3 == 0 else "keep")
    low, high = scale["pixels"]
    return load_training_dataset(
        Dataset.from_dict(rows),
        prompt_template="plain",
        min_pixels=low * UNIT**2,
        max_pixels=high * UNIT**2,
    )


# ------------------------------------------------------------------------------ numerics
def _mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float(values.float()[mask].mean())


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def first_rollout_numerics(
    trainer: VPPOTrainer, output: dict[str, Any], inputs: list[dict[str, Any]]
) -> dict[str, Any]:
    """bf16 numerics of one scored batch (after `_apply_vppo`, so old log-probs are the real ones)."""
    mask = output["completion_mask"].bool()
    trimmed = trainer._scoring_pass(output, None, old_logps=True)["logps"]
    ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
    attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
    with (
        torch.no_grad(),
        disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs),
    ):
        full = GRPOTrainer._get_per_token_logps_and_entropies(
            trainer,
            trainer.model,
            ids,
            attention,
            output["completion_ids"].size(1),
            batch_size=trainer.args.per_device_train_batch_size,
            **trainer._forward_kwargs(output),
        )[0]
    perturbed = trainer.perturb_pixel_values(output, inputs, trainer._perturbation_generator())
    k3 = trainer.compute_visual_dependency(output, perturbed, False)[0]
    floor = trainer.compute_visual_dependency(
        output, output["pixel_values"] * (1 + NOISE_EPS), False
    )[0]
    trainer.args.dependency_estimator = "kl"
    try:
        kl = trainer.compute_visual_dependency(output, perturbed, False)[0]
    finally:
        trainer.args.dependency_estimator = "k3"
    traj = torch.stack([trajectory_dependency(k3, mask), trajectory_dependency(kl, mask)]).double()
    pearson = float(torch.corrcoef(traj)[0, 1])
    kept_k3, kept_kl = tgf_mask(k3, mask, TGF_RATIO), tgf_mask(kl, mask, TGF_RATIO)
    jaccard = float((kept_k3 & kept_kl).sum() / (kept_k3 | kept_kl).sum().clamp(min=1))
    k3_mean, floor_mean = _mean(k3, mask), _mean(floor, mask)
    return {
        "rows": int(mask.size(0)),
        "completion_tokens": int(mask.sum()),
        "logps_trimmed_vs_full_width_max_abs_diff": float((trimmed - full).abs()[mask].max()),
        "logps_trimmed_vs_full_width_mean_abs_diff": _mean((trimmed - full).abs(), mask),
        "k3_dependency_mean": k3_mean,
        "k3_noise_floor_mean": floor_mean,
        "noise_floor_perturbation": f"pixel_values * (1 + {NOISE_EPS:g})",
        "noise_floor_over_k3": floor_mean / k3_mean if k3_mean else None,
        "kl_dependency_mean": _mean(kl, mask),
        "kl_vs_k3_trajectory_pearson": _finite(pearson),
        "kl_vs_k3_tgf_jaccard": jaccard,
        "tgf_jaccard_if_independent": TGF_RATIO / (2 - TGF_RATIO),
    }


# ------------------------------------------------------------------------------ phase recorder
class PhaseRecorder(TrainerCallback):
    """Times and peak memory of each rollout's phases, from wrappers on the trainer's own methods
    (`_generate_and_score_completions`, `_score_round`, `_apply_vppo`) and the optimizer steps'
    callbacks; rows fed to no-grad forwards are counted by a forward pre-hook."""

    def __init__(self, trainer: VPPOTrainer, numerics: bool):
        self.rollouts: list[dict[str, Any]] = []
        self.numerics: dict[str, Any] | None = None
        self._want_numerics = numerics
        self._counting = True
        self._step_start = 0.0
        trainer.model.register_forward_pre_hook(self._count_nograd_rows, with_kwargs=True)
        rollout, score_round, apply = (
            trainer._generate_and_score_completions,
            trainer._score_round,
            trainer._apply_vppo,
        )
        merge = trainer.processing_class.image_processor.merge_size
        cap = trainer.args.max_completion_length

        def timed_rollout(inputs):
            _sync()
            _reset_peak()
            record = {"rounds": 0, "nograd_rows": 0, "steps_s": 0.0, "update_peak_mb": None}
            self.rollouts.append(record)
            start = time.perf_counter()
            output = rollout(inputs)
            _sync()
            record["rollout_s"] = time.perf_counter() - start
            record["scoring_s"] = record["rollout_s"] - record["passes_s"]
            mask = output["completion_mask"]
            lengths = mask.sum(1)
            image_tokens = output["image_grid_thw"].prod(-1) // merge**2
            record.update(
                rows=int(mask.size(0)),
                tokens=int(output["prompt_mask"].sum() + mask.sum()),
                completion_mean=float(lengths.float().mean()),
                completion_max=int(lengths.max()),
                truncated=int((lengths == cap).sum()),
                image_tokens_min=int(image_tokens.min()),
                image_tokens_max=int(image_tokens.max()),
                image_tokens_mean=float(image_tokens.float().mean()),
            )
            _reset_peak()
            return output

        def counted_round(inputs, defer):
            self.rollouts[-1]["rounds"] += 1
            return score_round(inputs, defer)

        def timed_apply(output, inputs, old_logps=False):
            record = self.rollouts[-1]
            _sync()
            record["scoring_peak_mb"] = _peak_mb()
            _reset_peak()
            start = time.perf_counter()
            result = apply(output, inputs, old_logps)
            _sync()
            record["passes_s"] = time.perf_counter() - start
            record["passes_peak_mb"] = _peak_mb()
            if self._want_numerics and self.numerics is None:
                self._counting = False
                self.numerics = first_rollout_numerics(trainer, result, inputs)
                self._counting = True
                _sync()
                record["passes_s"] = time.perf_counter() - start  # warm-up rollout: not reported
            return result

        trainer._generate_and_score_completions = timed_rollout
        trainer._score_round = counted_round
        trainer._apply_vppo = timed_apply

    def _count_nograd_rows(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and self._counting and not torch.is_grad_enabled() and self.rollouts:
            self.rollouts[-1]["nograd_rows"] += ids.size(0)

    def on_step_begin(self, args, state, control, **kwargs):
        _sync()
        _reset_peak()
        self._step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        record = self.rollouts[-1]
        record["steps_s"] += time.perf_counter() - self._step_start
        peak = _peak_mb()
        if peak is not None:
            record["update_peak_mb"] = max(record["update_peak_mb"] or 0.0, peak)

    def summary(self) -> dict[str, Any]:
        timed = self.rollouts[1:]  # the first rollout warms up kernels (and carries the numerics)
        n = len(timed)

        def mean(key: str) -> float:
            return sum(r[key] for r in timed) / n

        def peak(key: str) -> float | None:
            values = [r[key] for r in timed if r.get(key) is not None]
            return max(values) if values else None

        for r in self.rollouts:
            r["update_s"] = r["steps_s"] - r["rollout_s"]
        phases = {
            name: {"s": mean(f"{name}_s"), "peak_mb": peak(f"{name}_peak_mb")}
            for name in ("scoring", "passes", "update")
        }
        total = sum(r["steps_s"] for r in timed)
        peaks = [p["peak_mb"] for p in phases.values() if p["peak_mb"] is not None]
        return {
            "rollout_s": total / n,
            "phases": phases,
            "peak_mb": max(peaks) if peaks else None,
            "tokens_per_s": sum(r["tokens"] for r in timed) / total,
            "nograd_passes": sum(r["nograd_rows"] for r in timed) / sum(r["rows"] for r in timed),
            "generation_rounds": mean("rounds"),
            "tokens_per_rollout": mean("tokens"),
            "completion_tokens_mean": mean("completion_mean"),
            "completion_tokens_max": max(r["completion_max"] for r in timed),
            "truncated_rows": sum(r["truncated"] for r in timed),
            "image_tokens": {
                "min": min(r["image_tokens_min"] for r in timed),
                "mean": mean("image_tokens_mean"),
                "max": max(r["image_tokens_max"] for r in timed),
            },
            "rollouts": self.rollouts,
        }


# ------------------------------------------------------------------------------ one method
def run_method(
    method: str, args: argparse.Namespace, scale: dict[str, Any], output_dir: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Train `method` for one warm-up rollout and the timed ones; free its trainer and model."""
    gc.collect()
    if _cuda():
        torch.cuda.empty_cache()
    before = _allocated_mb()
    model, processor = build_model(None if args.cpu_smoke else args.size, scale)
    accumulation = scale["gradient_accumulation_steps"]
    config = VPPOConfig(
        output_dir=output_dir,
        max_steps=UPDATES_PER_ROLLOUT * (1 + args.rollouts),
        learning_rate=1e-6,
        lr_scheduler_type="constant",
        weight_decay=0.01,
        max_grad_norm=1.0,
        per_device_train_batch_size=scale["per_device_train_batch_size"],
        num_generations=scale["num_generations"],
        gradient_accumulation_steps=accumulation,
        steps_per_generation=UPDATES_PER_ROLLOUT * accumulation,
        max_completion_length=scale["max_completion_length"],
        temperature=1.0,
        dynamic_sampling=True,
        dynamic_sampling_max_rounds=2,
        use_vllm=False,
        bf16=not args.cpu_smoke,
        use_cpu=args.cpu_smoke,
        gradient_checkpointing=not args.cpu_smoke,
        optim=args.optim,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        **METHODS[method],
    )
    trainer = VPPOTrainer(
        model=model,
        reward_funcs=[recipe_reward],
        args=config,
        train_dataset=make_dataset(scale),
        processing_class=processor,
    )
    synthetic_completions(trainer, scale["max_completion_length"])
    recorder = PhaseRecorder(trainer, numerics=method == "vppo")
    trainer.add_callback(recorder)
    trainer.remove_callback(PrinterCallback)  # logs stay in log_history, not on stdout
    torch.manual_seed(0)
    trainer.train()
    result, numerics = recorder.summary(), recorder.numerics

    alive = weakref.ref(model)
    trainer.accelerator.free_memory()
    del trainer, model, processor, recorder
    gc.collect()
    if _cuda():
        torch.cuda.empty_cache()
    after = _allocated_mb()
    result["memory_mb"] = {"before": before, "after_free": after}
    assert alive() is None, f"{method}: the model is still referenced after its trainer was freed"
    if _cuda():
        assert after <= before + 256, (
            f"{method}: {after - before:.0f} MB still allocated after freeing"
        )
    return result, numerics


# ------------------------------------------------------------------------------ report
def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _print(report: dict[str, Any]) -> None:
    s = report["structure"]
    print(
        f"{report['size']} Qwen2.5-VL (random weights) on {report['device']}, {report['dtype']}, "
        f"attention {report['attention']}, optimizer {report['optim']}"
    )
    print(
        f"rollout: {s['rows_per_rollout']} rows ({s['prompts_per_rollout']} prompts x "
        f"{s['num_generations']}), {s['updates_per_rollout']} updates x {s['gradient_accumulation_steps']} "
        f"micro-batches of {s['per_device_train_batch_size']}, dynamic sampling (<= "
        f"{s['dynamic_sampling_max_rounds']} refills); timed rollouts: {report['timed_rollouts']}"
    )
    print(f"generation: {report['generation']}")
    methods = report["methods"]
    first = next(iter(methods.values()))
    print(
        f"image tokens {first['image_tokens']['min']}-{first['image_tokens']['max']} "
        f"(mean {first['image_tokens']['mean']:.0f}), completion tokens mean "
        f"{first['completion_tokens_mean']:.0f} (cap {s['max_completion_length']})"
    )

    def mb(x: float | None) -> str:
        return "-" if x is None else f"{x:.0f}"

    print(
        f"{'method':<7}{'rounds':>7}{'passes':>7}{'scoring s':>10}{'passes s':>9}{'update s':>9}"
        f"{'rollout s':>10}{'tokens/s':>10}  peak MB scoring/passes/update"
    )
    for name, r in methods.items():
        p = r["phases"]
        print(
            f"{name:<7}{r['generation_rounds']:>7.1f}{r['nograd_passes']:>7.2f}{p['scoring']['s']:>10.3f}"
            f"{p['passes']['s']:>9.3f}{p['update']['s']:>9.3f}{r['rollout_s']:>10.3f}{r['tokens_per_s']:>10.1f}"
            f"  {mb(p['scoring']['peak_mb'])}/{mb(p['passes']['peak_mb'])}/{mb(p['update']['peak_mb'])}"
        )
    q = report["ratios"]

    def x(v: float | None) -> str:
        return "n/a (CPU)" if v is None else f"{v:.3f}"

    print(
        f"VPPO / DAPO: rollout time {q['rollout_time']:.3f}, scoring {q['scoring']:.3f}, "
        f"passes {q['passes']:.3f}, update {q['update']:.3f}, tokens/s {q['tokens_per_s']:.3f}, "
        f"peak memory {x(q['peak_memory'])}"
    )
    n = report["numerics"]
    pearson = (
        "n/a"
        if n["kl_vs_k3_trajectory_pearson"] is None
        else f"{n['kl_vs_k3_trajectory_pearson']:.3f}"
    )
    print(
        f"numerics (VPPO's first rollout, {report['dtype']}): trimmed vs full-width log-probs max |diff| "
        f"{n['logps_trimmed_vs_full_width_max_abs_diff']:.3g}; k3 mean {n['k3_dependency_mean']:.3g}, "
        f"noise floor mean {n['k3_noise_floor_mean']:.3g}; KL vs k3: trajectory Pearson {pearson}, "
        f"TGF Jaccard {n['kl_vs_k3_tgf_jaccard']:.3f} (independent: {n['tgf_jaccard_if_independent']:.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size", choices=sorted(SIZES), default="3b", help="released shape to build"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=6,
        choices=range(1, 301),
        metavar="STEPS",
        help=f"timed optimizer steps per method (1-300), rounded up to whole rollouts of "
        f"{UPDATES_PER_ROLLOUT}; one warm-up rollout runs first",
    )
    parser.add_argument(
        "--optim",
        default=None,
        help="optimizer (TrainingArguments.optim); default adamw_torch at 3b, sgd at 7b",
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="the same code on a tiny float32 model on CPU, 1 timed rollout (the test suite)",
    )
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.steps = UPDATES_PER_ROLLOUT
    elif not _cuda():
        print(
            "gpu_check: no CUDA device; run with --cpu-smoke for the CPU version.", file=sys.stderr
        )
        return 2
    args.optim = args.optim or ("adamw_torch" if args.cpu_smoke else DEFAULT_OPTIM[args.size])
    args.rollouts = -(-args.steps // UPDATES_PER_ROLLOUT)
    scale = SCALES["cpu" if args.cpu_smoke else "gpu"]
    started = time.perf_counter()
    results, numerics = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for method in METHODS:  # each from the same random weights, the previous trainer freed
            results[method], found = run_method(method, args, scale, f"{tmp}/{method}")
            numerics = numerics or found
    dapo, vppo = results["dapo"], results["vppo"]
    accumulation = scale["gradient_accumulation_steps"]
    rows = scale["per_device_train_batch_size"] * accumulation * UPDATES_PER_ROLLOUT
    report = {
        "device": torch.cuda.get_device_name()
        if _cuda()
        else (platform.processor() or platform.machine()),
        "size": "tiny" if args.cpu_smoke else args.size,
        "dtype": "float32" if args.cpu_smoke else "bfloat16",
        "attention": "sdpa" if args.cpu_smoke else ATTENTION,
        "optim": args.optim,
        "gradient_checkpointing": not args.cpu_smoke,
        "torch": torch.__version__,
        "generation": (
            "synthetic: random-token completions of log-normal lengths (median cap / 3, ~3% "
            "cut at the cap) in place of sampling; vLLM's generation cost is left out"
        ),
        "structure": {
            "num_generations": scale["num_generations"],
            "rows_per_rollout": rows,
            "prompts_per_rollout": rows // scale["num_generations"],
            "per_device_train_batch_size": scale["per_device_train_batch_size"],
            "gradient_accumulation_steps": accumulation,
            "updates_per_rollout": UPDATES_PER_ROLLOUT,
            "steps_per_generation": UPDATES_PER_ROLLOUT * accumulation,
            "dynamic_sampling_max_rounds": 2,
            "max_completion_length": scale["max_completion_length"],
            "image_tokens_range": list(scale["pixels"]),
        },
        "timed_rollouts": args.rollouts,
        "timed_optimizer_steps": args.rollouts * UPDATES_PER_ROLLOUT,
        "methods": results,
        "ratios": {
            "rollout_time": vppo["rollout_s"] / dapo["rollout_s"],
            **{
                name: _ratio(vppo["phases"][name]["s"], dapo["phases"][name]["s"])
                for name in ("scoring", "passes", "update")
            },
            "tokens_per_s": vppo["tokens_per_s"] / dapo["tokens_per_s"],
            "peak_memory": _ratio(vppo["peak_mb"], dapo["peak_mb"]),
        },
        "numerics": numerics,
        "wall_s": time.perf_counter() - started,
    }
    _print(report)
    print(f"wall time {report['wall_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
