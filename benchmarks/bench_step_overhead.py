"""VPPO's cost over the DAPO baseline per training step, measured side by side in one run.

The paper reports +9.7% (7B) / +10.0% (32B) wall time for the extra forward pass on the
perturbed image. This script trains the same tiny model on the same data with DAPO, VPPO (k3) and
VPPO (exact KL), alternating the methods step by step so machine noise hits all of them alike,
and prints the median step time and the ratio to DAPO. On a tiny CPU model generation dominates,
so the ratio says how much the extra no-grad passes cost relative to everything else at this
scale, not what it costs for a 7B model on GPUs.

    .venv/bin/python benchmarks/bench_step_overhead.py [--arch qwen2_5_vl] [--steps 6]
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import tempfile
import time

import torch

from vppo.data import load_training_dataset
from vppo.data.synthetic import SYNTHETIC_VOCAB_TEXTS, make_synthetic_dataset
from vppo.models import build_tiny_vlm
from vppo.rewards import accuracy_reward
from vppo.trainer import VPPOConfig, VPPOTrainer

METHODS = {
    "dapo": {"token_selection": "none", "use_tas": False},
    "vppo (k3)": {},
    "vppo (exact kl)": {"dependency_estimator": "kl"},
}


def make_trainer(arch, dataset, output_dir, steps, completion, **overrides):
    model, processor = build_tiny_vlm(arch, seed=0, vocab_texts=SYNTHETIC_VOCAB_TEXTS)
    args = VPPOConfig(output_dir=output_dir, per_device_train_batch_size=16, num_generations=4,
                      max_completion_length=completion, max_steps=steps, bf16=False, use_cpu=True,
                      report_to="none", logging_steps=1, save_strategy="no", gradient_checkpointing=False,
                      dynamic_sampling=False, disable_tqdm=True, seed=0, **overrides)
    return VPPOTrainer(model=model, reward_funcs=[accuracy_reward], args=args, train_dataset=dataset,
                       processing_class=processor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="qwen2_5_vl")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--completion", type=int, default=32)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    dataset = load_training_dataset(make_synthetic_dataset(256, seed=0), min_pixels=3136, max_pixels=3136)
    step_times = {name: [] for name in METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: make_trainer(args.arch, dataset, f"{tmp}/{i}", args.steps, args.completion, **kw)
                    for i, (name, kw) in enumerate(METHODS.items())}
        for trainer in trainers.values():
            trainer.create_optimizer_and_scheduler(num_training_steps=args.steps)
            trainer.model.train()
            trainer.current_gradient_accumulation_steps = 1
        loaders = {name: iter(t.get_train_dataloader()) for name, t in trainers.items()}
        for _ in range(args.steps + 1):  # the first step of each method is a warm-up
            for name, trainer in trainers.items():
                start = time.perf_counter()
                batch = trainer._prepare_inputs(next(loaders[name]))
                loss = trainer.compute_loss(trainer.model, batch)
                loss.backward()
                trainer.optimizer.step()
                trainer.optimizer.zero_grad()
                trainer._step += 1
                step_times[name].append(time.perf_counter() - start)
    base = statistics.median(step_times["dapo"][1:])
    print(f"\n{args.arch}, {args.steps} steps x 16 responses x {args.completion} tokens")
    print(f"{'method':<18}{'median step s':>15}{'vs dapo':>10}")
    for name, times in step_times.items():
        median = statistics.median(times[1:])
        print(f"{name:<18}{median:>15.3f}{median / base:>9.2f}x")


if __name__ == "__main__":
    main()
