"""``vppo eval``: avg@k of a model on the paper's benchmarks, resumable, in one command.

    vppo eval --model runs/vppo-7b --benchmarks all --data-dir PAPO-Eval/data
    vppo eval --model Qwen/Qwen2.5-VL-7B-Instruct --benchmarks geo3k,wemath --limit 50 \\
        --compare-to Qwen2.5-VL-7B
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vppo.data.settings import OneLineParser, accept_underscores, resolve_prompt_settings
from vppo.evaluation.benchmarks import BENCHMARKS, load_benchmark, resolve_benchmark_names
from vppo.evaluation.generation import DEFAULT_SYSTEM_PROMPT, SamplingConfig, build_backend
from vppo.evaluation.reference import REFERENCE_RESULTS, reference_row
from vppo.evaluation.runner import (
    EVAL_MAX_PIXELS,
    EVAL_MAX_PROMPT_TOKENS,
    EVAL_MIN_PIXELS,
    EvalSettings,
    evaluate,
    format_table,
)

__all__ = ["build_parser", "check_output_dir", "main"]


def check_output_dir(path: str | Path, option: str = "--output-dir") -> None:
    """Refuse an output folder that could not be created or written, before any work and without
    creating it: the nearest existing folder on its path must be a writable folder."""
    folder = Path(path).expanduser().absolute()
    for existing in (folder, *folder.parents):
        if existing.exists():
            if not existing.is_dir():
                raise ValueError(f"{option} {path}: {existing} is a file, not a folder.")
            if not os.access(existing, os.W_OK | os.X_OK):
                raise ValueError(f"{option} {path} is not writable ({existing}).")
            return


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="vppo eval",
        description="Evaluate a model with the paper's protocol: k samples per question at "
        "temperature 1.0, scored by the last \\boxed{} (MathRuler grading), avg@k per benchmark.",
    )
    p.add_argument("--model", help="model directory or Hub id")
    p.add_argument(
        "--benchmarks",
        help="'all' (the paper's eight) or a comma list, e.g. geo3k,wemath; known: "
        + ", ".join(BENCHMARKS)
        + ". Default: the --benchmark-path names if given, else all",
    )
    p.add_argument(
        "--data-dir",
        help="LLaMA-Factory data folder holding the PAPO-Eval / VPPO-Eval ShareGPT files "
        "(papo/<name>.json, vppo/<name>.json, images/...)",
    )
    p.add_argument(
        "--benchmark-path",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="file, folder or Hub name ([hub:]owner/name[:config][@split]) for one benchmark; "
        "repeatable; a NAME outside the registry adds a custom benchmark",
    )
    p.add_argument(
        "--source",
        choices=("auto", "sharegpt", "raw"),
        default="auto",
        help="without a path: the ShareGPT files the paper scored (auto/sharegpt) or the raw "
        "Hub datasets (raw)",
    )
    p.add_argument("--limit", type=int, help="only the first N questions of each benchmark")
    p.add_argument("--output-dir", help="default: eval_results/<model name>")
    p.add_argument("-k", "--num-samples", type=int, default=8, help="samples per question")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=50, help="0 disables (PAPO-Eval used 50)")
    p.add_argument(
        "--max-new-tokens", type=int, default=2048, help="the paper: 2048 (7B), 4096 (32B)"
    )
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument(
        "--min-pixels",
        type=int,
        help=f"default: the model folder's recorded value for your own benchmarks "
        f"(vppo_prompt.json), else {EVAL_MIN_PIXELS} (the paper's protocol)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        help=f"default: the model folder's recorded value for your own benchmarks, else "
        f"{EVAL_MAX_PIXELS}",
    )
    p.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=EVAL_MAX_PROMPT_TOKENS,
        help="longer prompts are skipped and reported",
    )
    p.add_argument(
        "--prompt-template",
        "--template",
        dest="template",
        help="prompt template: built-in name, .jinja path or inline Jinja (default: the "
        "model folder's recorded one for your own benchmarks, else vppo_math)",
    )
    p.add_argument(
        "--system-prompt",
        help="system message (default: the model folder's recorded one for your own "
        "benchmarks, else none: the chat template's, which for Qwen2.5-VL is PAPO-Eval's "
        f"{DEFAULT_SYSTEM_PROMPT!r})",
    )
    p.add_argument(
        "--no-system-prompt",
        action="store_true",
        help="send no system message (the chat template may still add its own)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--backend",
        choices=("auto", "transformers", "vllm"),
        default="auto",
        help="auto: vLLM when installed and a GPU is visible, else transformers",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="samples per generate call (default 8 for transformers, 512 for vLLM)",
    )
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", help="transformers backend device (default: cuda if available)")
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument(
        "--max-model-len",
        type=int,
        help="vLLM context length (default: max prompt + max new tokens = 11264)",
    )
    p.add_argument(
        "--grader",
        choices=("mathruler", "math_verify"),
        default="mathruler",
        help="math_verify is more lenient than the paper's grading",
    )
    p.add_argument(
        "--compare-to",
        metavar="NAME",
        help="print the difference to a paper row, e.g. 'Qwen2.5-VL-7B+VPPO'",
    )
    p.add_argument(
        "--list-references",
        action="store_true",
        help="list the paper rows usable with --compare-to and exit",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return accept_underscores(p)


def _benchmark_paths(items: list[str]) -> dict[str, str]:
    from vppo.evaluation.benchmarks import canonical_name

    paths: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"--benchmark-path {item!r} must look like NAME=PATH.")
        paths[canonical_name(name)] = path.strip()
    return paths


def _model_id(model: str) -> str:
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def _default_context(model: str, wanted: int) -> int:
    """`wanted` tokens of context, capped at what the model's positions allow (small models)."""
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model)
        limit = getattr(config.get_text_config(), "max_position_embeddings", None)
    except (OSError, ValueError):  # not readable here: let the engine decide and report
        return wanted
    return min(wanted, int(limit)) if limit else wanted


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_references:
        for name in REFERENCE_RESULTS:
            print(name)
        return 0
    if not args.model:
        print("vppo eval: --model is required.", file=sys.stderr)
        return 2
    try:
        if args.compare_to is not None:
            reference_row(args.compare_to)
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be a positive number of questions, got {args.limit}.")
        sampling = SamplingConfig(
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            max_new_tokens=args.max_new_tokens,
            repetition_penalty=args.repetition_penalty,
        )
        backend_name = args.backend
        if backend_name == "auto":
            import torch

            from vppo.evaluation.generation import vllm_available

            backend_name = (
                "vllm" if vllm_available() and torch.cuda.is_available() else "transformers"
            )
        paths = _benchmark_paths(args.benchmark_path)
        names = resolve_benchmark_names(args.benchmarks or (",".join(paths) if paths else "all"))
        from vppo.models import check_vision_language_model

        check_vision_language_model(args.model)  # one line for a text-only model, before any data
        # Your own benchmarks are prompted as the model folder records it was trained; the paper's
        # benchmarks keep the paper's protocol unless a flag says otherwise.
        prompt = resolve_prompt_settings(
            args.model,
            template=args.template,
            system_prompt=args.system_prompt,
            min_pixels=args.min_pixels,
            max_pixels=args.max_pixels,
            use_recorded=not any(name in BENCHMARKS for name in names),
        )
        print(f"prompts: {prompt.describe()}")
        settings = EvalSettings(
            num_samples=args.num_samples,
            sampling=sampling,
            template=prompt.template,
            system_prompt=None if args.no_system_prompt else prompt.system_prompt,
            min_pixels=prompt.min_pixels,
            max_pixels=prompt.max_pixels,
            max_prompt_tokens=args.max_prompt_tokens,
            seed=args.seed,
            batch_size=args.batch_size or (512 if backend_name == "vllm" else 8),
            grader=args.grader,
        )
        loaded = []
        for name in names:
            bench = load_benchmark(
                name,
                path=paths.get(name),
                data_dir=args.data_dir,
                source=args.source,
                limit=args.limit,
            )
            note = f", {len(bench.skipped)} skipped" if bench.skipped else ""
            filt = f", {bench.filtered} filtered out" if bench.filtered else ""
            print(f"[{name}] {len(bench)} questions from {bench.source}{filt}{note}")
            for row in bench.skipped[:5]:
                print(f"  skipped {row.id}: {row.reason}")
            if len(bench.skipped) > 5:
                print(f"  ... and {len(bench.skipped) - 5} more (see results.json)")
            spec = BENCHMARKS.get(name)
            if (
                args.limit is None
                and spec is not None
                and spec.paper_rows is not None
                and bench.schema.startswith("sharegpt")
                and len(bench) + len(bench.skipped) != spec.paper_rows
            ):
                print(f"  note: the paper's file has {spec.paper_rows} questions for {name}.")
            loaded.append(bench)
        model_id = _model_id(args.model)
        output_dir = args.output_dir or os.path.join(
            "eval_results", Path(model_id.rstrip("/")).name or "model"
        )
        check_output_dir(output_dir)
        backend = build_backend(
            backend_name,
            args.model,
            dtype=args.dtype,
            device=args.device,
            tensor_parallel_size=args.tensor_parallel_size,
            gpu_memory_utilization=args.gpu_memory_utilization,
            max_model_len=args.max_model_len
            or _default_context(
                # PAPO-Eval's vLLM context: cutoff_len 9216 + 2048 new tokens = 11264.
                args.model,
                (args.max_prompt_tokens or EVAL_MAX_PROMPT_TOKENS) + args.max_new_tokens,
            ),
            seed=args.seed,
        )
        try:
            report = evaluate(
                loaded,
                backend,
                settings,
                output_dir,
                model_id=model_id,
                progress=not args.no_progress,
                compare_to=args.compare_to,
            )
        finally:
            backend.close()
    except KeyboardInterrupt:
        print(
            "\nvppo eval: interrupted; finished samples are cached, rerun the same command to "
            "continue.",
            file=sys.stderr,
        )
        return 130
    except (ValueError, OSError, ImportError) as err:  # OSError: files, network, Hub
        print(f"vppo eval: {err}", file=sys.stderr)
        return 2
    print()
    print(format_table(report, args.compare_to))
    for result in report.ordered():
        for row in result.skipped[:3]:
            print(f"[{result.name}] skipped {row.id}: {row.reason}")
    print(
        f"\nresults: {Path(output_dir) / 'results.json'}; per-question samples: "
        f"{Path(output_dir) / '<benchmark>.samples.jsonl'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
