"""VPPO's cost over the DAPO baseline per training step, measured side by side in one run.

The paper reports +9.7% (7B) / +10.0% (32B) wall time for the extra forward pass on the perturbed
image. This script trains the shipped warm-start model (``vppo.demo.default_checkpoint()``) on the
synthetic task with DAPO, VPPO (k3), VPPO (exact KL), PAPO_D (DAPO + PAPO's implicit perception
loss, arXiv 2507.06448, on the official PIL-square mask; ``papo_grad``: the same with
``papo_masked_grad``, its masked pass with gradient in the update) and the 80/20 entropy baseline
in three configurations:

- ``on_policy``: one optimizer step per generation batch, no dynamic sampling. TRL needs no old
  log-probs, so DAPO runs no no-grad pass and VPPO needs two (real and perturbed image).
- ``official``: ``steps_per_generation`` = 3 × ``gradient_accumulation_steps`` with dynamic sampling
  on, as in the paper's recipe. TRL needs old log-probs (one pass for DAPO); VPPO needs two.

- ``reasoning``: the official structure with the length spread of a reasoning model: 3 optimizer
  steps per generation batch of 96 rows, each accumulated over 8 micro-batches of 4 rows, and
  synthetic completions in place of generation (log-normal lengths, median a third of the cap, about
  3% cut at the cap; random tokens; a reward that splits every group). The synthetic task's own
  answers all have about the same length, which hides the update's padding.

Methods alternate cycle by cycle (a cycle = one generation batch and its optimizer steps) so machine
noise hits all of them alike. For each method it reports, per optimizer step:

- ``step_s``: median over cycles of the cycle's wall time / its optimizer steps, and the ratio to DAPO;
- ``nograd_tokens``: tokens fed to no-grad forwards of the policy outside generation (padding
  included), counted by a forward pre-hook on the model, not estimated;
- ``floor_tokens``: the unpadded tokens of the trained rows × the passes the method needs;
- ``update_tokens``: tokens fed to the gradient forwards (padding included), counted by the same
  hook; ``update_floor_tokens``: the unpadded tokens of the trained rows × the gradient passes (one,
  two for ``papo_grad``);
- ``peak_mb``: peak bytes of the tensors allocated during one extra (untimed) cycle and alive at the
  same time, tracked op by op by a dispatch mode (a CPU has no allocator statistics; on a GPU this
  is what torch.cuda.max_memory_allocated minus the memory before the cycle reports).

On a tiny CPU model generation dominates, so the time ratio says how much the extra no-grad passes
cost relative to everything else at this scale; the token counts are what carries to a 7B model.

    .venv/bin/python benchmarks/bench_step_overhead.py [--cycles 5] [--device cuda] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
import warnings
import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

METHODS = {
    "dapo": {"token_selection": "none", "use_tas": False},
    "vppo_k3": {},
    "vppo_kl": {"dependency_estimator": "kl"},
    # PAPO_D (recipe qwen2_5_vl_7b_papo_d): DAPO + the implicit perception loss on the official mask.
    "papo": {
        "token_selection": "none",
        "use_tas": False,
        "papo_coef": 0.01,
        "papo_entropy_coef": 0.03,
        "papo_masked_entropy_coef": 0.03,
        "perturbation": "blacken_image",
        "perturbation_prob": 0.6,
        "perturbation_patch_size": 14,
    },
    # PAPO_D with papo_masked_grad (the official RECOMPUTE_AUG_LOG_PROBS): the masked log-probs
    # from a second forward with gradient in every update micro-batch instead of a no-grad pass.
    "papo_grad": {
        "token_selection": "none",
        "use_tas": False,
        "papo_coef": 0.01,
        "papo_entropy_coef": 0.03,
        "papo_masked_entropy_coef": 0.03,
        "papo_masked_grad": True,
        "perturbation": "blacken_image",
        "perturbation_prob": 0.6,
        "perturbation_patch_size": 14,
    },
    # The 80/20 entropy baseline (recipe qwen2_5_vl_7b_entropy_80_20): DAPO with TRL's
    # top_entropy_quantile 0.2, a quantile over each micro-batch, so rows cannot be regrouped.
    "entropy_80_20": {"token_selection": "none", "use_tas": False, "top_entropy_quantile": 0.2},
}
CONFIGS = {
    "on_policy": {"steps_per_generation": 1, "dynamic_sampling": False},
    "official": {
        "steps_per_generation": 3,
        "dynamic_sampling": True,
        "dynamic_sampling_max_rounds": 2,
    },
    "reasoning": {
        "steps_per_generation": 24,
        "gradient_accumulation_steps": 8,
        "per_device_train_batch_size": 4,
        "dynamic_sampling": True,
        "dynamic_sampling_max_rounds": 2,
    },
}
REASONING_CAP = 384  # max_completion_length of the reasoning configuration
# No-grad passes over the trained rows each method needs at the physical floor.
# PAPO needs the masked-image pass only (its KL uses the loss pass's log-probs), and the old
# log-probs where TRL needs them; with papo_masked_grad its masked pass moves into the update.
_ON_POLICY_FLOORS = {
    "dapo": 0,
    "vppo_k3": 2,
    "vppo_kl": 2,
    "papo": 1,
    "papo_grad": 0,
    "entropy_80_20": 0,
}
# With several optimizer steps per rollout TRL needs old log-probs: one more pass for every method
# but VPPO, whose real-image pass already gives them.
_OFFICIAL_FLOORS = {
    method: passes + (method not in ("vppo_k3", "vppo_kl"))
    for method, passes in _ON_POLICY_FLOORS.items()
}
FLOOR_PASSES = {
    "on_policy": _ON_POLICY_FLOORS,
    "official": _OFFICIAL_FLOORS,
    "reasoning": _OFFICIAL_FLOORS,  # the official structure with other lengths
}
# Gradient forwards over the trained rows (1: the loss pass; PAPO's masked pass with gradient adds one).
UPDATE_PASSES = {"papo_grad": 2}


class _Counter:
    """Counts no-grad forward tokens outside generation and the unpadded tokens of trained rows."""

    def __init__(self, trainer):
        self.nograd_tokens = 0
        self.update_tokens = 0
        self.trained_tokens = 0
        self._generating = False
        trainer.model.register_forward_pre_hook(self._on_forward, with_kwargs=True)
        generate, score = trainer._generate, trainer._generate_and_score_completions

        def generate_flagged(*args, **kwargs):
            self._generating = True
            try:
                return generate(*args, **kwargs)
            finally:
                self._generating = False

        def score_counted(*args, **kwargs):
            output = score(*args, **kwargs)
            self.trained_tokens += int(
                output["prompt_mask"].sum() + output["completion_mask"].sum()
            )
            return output

        trainer._generate = generate_flagged
        trainer._generate_and_score_completions = score_counted

    def reset(self) -> None:
        self.nograd_tokens = self.update_tokens = self.trained_tokens = 0

    def _on_forward(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None or self._generating:
            return
        if torch.is_grad_enabled():
            self.update_tokens += ids.numel()
        else:
            self.nograd_tokens += ids.numel()


def reasoning_lengths(rows: int, cap: int) -> list[int]:
    """Completion lengths of a reasoning model: log-normal, median cap / 3, about 3% cut at the cap.

    P(length > cap) = P(Z > ln 3 / sigma) = 0.03 gives sigma = ln 3 / 1.88. Drawn from torch's
    global generator, so every method gets the same lengths for the same seed.
    """
    sigma = 1.0986 / 1.88
    draws = torch.exp(torch.randn(rows) * sigma) * (cap / 3)
    return [max(1, min(cap, int(x))) for x in draws]


def synthetic_completions(trainer, cap: int):
    """Replace generation by random-token completions of `reasoning_lengths`, ending in EOS unless cut."""
    eos = trainer._tokenizer.eos_token_id
    low, high = 100, min(len(trainer._tokenizer), 4000)

    def generate(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        lengths = reasoning_lengths(len(prompt_ids), cap)
        completions = []
        for length in lengths:
            ids = torch.randint(low, high, (length,)).tolist()
            if length < cap:
                ids[-1] = eos
            completions.append(ids)
        return completions, None

    trainer._generate_single_turn = generate


def split_reward(completions, **kwargs):
    """1 for completions of an even number of characters: mixed rewards in every group of random text."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [float(len(t) % 2 == 0) for t in texts]


