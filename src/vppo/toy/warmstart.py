"""Supervised warm start of the demo's tiny VLM on the synthetic visual task.

RL needs signal: a randomly initialised policy never writes a ``\\boxed{}`` answer, so every group
of rollouts scores 0 and GRPO/DAPO/VPPO have nothing to learn from. The warm start builds a tiny
real Qwen2.5-VL (about a million parameters, its own BPE tokenizer) and fine-tunes it on
:func:`vppo.data.synthetic.reference_solution` targets, with the loss on response tokens only,
until its validation pass rate sits well between 0 and 1 (it stops at ``target_pass_rate``).
The template text is learnt in a few dozen steps; reading the picture takes longer, which is the
part RL then improves.

The checkpoint shipped in ``vppo/assets/warmstart`` was made with the defaults::

    python -m vppo.warmstart --output src/vppo/assets/warmstart

The one in ``vppo/assets/warmstart_reasoning`` (the ``reasoning`` task family: long, freely phrased
solutions with a few grounded tokens; its tokenizer knows both families' words) with::

    python -m vppo.warmstart --family reasoning --output src/vppo/assets/warmstart_reasoning --threads 1

Prompts are laid out exactly as the trainer and the evaluator lay them out (the ``plain``
template, no system prompt, images prepared by :func:`vppo.data.prepare_image`), so the pass rate
measured here is the one RL starts from.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEMO_IMAGE_SIZE",
    "DEMO_PROMPT_TEMPLATE",
    "WARMSTART_INFO_FILE",
    "WarmStartConfig",
    "WarmStartResult",
    "build_parser",
    "choose_num_threads",
    "collate_sft",
    "encode_sft_example",
    "evaluate_pass_rate",
    "main",
    "prompt_messages",
    "read_warmstart_info",
    "sft_loss",
    "synthetic_benchmark",
    "synthetic_eval_settings",
    "warm_start",
]

DEMO_IMAGE_SIZE = 56
"""Side of the synthetic pictures: a 2×2 grid of 28-px cells, i.e. 4 visual tokens."""
DEMO_PROMPT_TEMPLATE = "plain"
"""The demo's prompts are the bare questions: the tiny tokenizer has never seen the official
instruction sentence, which would cost ~100 byte-level tokens per prompt."""
WARMSTART_INFO_FILE = "vppo_warmstart.json"
# Processor outputs with one entry per token: extended over the response, padded like input_ids.
_TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


def choose_num_threads(requested: int | None = None) -> int:
    """Torch CPU threads for a command: ``requested``, or the cores the machine has free.

    On a busy machine several threads per process fight over the same cores and a step can be
    ten times slower than with one thread, so "auto" subtracts the 1-minute load average.
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"threads must be a positive integer, got {requested!r}.")
        return requested
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        load = 0.0
    return max(1, min(cores, int(cores - load + 0.5)))


