"""`vppo demo`: VPPO visibly improves a small VLM on the synthetic visual task, on a laptop CPU.

The model is the warm-started tiny Qwen2.5-VL shipped in ``vppo/assets/warmstart`` (see
`vppo.toy.warmstart`); the data is `vppo.data.synthetic`; the trainer is the real `VPPOTrainer`
with a `VPPOConfig`. The demo measures validation avg@k before and after training with the evaluation
layer, then scores a few fresh responses with `vppo.analysis` and prints which tokens depend on
the image.

The functions here are shared with `vppo compare` (GRPO vs DAPO vs VPPO and the ablations):
`method_overrides` derives each method's switches from the project's recipes, `rl_config` builds
the CPU configuration every method shares, and `train_rl` runs one training.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from vppo.models.checkpoints import default_checkpoint
from vppo.toy.warmstart import (
    DEMO_IMAGE_SIZE,
    DEMO_PROMPT_TEMPLATE,
    choose_num_threads,
    evaluate_pass_rate,
    prompt_messages,
    read_warmstart_info,
    synthetic_benchmark,
    synthetic_eval_settings,
)

__all__ = [
    "DemoSettings",
    "METHODS",
    "QUICK_SETTINGS",
    "RunResult",
    "TASK_MAX_COMPLETION_LENGTH",
    "build_parser",
    "default_checkpoint",
    "load_policy",
    "main",
    "method_overrides",
    "perception_summary",
    "quiet_library_noise",
    "rl_config",
    "run_demo",
    "synthetic_split",
    "train_rl",
    "training_dataset",
]

# method -> (recipe that defines it, the recipe it differs from). A method's switches are the
# fields in which the two recipes differ, so the demo and compare use exactly the recipes' baselines.
METHODS: dict[str, tuple[str, str]] = {
    "vppo": ("tiny_vppo", "tiny_vppo"),
    "dapo": ("tiny_dapo", "tiny_vppo"),
    "grpo": ("tiny_grpo", "tiny_vppo"),
    "tas_only": ("ablations/tas_only", "qwen2_5_vl_7b_vppo"),
    "tgf_only": ("ablations/tgf_only", "qwen2_5_vl_7b_vppo"),
    "entropy_80_20": ("qwen2_5_vl_7b_entropy_80_20", "qwen2_5_vl_7b_vppo"),
    "papo": ("qwen2_5_vl_7b_papo_d", "qwen2_5_vl_7b_vppo"),
}
# Recipe fields that are about where a run writes or which model/data it uses, not the algorithm.
_NOT_ALGORITHM = frozenset({"output_dir", "run_name", "model_name_or_path", "dataset_name", "base"})

TASK_MAX_COMPLETION_LENGTH: dict[str, int] = {"shapes": 48, "reasoning": 96}
"""Response budget (``DemoSettings.max_completion_length``) per synthetic task family, used by
`vppo compare --task`. Shapes answers are 25-40 tokens, so 48 cuts none (issue 11); reasoning
answers write out intermediate steps before the boxed answer and need about twice that."""


@dataclass(frozen=True)
class DemoSettings:
    """The CPU training set-up shared by `vppo demo` and `vppo compare`.

    The algorithm keeps VPPO's defaults (k = 0.4, β_min = 0.9 dynamic, k3 dependency, patch
    blackening p = 0.5, clip 0.2/0.28, token-mean loss, NLL term 0.06, dynamic sampling); what
    differs from the 7B recipe is scale: a larger learning rate for a tiny model, short responses,
    32 prompts per rollout batch instead of 384. ``steps`` counts optimizer steps; with
    ``num_iterations = 2`` each rollout batch is used for two of them (PPO-style, with the ratio
    clipped), so 40 steps are 20 rollout batches of 256 responses. The values come from a sweep on
    the shipped warm start (docs/demo.md): smaller batches or learning rates ≥ 3e-4 with 64
    responses per step made the policy worse, 1e-4 barely moved it.

    ``task`` is the synthetic task family (warm start, training and test rows); the other values
    were tuned on "shapes". A "reasoning" run needs a longer ``max_completion_length``
    (`TASK_MAX_COMPLETION_LENGTH`), which `replace(settings, task=...)` does not change by itself.
    ``device`` is where training and evaluation run ("cpu", or "cuda" to run many small runs on a
    GPU machine); it changes the numerics, so runs on different devices are not mixed.
    """

    steps: int = 40
    seed: int = 0
    prompts_per_step: int = 32
    num_generations: int = 8
    learning_rate: float = 3e-4
    num_iterations: int = 2
    nll_coef: float = 0.06
    max_completion_length: int = 48
    dynamic_sampling_max_rounds: int = 1
    train_size: int = 1024
    eval_size: int = 128
    eval_k: int = 8
    eval_seed: int = 0
    summary_responses: int = 8
    summary_show: int = 3
    task: str = "shapes"
    device: str = "cpu"

    def __post_init__(self) -> None:
        from vppo.data.synthetic import TASK_FAMILIES

        if self.task not in TASK_FAMILIES:
            raise ValueError(
                f"DemoSettings.task must be one of {', '.join(TASK_FAMILIES)}, got {self.task!r}."
            )
        if self.device not in ("cpu", "cuda"):  # the trainer picks the GPU (use_cpu off)
            raise ValueError(f"DemoSettings.device must be 'cpu' or 'cuda', got {self.device!r}.")
        for name in (
            "steps",
            "prompts_per_step",
            "num_generations",
            "num_iterations",
            "max_completion_length",
            "train_size",
            "eval_size",
            "eval_k",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DemoSettings.{name} must be a positive integer, got {value!r}.")
        if self.num_generations < 2:
            raise ValueError(
                f"DemoSettings.num_generations must be at least 2 (group advantages), got "
                f"{self.num_generations}."
            )
        for name in ("summary_responses", "summary_show", "dynamic_sampling_max_rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"DemoSettings.{name} must be a non-negative integer, got {value!r}."
                )
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(
                f"DemoSettings.learning_rate must be positive, got {self.learning_rate}."
            )
        if not self.nll_coef >= 0:
            raise ValueError(f"DemoSettings.nll_coef must be non-negative, got {self.nll_coef}.")


QUICK_SETTINGS = DemoSettings(
    steps=4,
    prompts_per_step=2,
    num_generations=4,
    learning_rate=3e-5,
    train_size=32,
    eval_size=8,
    eval_k=2,
    summary_responses=2,
    summary_show=1,
)
"""`--quick`: a smoke test that exercises every stage in seconds (tests use it). With 8 rollouts per
step and 8 validation questions its accuracies are noise; the learning rate is small so that the
noise does not wreck the model."""


@dataclass
class RunResult:
    """One training run: pass rates (avg@k in percent), the per-step training log, timings."""

    method: str
    seed: int
    steps: int
    before: float | None
    after: float | None
    curve: list[dict[str, float]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# model, data, configuration
# --------------------------------------------------------------------------------------------


def load_policy(checkpoint: str | Path | None = None) -> tuple[Any, Any]:
    """(model in float32 on CPU, processor) of a warm-start folder; default: the shipped one."""
    from vppo.models import load_model_and_processor

    path = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    if not (path / "config.json").is_file():
        hint = (
            "build one with `python -m vppo.warmstart --output DIR` and pass --checkpoint DIR"
            if checkpoint is None
            else "pass a folder written by `python -m vppo.warmstart`"
        )
        raise FileNotFoundError(f"checkpoint: {path} holds no model (config.json); {hint}.")
    return load_model_and_processor(path, dtype="float32")


def method_overrides(method: str) -> dict[str, Any]:
    """The VPPOConfig switches that make ``method`` from VPPO, read from the project's recipes.

    ``vppo`` -> {}; ``dapo`` -> token_selection none, use_tas False; ``grpo`` -> additionally
    loss_type grpo, epsilon_high 0.2, no dynamic sampling; ``tas_only`` / ``tgf_only`` -> the
    Table 2 ablations; ``entropy_80_20`` -> DAPO with top_entropy_quantile 0.2; ``papo`` -> PAPO_D
    (DAPO with PAPO's perception loss and its masked image).
    """
    from vppo.trainer.cli import load_recipe

    if method not in METHODS:
        raise ValueError(f"method is {method!r}; choose one of {', '.join(METHODS)}.")
    recipe, reference = METHODS[method]
    values, base = load_recipe(recipe), load_recipe(reference)
    return {
        k: v
        for k, v in values.items()
        if k not in _NOT_ALGORITHM and (k not in base or base[k] != v)
    }


def rl_config(method: str, settings: DemoSettings, output_dir: str | Path, **extra: Any) -> Any:
    """The `VPPOConfig` of one CPU run of ``method`` (the method's switches on the shared set-up)."""
    from vppo.trainer import VPPOConfig

    values: dict[str, Any] = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": settings.prompts_per_step * settings.num_generations,
        "num_generations": settings.num_generations,
        "gradient_accumulation_steps": 1,
        "max_completion_length": settings.max_completion_length,
        "temperature": 1.0,
        "top_p": 1.0,
        "learning_rate": settings.learning_rate,
        "num_iterations": settings.num_iterations,
        "lr_scheduler_type": "constant",
        "weight_decay": 0.0,
        "max_steps": settings.steps,
        "seed": settings.seed,
        "data_seed": settings.seed,
        "perturbation_seed": settings.seed,
        "nll_coef": settings.nll_coef,
        "dynamic_sampling_max_rounds": settings.dynamic_sampling_max_rounds,
        "bf16": False,
        "use_cpu": settings.device == "cpu",
        "gradient_checkpointing": False,
        "disable_dropout": True,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    values.update(method_overrides(method))
    values.update(extra)
    return VPPOConfig(**values)


def synthetic_split(split: str, size: int, seed: int, family: str = "shapes") -> Any:
    """``size`` rows of the synthetic task at the demo's image size (all the family's task types)."""
    from vppo.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(
        size, split=split, seed=seed, image_size=DEMO_IMAGE_SIZE, family=family
    )


def training_dataset(raw: Any) -> Any:
    """The synthetic rows as TRL conversational rows, prompts laid out like the warm start's."""
    from vppo.data import load_training_dataset

    pixels = DEMO_IMAGE_SIZE * DEMO_IMAGE_SIZE
    return load_training_dataset(
        raw,
        prompt_template=DEMO_PROMPT_TEMPLATE,
        system_prompt=None,
        min_pixels=pixels,
        max_pixels=pixels,
        keep_columns=("task_type",),
    )


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def _progress_callback(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        """One tqdm bar for the run, with the step's reward and kept groups as its postfix."""

        def __init__(self) -> None:
            self.bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(
                total=total, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True
            )

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is None or not logs or "reward" not in logs:
                return
            postfix = {"reward": f"{logs['reward']:.3f}"}
            if "vppo/dependency_mean" in logs:
                postfix["dep"] = f"{logs['vppo/dependency_mean']:.3f}"
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(max(0, state.global_step - self.bar.n))

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(max(0, state.global_step - self.bar.n))
                self.bar.close()
                self.bar = None

    return _Progress()


def _curve(log_history: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """Per-step training metrics that the curves and the tables use."""
    keep = (
        "reward",
        "reward_std",
        "loss",
        "vppo/dependency_mean",
        "vppo/kept_token_frac",
        "vppo/dynamic_sampling/dropped_frac",
        "vppo/dynamic_sampling/filler_groups",
        "vppo/nll",
        "completions/mean_length",
        "entropy",
    )
    curve = []
    for entry in log_history:
        if "reward" not in entry or "step" not in entry:
            continue
        row = {"step": float(entry["step"])}
        row.update({k: float(entry[k]) for k in keep if isinstance(entry.get(k), int | float)})
        curve.append(row)
    return curve


def train_rl(
    model: Any,
    processor: Any,
    train_rows: Any,
    method: str,
    settings: DemoSettings,
    output_dir: str | Path,
    *,
    progress: bool = True,
    desc: str | None = None,
) -> tuple[Any, list[dict[str, float]]]:
    """Train ``model`` in place with `VPPOTrainer` and the configuration of ``method``.

    Returns:
        (the trainer, per-step curve: step, reward, loss and the VPPO metrics where logged).
    """
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from vppo.rewards import load_reward_function
    from vppo.trainer import VPPOTrainer

    args = rl_config(method, settings, output_dir)
    trainer = VPPOTrainer(
        model=model,
        reward_funcs=[load_reward_function("accuracy")],
        args=args,
        train_dataset=train_rows,
        processing_class=processor,
    )
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)  # our bar shows the reward; the full logs are in curve
    trainer.add_callback(_progress_callback(settings.steps, desc or f"{method} training", progress))
    trainer.train()
    model.eval()
    return trainer, _curve(trainer.state.log_history)


# --------------------------------------------------------------------------------------------
# token-perception summary
# --------------------------------------------------------------------------------------------


def _highlight(record: Any, ratio: float) -> str:
    """The response with its TGF-selected tokens (top ``ratio`` by dependency) in [brackets]."""
    import torch

    from vppo.algorithm import tgf_mask
    from vppo.analysis import display_text

    n = len(record.tokens)
    if n == 0:
        return "(empty response)"
    dep = torch.tensor([record.dependency], dtype=torch.float32)
    keep = tgf_mask(dep, torch.ones(1, n, dtype=torch.bool), ratio)[0].tolist()
    pieces = []
    for token, selected in zip(record.tokens, keep, strict=True):
        text = display_text(token)
        pieces.append(f"[{text}]" if selected else text)
    return "".join(pieces)


def perception_summary(
    model: Any,
    processor: Any,
    rows: Any,
    *,
    num_responses: int,
    show: int,
    max_new_tokens: int,
    seed: int = 0,
    ratio: float = 0.4,
    progress: bool = False,
) -> tuple[str, dict[str, Any]]:
    """Sample one response for each of the first ``num_responses`` rows, score its tokens' visual
    dependency (k3, patch blackening p = 0.5, as the trainer does) and summarise.

    Returns:
        (printable text: `vppo.analysis.format_summary` plus ``show`` responses with the top-k
        tokens bracketed, the statistics dict).
    """
    from vppo.analysis import analyze_records, format_summary, generate_responses, score_responses

    picked = [rows[i] for i in range(min(num_responses, len(rows)))]
    if not picked:
        raise ValueError("perception_summary needs at least one row.")
    prompts = [prompt_messages(row["problem"], len(row["images"])) for row in picked]
    images = [list(row["images"]) for row in picked]
    responses = generate_responses(
        model,
        processor,
        prompts,
        images,
        max_new_tokens=max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        seed=seed,
        batch_size=len(picked),
        progress=progress,
    )
    records = score_responses(
        model,
        processor,
        prompts,
        images,
        responses,
        estimator="k3",
        perturbation="blacken",
        prob=0.5,
        seed=seed,
        batch_size=len(picked),
        answers=[row["answer"] for row in picked],
        rows=list(range(len(picked))),
        progress=progress,
    )
    stats = analyze_records(records, ratio=ratio, clip=10.0)
    lines = [
        format_summary(stats),
        "",
        f"responses, top {ratio:.0%} most image-dependent tokens in [brackets]:",
    ]
    for record in records[:show]:
        verdict = "correct" if record.correct else "wrong"
        question = picked[record.row]["problem"].replace("<image>", "").strip()
        lines.append(f"  Q: {question}  (answer {record.answer}; {verdict})")
        lines.append(f"  A: {_highlight(record, ratio)}")
    return "\n".join(lines), stats


# --------------------------------------------------------------------------------------------
# the demo
# --------------------------------------------------------------------------------------------


def _timed(seconds: dict[str, float], name: str, started: float) -> None:
    seconds[name] = round(time.perf_counter() - started, 1)


def run_demo(
    settings: DemoSettings,
    output_dir: str | Path,
    *,
    checkpoint: str | Path | None = None,
    method: str = "vppo",
    progress: bool = True,
    out: Callable[[str], None] = print,
) -> RunResult:
    """Evaluate, train with ``method``, evaluate again, summarise token perception; write results.

    Writes ``<output_dir>/eval/{before,after}/`` (samples of the avg@k evaluation; replaced on
    every run),
    ``<output_dir>/model/`` (the trained policy), ``<output_dir>/perception.txt`` and
    ``<output_dir>/demo_results.json``.
    """
    import torch

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    started = total = time.perf_counter()
    warm = Path(checkpoint) if checkpoint is not None else default_checkpoint(settings.task)
    model, processor = load_policy(warm)
    info = read_warmstart_info(warm)
    # The task's rows are fixed; the seed varies the training randomness (as in `vppo compare`).
    train_rows = training_dataset(
        synthetic_split("train", settings.train_size, 0, family=settings.task)
    )
    validation = synthetic_split(
        "validation", settings.eval_size, settings.eval_seed, family=settings.task
    )
    benchmark = synthetic_benchmark(validation, "synthetic-validation")
    eval_settings = synthetic_eval_settings(
        settings.eval_k, seed=settings.eval_seed, max_new_tokens=settings.max_completion_length
    )
    _timed(seconds, "setup", started)
    params = sum(p.numel() for p in model.parameters())
    out(
        f"model: warm-started tiny {model.config.model_type} ({params / 1e6:.2f} M parameters, "
        f"{torch.get_num_threads()} CPU thread(s))"
        + (f"; warm-start pass rate {info['pass_rate']:.2f}" if info else "")
    )
    out(
        f"task: synthetic visual questions ({settings.train_size} train rows); validation: "
        f"{settings.eval_size} questions x {settings.eval_k} samples at T = 1"
    )

    # A demo is one shot: samples cached by an earlier run in this folder (perhaps of another
    # checkpoint or another training) must not be reused.
    shutil.rmtree(output / "eval", ignore_errors=True)
    started = time.perf_counter()
    before = evaluate_pass_rate(
        model,
        processor,
        benchmark,
        eval_settings,
        output / "eval" / "before",
        model_id="before",
        progress=progress,
    )
    _timed(seconds, "eval_before", started)
    out(f"validation avg@{settings.eval_k} before training: {before.score:.1f}%")

    started = time.perf_counter()
    _, curve = train_rl(
        model,
        processor,
        train_rows,
        method,
        settings,
        output / "trainer",
        progress=progress,
        desc=f"{method.upper()} training",
    )
    _timed(seconds, "train", started)
    model.save_pretrained(output / "model")
    processor.save_pretrained(output / "model")
    shutil.rmtree(
        output / "trainer", ignore_errors=True
    )  # nothing is saved there (save_strategy no)

    started = time.perf_counter()
    after = evaluate_pass_rate(
        model,
        processor,
        benchmark,
        eval_settings,
        output / "eval" / "after",
        model_id=f"after-{method}-{settings.steps}-steps-seed-{settings.seed}",
        progress=progress,
    )
    _timed(seconds, "eval_after", started)
    delta = after.score - before.score
    out(
        f"validation avg@{settings.eval_k} after {settings.steps} {method.upper()} steps: "
        f"{after.score:.1f}% ({delta:+.1f} points)"
    )
    if curve:
        first = [row["reward"] for row in curve[: max(1, len(curve) // 4)]]
        last = [row["reward"] for row in curve[-max(1, len(curve) // 4) :]]
        line = (
            f"training reward: {sum(first) / len(first):.3f} (first quarter of steps) -> "
            f"{sum(last) / len(last):.3f} (last quarter)"
        )
        dropped = [
            row["vppo/dynamic_sampling/dropped_frac"]
            for row in curve
            if "vppo/dynamic_sampling/dropped_frac" in row
        ]
        if dropped:
            line += (
                f"; dynamic sampling dropped {sum(dropped) / len(dropped):.0%} of the groups "
                "(all right or all wrong)"
            )
        out(line)

    summary_stats: dict[str, Any] = {}
    if settings.summary_responses:
        started = time.perf_counter()
        text, summary_stats = perception_summary(
            model,
            processor,
            validation,
            num_responses=settings.summary_responses,
            show=settings.summary_show,
            max_new_tokens=settings.max_completion_length,
            seed=settings.seed,
        )
        _timed(seconds, "perception", started)
        (output / "perception.txt").write_text(text + "\n", encoding="utf-8")
        out("")
        out(
            f"token perception of {settings.summary_responses} fresh validation responses "
            "(k3 dependency, patch blackening p = 0.5):"
        )
        out(text)
    seconds["total"] = round(time.perf_counter() - total, 1)
    result = RunResult(
        method,
        settings.seed,
        settings.steps,
        before.score,
        after.score,
        curve,
        seconds,
        asdict(settings),
    )
    payload = result.to_dict()
    payload["perception"] = summary_stats
    payload["checkpoint"] = (
        str(checkpoint) if checkpoint is not None else f"vppo/assets/{warm.name}"
    )
    (output / "demo_results.json").write_text(
        json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8"
    )
    out("")
    out(f"done in {seconds['total']:.0f} s; results in {output}")
    return result


def quiet_library_noise() -> None:
    """Hide library chatter that says nothing about the run (for the command-line entry points).

    Hidden: transformers' deprecation notice raised inside TRL on every step, per-file loading
    bars, and the trainer's note each time dynamic sampling fills a batch with uniform groups
    (the demo's curve records ``vppo/dynamic_sampling/filler_groups`` instead).
    """
    import logging
    import warnings

    import datasets
    import transformers

    warnings.filterwarnings(
        "ignore", message=".*gradient_checkpointing` is deprecated.*", category=FutureWarning
    )
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    logging.getLogger("vppo.trainer").setLevel(logging.ERROR)


def build_parser() -> argparse.ArgumentParser:
    defaults = DemoSettings()
    parser = argparse.ArgumentParser(
        prog="vppo demo",
        description="Train the warm-started tiny VLM with VPPO on the synthetic visual task (CPU, "
        "a few minutes) and show validation accuracy before and after, plus token perception.",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"RL steps (default {defaults.steps}; --quick: {QUICK_SETTINGS.steps}).",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="Seed of training (data order, sampling, perturbation masks).",
    )
    parser.add_argument("--output-dir", default="runs/demo", help="Where results are written.")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="A shortened configuration that checks every stage (used by tests).",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="Warm-start folder to train (default: the one shipped in the package).",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help=f"Adam learning rate (default {defaults.learning_rate}).",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="Torch CPU threads (default: the cores not busy with other work).",
    )
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    from vppo.data.settings import accept_underscores

    return accept_underscores(parser)  # --output_dir as in vppo train


def main(argv: list[str] | None = None) -> int:
    import torch

    args = build_parser().parse_args(argv)
    settings = QUICK_SETTINGS if args.quick else DemoSettings()
    changes: dict[str, Any] = {"seed": args.seed}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.learning_rate is not None:
        changes["learning_rate"] = args.learning_rate
    settings = replace(settings, **changes)
    torch.set_num_threads(choose_num_threads(args.threads))
    quiet_library_noise()
    run_demo(settings, args.output_dir, checkpoint=args.checkpoint, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