def make_trainer(
    config: str, method: str, output_dir: str, cycles: int, completion: int, device: str = "cpu"
):
    from vppo.rewards import accuracy_reward
    from vppo.toy.demo import load_policy, synthetic_split, training_dataset
    from vppo.trainer import VPPOConfig, VPPOTrainer

    model, processor = load_policy()
    dataset = training_dataset(synthetic_split("train", 512, seed=0))
    overrides = {
        "per_device_train_batch_size": 16,
        "gradient_accumulation_steps": 1,
        **CONFIGS[config],
        **METHODS[method],
    }
    reasoning = config == "reasoning"
    if reasoning:
        completion = REASONING_CAP
    steps = cycles * overrides["steps_per_generation"] // overrides["gradient_accumulation_steps"]
    args = VPPOConfig(
        output_dir=output_dir,
        num_generations=8,
        max_completion_length=completion,
        max_steps=steps,
        temperature=1.0,
        top_p=1.0,
        learning_rate=1e-5,
        bf16=False,
        use_cpu=device == "cpu",
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        gradient_checkpointing=False,
        disable_tqdm=True,
        seed=0,
        data_seed=0,
        **overrides,
    )
    trainer = VPPOTrainer(
        model=model,
        reward_funcs=[split_reward if reasoning else accuracy_reward],
        args=args,
        train_dataset=dataset,
        processing_class=processor,
    )
    if reasoning:
        synthetic_completions(trainer, completion)
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = args.gradient_accumulation_steps
    return trainer, iter(trainer.get_train_dataloader())


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_cycle(trainer, loader) -> float:
    """One generation batch and its optimizer steps; returns seconds per optimizer step."""
    micro_batches = trainer.args.steps_per_generation
    accumulation = trainer.args.gradient_accumulation_steps
    _sync()
    start = time.perf_counter()
    for i in range(micro_batches):
        batch = trainer._prepare_inputs(next(loader))
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        if (i + 1) % accumulation == 0:
            trainer.optimizer.step()
            trainer.optimizer.zero_grad()
        trainer._step += 1
    _sync()
    return (time.perf_counter() - start) / (micro_batches // accumulation)


class _PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of storages created inside the block and alive at the same time.

    An op's output whose storage is one of its inputs' (a view, an in-place or `out=` result) is
    not a new allocation: only storages no input holds are counted.
    """

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor)
        }
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                if storage.data_ptr() in inputs:
                    continue
                if id(storage) not in self._seen:
                    self._seen.add(id(storage))
                    self.live += storage.nbytes()
                    weakref.finalize(storage, self._free, id(storage), storage.nbytes())
        self.peak = max(self.peak, self.live)
        return out


def _quiet() -> None:
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")


def _cuda_peak_mb(trainer, loader) -> float:
    """What the CUDA allocator held at most during one cycle, above what was allocated before it."""
    _sync()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run_cycle(trainer, loader)
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def measure(
    config: str, cycles: int, completion: int, memory: bool, device: str = "cpu"
) -> dict[str, dict[str, Any]]:
    times = {m: [] for m in METHODS}
    peaks = {}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        runs = {}
        for i, method in enumerate(METHODS):
            trainer, loader = make_trainer(
                config, method, f"{tmp}/{i}", cycles + 2, completion, device
            )
            runs[method] = (trainer, loader, _Counter(trainer))
        for cycle in range(cycles + 1):  # the first cycle of each method is a warm-up
            for method, (trainer, loader, counter) in runs.items():
                if cycle == 1:
                    counter.reset()
                # Same sampling seed for every method: the same prompts get (nearly) the same rollouts.
                torch.manual_seed(cycle)
                times[method].append(run_cycle(trainer, loader))
        for method, (trainer, loader, counter) in runs.items():
            if memory:
                tokens = counter.nograd_tokens, counter.update_tokens, counter.trained_tokens
                torch.manual_seed(cycles + 1)
                if device == "cuda":
                    peaks[method] = _cuda_peak_mb(trainer, loader)
                else:
                    with _PeakTensorMemory() as tracker:
                        run_cycle(trainer, loader)
                    peaks[method] = tracker.peak / 2**20
                counter.nograd_tokens, counter.update_tokens, counter.trained_tokens = tokens
    settings = CONFIGS[config]
    steps = (
        cycles * settings["steps_per_generation"] // settings.get("gradient_accumulation_steps", 1)
    )
    result = {}
    base = statistics.median(times["dapo"][1:])
    for method, (_, _, counter) in runs.items():
        median = statistics.median(times[method][1:])
        result[method] = {
            "step_s": round(median, 4),
            "ratio_vs_dapo": round(median / base, 3),
            "nograd_tokens": round(counter.nograd_tokens / steps),
            "floor_tokens": round(counter.trained_tokens * FLOOR_PASSES[config][method] / steps),
            "update_tokens": round(counter.update_tokens / steps),
            "update_floor_tokens": round(
                counter.trained_tokens * UPDATE_PASSES.get(method, 1) / steps
            ),
            "peak_mb": round(peaks[method], 1) if memory else None,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cycles", type=int, default=5, help="measured cycles per method and config"
    )
    parser.add_argument("--completion", type=int, default=48, help="max_completion_length")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the (slow) peak-memory cycle"
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the trainer runs; on cuda peak memory is the allocator's peak",
    )
    parser.add_argument("--json", metavar="PATH", help="write {config: {method: {...}}} here")
    args = parser.parse_args()
    _quiet()
    where = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"{platform.machine()}, {torch.get_num_threads()} threads"
    )
    print(
        f"machine: {where}, torch {torch.__version__}; "
        f"shipped warm start, 16 responses per step (2 prompts x 8), {args.completion} tokens max"
    )
    results = {}
    for config in args.configs:
        results[config] = measure(
            config, args.cycles, args.completion, not args.no_memory, args.device
        )
        print(f"\n{config} ({args.cycles} cycles)")
        print(
            f"{'method':<10}{'step s':>9}{'vs dapo':>9}{'nograd tok':>12}{'floor tok':>11}"
            f"{'tok/floor':>11}{'update tok':>12}{'floor tok':>11}{'tok/floor':>11}{'peak MB':>9}"
        )
        for method, row in results[config].items():
            over = (
                f"{row['nograd_tokens'] / row['floor_tokens']:.3f}" if row["floor_tokens"] else "-"
            )
            update_over = f"{row['update_tokens'] / max(row['update_floor_tokens'], 1):.3f}"
            peak = "-" if row["peak_mb"] is None else f"{row['peak_mb']:.1f}"
            print(
                f"{method:<10}{row['step_s']:>9.3f}{row['ratio_vs_dapo']:>8.2f}x{row['nograd_tokens']:>12}"
                f"{row['floor_tokens']:>11}{over:>11}{row['update_tokens']:>12}{row['update_floor_tokens']:>11}"
                f"{update_over:>11}{peak:>9}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