@dataclass(frozen=True)
class WarmStartConfig:
    """Everything that defines a warm-start run (the defaults made the shipped checkpoint)."""

    arch: str = "qwen2_5_vl"
    model_seed: int = 0
    hidden_size: int = 128
    num_layers: int = 4
    vision_hidden_size: int = 64
    vision_depth: int = 2
    # None: 512 for "shapes"; 768 for "reasoning" (its tokenizer covers both families' words).
    vocab_size: int | None = None
    data_seed: int = 0
    task_types: tuple[str, ...] | None = None
    difficulty: str = "medium"
    train_size: int = 2048
    steps: int = 1200
    batch_size: int = 32
    # 5e-4 learns to read the picture; 1e-3 and above keep the policy at chance on this model
    # (the text prior oscillates and swamps the small image signal).
    learning_rate: float = 5e-4
    warmup_steps: int = 20
    max_grad_norm: float = 1.0
    eval_every: int = 50
    eval_size: int = 64
    eval_samples: int = 4
    target_pass_rate: float | None = 0.45
    # None: 48 for "shapes"; 96 for "reasoning" (its solutions are 60-80 tokens).
    max_new_tokens: int | None = None
    family: str = "shapes"

    def __post_init__(self) -> None:
        from vppo.data.synthetic import REASONING_TASK_TYPES, TASK_FAMILIES, TASK_TYPES
        from vppo.models import supported_architectures

        if self.family not in TASK_FAMILIES:
            raise ValueError(
                f"WarmStartConfig.family must be one of {list(TASK_FAMILIES)}, got {self.family!r}."
            )
        reasoning = self.family == "reasoning"
        if self.vocab_size is None:
            object.__setattr__(self, "vocab_size", 768 if reasoning else 512)
        if self.max_new_tokens is None:
            object.__setattr__(self, "max_new_tokens", 96 if reasoning else 48)
        family_types = REASONING_TASK_TYPES if reasoning else TASK_TYPES

        if self.arch not in supported_architectures():
            raise ValueError(
                f"WarmStartConfig.arch must be one of {supported_architectures()}, got {self.arch!r}."
            )
        positive = (
            "hidden_size",
            "num_layers",
            "vision_hidden_size",
            "vision_depth",
            "train_size",
            "steps",
            "batch_size",
            "eval_every",
            "eval_size",
            "eval_samples",
            "max_new_tokens",
            "vocab_size",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"WarmStartConfig.{name} must be a positive integer, got {value!r}."
                )
        if not (isinstance(self.warmup_steps, int) and self.warmup_steps >= 0):
            raise ValueError(
                f"WarmStartConfig.warmup_steps must be a non-negative integer, got {self.warmup_steps!r}."
            )
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(
                f"WarmStartConfig.learning_rate must be positive, got {self.learning_rate}."
            )
        if not self.max_grad_norm > 0:
            raise ValueError(
                f"WarmStartConfig.max_grad_norm must be positive, got {self.max_grad_norm}."
            )
        if self.target_pass_rate is not None and not 0.0 < self.target_pass_rate <= 1.0:
            raise ValueError(
                f"WarmStartConfig.target_pass_rate must be in (0, 1] or None, got {self.target_pass_rate}."
            )
        if self.task_types is not None:
            types = tuple(self.task_types)
            unknown = [t for t in types if t not in family_types]
            if not types or unknown:
                raise ValueError(
                    f"WarmStartConfig.task_types must name task types from {list(family_types)}, "
                    f"got {list(types)}."
                )
            object.__setattr__(self, "task_types", types)


@dataclass
class WarmStartResult:
    """What a warm start produced. ``pass_rate`` is avg@k / 100 on its monitoring set."""

    output_dir: Path
    steps: int
    final_loss: float
    pass_rate: float
    chance: float
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# prompts and batches
# --------------------------------------------------------------------------------------------


def prompt_messages(problem: str, num_images: int = 1) -> list[dict[str, Any]]:
    """The conversational prompt of one synthetic question, as the trainer and evaluator build it."""
    from vppo.data import build_prompt_messages, render_prompt

    return build_prompt_messages(render_prompt(problem, DEMO_PROMPT_TEMPLATE), num_images)


def encode_sft_example(
    processor: Any, row: Mapping[str, Any], *, image_size: int = DEMO_IMAGE_SIZE
) -> dict[str, Any]:
    """Tokenise one synthetic row for supervised training.

    Returns:
        ``{"prompt": processor outputs for the chat-templated prompt (batch of 1), "response":
        list of response token ids ending with EOS}``; the response is
        :func:`~vppo.data.synthetic.reference_solution` tokenised on its own, as a rollout is.
    """
    from vppo.data import prepare_image
    from vppo.data.synthetic import reference_solution

    for name in ("problem", "images", "answer", "task_type", "scene"):
        if name not in row:
            raise ValueError(f"synthetic row has no {name!r} field; the warm start needs it.")
    tokenizer = getattr(processor, "tokenizer", processor)
    pixels = image_size * image_size
    images = [
        prepare_image(img, min_pixels=pixels, max_pixels=pixels, field="images")
        for img in row["images"]
    ]
    text = processor.apply_chat_template(
        prompt_messages(row["problem"], len(images)), tokenize=False, add_generation_prompt=True
    )
    prompt = processor(text=[text], images=[images] if images else None, return_tensors="pt")
    response = tokenizer(reference_solution(row), add_special_tokens=False)["input_ids"]
    return {"prompt": dict(prompt), "response": [*response, tokenizer.eos_token_id]}


def collate_sft(examples: Sequence[Mapping[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Left-padded prompt + response batch with labels on the response tokens only.

    Per-token processor outputs are extended over the response (attention 1, token types 0);
    image tensors are concatenated along their first dimension, which is how every supported
    processor batches (Qwen: patches; SmolVLM: images). Every row must carry the same image count.

    Returns:
        model inputs plus ``labels`` [B, L] (-100 outside the responses).
    """
    import torch

    if not examples:
        raise ValueError("collate_sft needs at least one example.")
    lengths = [ex["prompt"]["input_ids"].shape[1] + len(ex["response"]) for ex in examples]
    width = max(lengths)
    batch: dict[str, Any] = {}
    keys = [k for k in _TOKEN_KEYS if k in examples[0]["prompt"]]
    for key in keys:
        fill = pad_token_id if key == "input_ids" else 0
        out = torch.full((len(examples), width), fill, dtype=torch.long)
        for i, (ex, n) in enumerate(zip(examples, lengths, strict=True)):
            prompt = ex["prompt"][key][0].long()
            if key == "input_ids":
                tail = torch.tensor(ex["response"], dtype=torch.long)
            elif key == "attention_mask":
                tail = torch.ones(len(ex["response"]), dtype=torch.long)
            else:
                tail = torch.zeros(len(ex["response"]), dtype=torch.long)
            out[i, width - n :] = torch.cat([prompt, tail])
        batch[key] = out
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, ex in enumerate(examples):
        labels[i, width - len(ex["response"]) :] = torch.tensor(ex["response"], dtype=torch.long)
    batch["labels"] = labels
    for key, value in examples[0]["prompt"].items():
        if key in _TOKEN_KEYS or not isinstance(value, torch.Tensor):
            continue
        parts = [ex["prompt"][key] for ex in examples]
        if any(p.shape[1:] != value.shape[1:] for p in parts):
            raise ValueError(
                f"collate_sft: rows have {key} of different shapes; use one image size."
            )
        batch[key] = torch.cat(parts, dim=0)
    return batch


def sft_loss(model: Any, batch: Mapping[str, Any]) -> Any:
    """Token-mean cross-entropy over response tokens (labels != -100); shape []."""
    import torch.nn.functional as F

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100
    )


# --------------------------------------------------------------------------------------------
# pass rate with the evaluation layer
# --------------------------------------------------------------------------------------------


def synthetic_benchmark(dataset: Any, name: str = "synthetic") -> Any:
    """A synthetic split as a `vppo.evaluation.LoadedBenchmark` (EasyR1 schema, ids kept)."""
    from vppo.evaluation import rows_to_examples

    rows = [
        {
            "id": row["id"],
            "problem": row["problem"],
            "answer": row["answer"],
            "images": row["images"],
        }
        for row in dataset
    ]
    return rows_to_examples(rows, name, schema="easyr1")


def synthetic_eval_settings(
    k: int,
    *,
    seed: int = 0,
    max_new_tokens: int = 48,
    image_size: int = DEMO_IMAGE_SIZE,
    batch_size: int = 64,
) -> Any:
    """avg@k settings matching the demo's rollouts: T = 1, top-p 1, no top-k, plain prompts."""
    from vppo.evaluation import EvalSettings, SamplingConfig

    sampling = SamplingConfig(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens)
    pixels = image_size * image_size
    return EvalSettings(
        num_samples=k,
        sampling=sampling,
        template=DEMO_PROMPT_TEMPLATE,
        system_prompt=None,
        min_pixels=pixels,
        max_pixels=pixels,
        max_prompt_tokens=None,
        seed=seed,
        batch_size=batch_size,
    )


def evaluate_pass_rate(
    model: Any,
    processor: Any,
    benchmark: Any,
    settings: Any,
    output_dir: str | Path | None = None,
    *,
    model_id: str = "model",
    progress: bool = False,
) -> Any:
    """Run `vppo.evaluation.evaluate_benchmark` on ``model`` and return its `BenchmarkResult`.

    ``output_dir=None`` uses a temporary folder; with a folder, give each distinct model its own
    ``model_id`` (the sample cache is keyed by it). The model is put in eval mode and restored.
    """
    from vppo.evaluation import TransformersBackend, evaluate_benchmark

    was_training = model.training
    model.eval()
    try:
        backend = TransformersBackend(model, processor)
        if output_dir is None:
            with tempfile.TemporaryDirectory(prefix="vppo_eval_") as tmp:
                return evaluate_benchmark(
                    benchmark, backend, settings, tmp, model_id=model_id, progress=progress
                )
        return evaluate_benchmark(
            benchmark, backend, settings, output_dir, model_id=model_id, progress=progress
        )
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------------------------
# the warm start
# --------------------------------------------------------------------------------------------


def _save(model: Any, processor: Any, path: Path, config: WarmStartConfig, info: dict) -> None:
    from vppo.models.tiny import save_tiny_vlm

    model.eval()
    save_tiny_vlm(model, processor, path, arch=config.arch, seed=config.model_seed)
    (path / WARMSTART_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def warm_start(
    output_dir: str | Path,
    config: WarmStartConfig | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> WarmStartResult:
    """Build the tiny VLM, fine-tune it on reference solutions, save it to ``output_dir``.

    Every ``eval_every`` steps the pass rate (avg@``eval_samples`` at T = 1 on ``eval_size``
    validation rows of seed ``data_seed + 1``, so the demo's validation set stays unseen) is
    measured; training stops at the first measurement ≥ ``target_pass_rate`` or after ``steps``.
    The saved folder loads with `vppo.models.load_model_and_processor` and holds
    ``vppo_warmstart.json`` (config, the prompt settings it was trained with under ``"prompt"``,
    pass rate, loss/pass-rate history).
    """
    import torch
    from tqdm.auto import tqdm

    from vppo.data.synthetic import (
        REASONING_VOCAB_TEXTS,
        SYNTHETIC_VOCAB_TEXTS,
        chance_accuracy,
        make_synthetic_dataset,
    )
    from vppo.models import build_tiny_vlm

    config = config or WarmStartConfig()
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {str(out)!r} exists and is not a directory.")
    say = log or (lambda _message: None)
    started = time.perf_counter()
    pixels = DEMO_IMAGE_SIZE * DEMO_IMAGE_SIZE
    data = {
        "task_types": config.task_types,
        "image_size": DEMO_IMAGE_SIZE,
        "difficulty": config.difficulty,
    }
    vocab_texts = SYNTHETIC_VOCAB_TEXTS
    if config.family != "shapes":  # the shapes call stays as it was: the shipped checkpoint's
        data["family"] = config.family
        vocab_texts = SYNTHETIC_VOCAB_TEXTS + REASONING_VOCAB_TEXTS
    train = make_synthetic_dataset(config.train_size, split="train", seed=config.data_seed, **data)
    monitor = make_synthetic_dataset(
        config.eval_size, split="validation", seed=config.data_seed + 1, **data
    )
    chance = chance_accuracy(monitor)
    model, processor = build_tiny_vlm(
        config.arch,
        seed=config.model_seed,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        vision_hidden_size=config.vision_hidden_size,
        vision_depth=config.vision_depth,
        vocab_texts=vocab_texts,
        vocab_size=config.vocab_size,
        min_pixels=pixels,
        max_pixels=pixels,
    )
    tokenizer = processor.tokenizer
    encoded = [encode_sft_example(processor, row) for row in train]
    benchmark = synthetic_benchmark(monitor, "warmstart-monitor")
    settings = synthetic_eval_settings(
        config.eval_samples, seed=config.data_seed, max_new_tokens=config.max_new_tokens
    )
    say(
        f"warm start: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{len(encoded)} training rows, chance accuracy {chance:.3f}"
    )

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.data_seed)
    history: list[dict[str, float]] = []
    pass_rate = float("nan")
    loss_value = float("nan")
    step = 0
    model.train()
    bar = tqdm(total=config.steps, desc="warm start", unit="step", disable=not progress)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.model_seed)
        for step in range(1, config.steps + 1):
            scale = min(1.0, step / config.warmup_steps) if config.warmup_steps else 1.0
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * scale
            rows = torch.randint(len(encoded), (config.batch_size,), generator=generator).tolist()
            batch = collate_sft([encoded[i] for i in rows], tokenizer.pad_token_id)
            loss = sft_loss(model, batch)
            if not torch.isfinite(loss):
                raise ValueError(
                    f"warm start: the loss became {loss.item()} at step {step}; "
                    "lower learning_rate."
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = float(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if step % config.eval_every == 0 or step == config.steps:
                result = evaluate_pass_rate(
                    model, processor, benchmark, settings, model_id=f"warmstart-step-{step}"
                )
                pass_rate = result.score / 100.0
                history.append({"step": step, "loss": loss_value, "pass_rate": pass_rate})
                say(f"  step {step}: loss {loss_value:.4f}, pass rate {pass_rate:.3f}")
                if config.target_pass_rate is not None and pass_rate >= config.target_pass_rate:
                    break
    bar.close()
    seconds = time.perf_counter() - started
    info = {
        "config": asdict(config),
        # How every prompt above was built; vppo train / eval / analyze given this folder use it
        # for the options not set (vppo.data.settings.read_prompt_settings).
        "prompt": {
            "template": DEMO_PROMPT_TEMPLATE,
            "system_prompt": None,
            "min_pixels": pixels,
            "max_pixels": pixels,
        },
        "steps": step,
        "final_loss": loss_value,
        "pass_rate": pass_rate,
        "chance": chance,
        "monitor": {
            "split": "validation",
            "seed": config.data_seed + 1,
            "rows": config.eval_size,
            "samples_per_row": config.eval_samples,
        },
        "seconds": round(seconds, 1),
        "history": history,
    }
    _save(model, processor, out, config, info)
    say(
        f"warm start: saved to {out} after {step} steps ({seconds:.0f} s), "
        f"pass rate {pass_rate:.3f} (chance {chance:.3f})"
    )
    return WarmStartResult(out, step, loss_value, pass_rate, chance, seconds, history)


def read_warmstart_info(path: str | Path) -> dict[str, Any] | None:
    """The ``vppo_warmstart.json`` of a warm-start folder, or None when it has none."""
    file = Path(path) / WARMSTART_INFO_FILE
    if not file.is_file():
        return None
    return json.loads(file.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    defaults = WarmStartConfig()
    parser = argparse.ArgumentParser(
        prog="python -m vppo.warmstart",
        description="Supervised warm start of the demo's tiny Qwen2.5-VL on the synthetic task.",
        epilog="The shipped checkpoints were rebuilt with: "
        "`python -m vppo.warmstart --output src/vppo/assets/warmstart` and "
        "`python -m vppo.warmstart --family reasoning "
        "--output src/vppo/assets/warmstart_reasoning --threads 1`.",
    )
    parser.add_argument(
        "--family",
        default=defaults.family,
        help="Synthetic task family: shapes (default) or reasoning.",
    )
    parser.add_argument("--output", required=True, help="Folder to save the checkpoint to.")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="Most optimizer steps.")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--train-size", type=int, default=defaults.train_size)
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.model_seed,
        help="Seed of the weights (data_seed stays 0 unless --data-seed).",
    )
    parser.add_argument("--data-seed", type=int, default=defaults.data_seed)
    parser.add_argument(
        "--task-types",
        default=None,
        help="Comma-separated task types (default: all of the family's).",
    )
    parser.add_argument(
        "--target-pass-rate",
        type=float,
        default=defaults.target_pass_rate,
        help="Stop once the monitored pass rate reaches this; 0 disables.",
    )
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument(
        "--threads", type=int, default=None, help="Torch CPU threads (default: the free cores)."
    )
    parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")
    return parser


def main(argv: list[str] | None = None) -> int:
    import torch

    args = build_parser().parse_args(argv)
    torch.set_num_threads(choose_num_threads(args.threads))
    config = WarmStartConfig(
        family=args.family,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        train_size=args.train_size,
        model_seed=args.seed,
        data_seed=args.data_seed,
        task_types=tuple(args.task_types.split(",")) if args.task_types else None,
        target_pass_rate=args.target_pass_rate or None,
        eval_every=args.eval_every,
    )
    warm_start(args.output, config, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
