"""``vppo analyze``: which response tokens depend on the image, as statistics, plots and HTML.

    vppo analyze --model runs/vppo-7b --dataset data/mathverse_vision.parquet --samples 200
    vppo analyze --model runs/tiny --dataset synthetic --samples 16 --estimator kl
    vppo analyze --model Qwen/Qwen2.5-VL-7B-Instruct --benchmark mathverse --data-dir PAPO-Eval/data
    vppo analyze --model Qwen/Qwen2.5-VL-7B-Instruct --dataset data/rows.jsonl \\
        --responses data/responses.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main", "read_responses_file"]


def build_parser() -> argparse.ArgumentParser:
    from vppo.analysis.scoring import ESTIMATORS, PERTURBATIONS
    from vppo.data.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
    from vppo.data.settings import OneLineParser, accept_underscores

    p = OneLineParser(
        prog="vppo analyze",
        description="Score every response token's visual dependency (how much the next-token "
        "distribution changes when the image is replaced by a perturbed copy) and write "
        "statistics (JSON + summary), plots (PNG) and an HTML page of shaded tokens.",
    )
    p.add_argument("--model", required=True, help="model directory or Hub id")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--dataset",
        help="data file/folder/Hub name in the training schema (see docs/data.md), "
        "or 'synthetic' for the built-in visual task",
    )
    source.add_argument(
        "--benchmark",
        help="an evaluation benchmark by name (e.g. mathverse, geo3k; loaded by "
        "vppo.evaluation, see docs/evaluation.md)",
    )
    p.add_argument("--data-dir", help="--benchmark: LLaMA-Factory data folder of PAPO-Eval")
    p.add_argument("--benchmark-path", help="--benchmark: its file, folder or Hub name")
    p.add_argument("--split", default="train", help="--dataset: split to read (default: train)")
    p.add_argument(
        "--samples",
        type=int,
        default=32,
        help="prompts (rows / questions) to analyse; a seeded random subset kept in "
        "source order (default 32)",
    )
    p.add_argument(
        "--responses-per-prompt",
        type=int,
        default=1,
        help="responses sampled per prompt (default 1)",
    )
    p.add_argument(
        "--responses",
        metavar="FILE.jsonl",
        help="score these responses instead of sampling: one JSON object per line with "
        "'response' (text) and optionally 'row' (dataset row in source order; default "
        "the line number) and 'sample'",
    )
    p.add_argument(
        "--response-column",
        default="response",
        help="if the dataset has this column, score its text instead of sampling "
        "(default: response)",
    )
    p.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default="k3",
        help="k3 (official sampled-token estimator, clamped), kl (exact full-vocabulary "
        "KL, the paper's definition), jsd, top1_drop",
    )
    p.add_argument(
        "--perturbation",
        choices=PERTURBATIONS,
        default="blacken",
        help="uninformative image: blacken (processed patches, default), blacken_image "
        "(official, PIL squares + re-processing), noise, blur, grey, or none (no image: the "
        "image and its placeholder tokens removed from the prompt, text-only reference)",
    )
    p.add_argument(
        "--perturbation-prob",
        type=float,
        default=0.5,
        help="probability of blackening each patch (default 0.5)",
    )
    p.add_argument("--patch-size", type=int, help="blackening patch size (default: the ViT patch)")
    p.add_argument("--ratio", type=float, default=0.4, help="TGF keep ratio k (default 0.4)")
    p.add_argument("--clip", type=float, default=10.0, help="k3/top1_drop clamp (default 10)")
    p.add_argument("--output-dir", help="default: analysis_results/<model name>")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="sampling temperature, 0 = greedy; log-probs use logits / temperature "
        "(logits / 1 when greedy) (default 1.0)",
    )
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 disables top-k (default)")
    p.add_argument("--seed", type=int, default=0, help="row subset, sampling and perturbation seed")
    p.add_argument(
        "--batch-size", type=int, default=4, help="responses per forward / generate call"
    )
    p.add_argument(
        "--kl-chunk-size",
        type=int,
        default=1024,
        help="tokens per chunk for log-probs, entropies and the exact estimators",
    )
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", help="default: cuda if available, else cpu")
    p.add_argument("--image-column", default="images")
    p.add_argument("--problem-column", default="problem")
    p.add_argument("--answer-column", default="answer")
    p.add_argument(
        "--prompt-template",
        "--template",
        dest="prompt_template",
        help="built-in name, .jinja path or inline Jinja (default: the model folder's "
        "recorded one, vppo_prompt.json / vppo_warmstart.json, else vppo_math; the "
        "paper's benchmarks always default to vppo_math)",
    )
    p.add_argument(
        "--system-prompt",
        help="system message (default: the model folder's recorded one, else the chat template's)",
    )
    p.add_argument(
        "--min-pixels",
        type=int,
        help="images are upscaled to at least this many pixels (default: the model "
        f"folder's recorded value, else {DEFAULT_MIN_PIXELS}, as vppo eval and vppo train)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        help="images are downscaled to at most this many pixels (default: the model "
        f"folder's recorded value, else {DEFAULT_MAX_PIXELS})",
    )
    p.add_argument(
        "--html-max-responses",
        type=int,
        default=200,
        help="responses shown on the HTML page (default 200)",
    )
    p.add_argument(
        "--html-order",
        choices=("index", "dependency", "dependency_asc"),
        default="index",
        help="order of the responses on the HTML page",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return accept_underscores(p)


def read_responses_file(path: str | Path) -> list[dict[str, Any]]:
    """Lines of a responses JSONL: ``response`` (str), optional ``row`` and ``sample`` (ints)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"responses file not found: {path}.")
    from vppo.data.loading import _utf8_problem, json_error_detail

    data = path.read_bytes()
    problem = _utf8_problem(data)
    if problem:
        raise ValueError(f"responses file {path}: {problem}.")
    entries = []
    for number, line in enumerate(data.decode("utf-8-sig").splitlines()):
        if not line.strip():
            continue
        where = f"line {number + 1} of {path}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{where} is not valid JSON ({json_error_detail(line, err)})."
            ) from err
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be a JSON object with a 'response' field.")
        if not isinstance(data.get("response"), str):
            raise ValueError(f"{where}: field 'response' must be a string.")
        for key, default in (("row", len(entries)), ("sample", 0)):
            value = data.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{where}: field '{key}' must be a non-negative integer.")
            data[key] = value
        entries.append(data)
    if not entries:
        raise ValueError(f"responses file {path} holds no responses.")
    return entries


def _apply_prompt_settings(args: argparse.Namespace) -> str:
    """Fill unset prompt options as vppo train and vppo eval do; returns their description."""
    from vppo.data.settings import apply_prompt_settings
    from vppo.evaluation.benchmarks import BENCHMARKS, canonical_name

    paper = args.benchmark is not None and canonical_name(args.benchmark) in BENCHMARKS
    return apply_prompt_settings(args, args.model, use_recorded=not paper).describe()


def _load_rows(args: argparse.Namespace, max_samples: int, seed: int | None, keep: list[str]):
    from vppo.data import load_training_dataset

    min_pixels, max_pixels = args.min_pixels, args.max_pixels
    kwargs = dict(
        split=args.split,
        image_column=args.image_column,
        problem_column=args.problem_column,
        answer_column=args.answer_column,
        prompt_template=args.prompt_template,
        system_prompt=args.system_prompt,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        keep_columns=keep,
    )
    if args.dataset == "synthetic":
        from vppo.data.synthetic import make_synthetic_dataset

        raw = make_synthetic_dataset(max_samples, split=args.split, seed=args.seed)
        return load_training_dataset(raw, **kwargs)
    try:
        return load_training_dataset(args.dataset, max_samples=max_samples, seed=seed, **kwargs)
    except ValueError as err:
        if "is in ShareGPT form" not in str(err):
            raise
        # The training loader's advice (rewrite the rows) is not needed here: benchmarks read ShareGPT.
        raise ValueError(
            f"{args.dataset} is in ShareGPT form (chat turns), which --dataset does not read; analyse it "
            f"as a benchmark: --benchmark NAME --benchmark-path {args.dataset}."
        ) from err


def _load_dataset_with_responses(args: argparse.Namespace, max_samples: int, seed: int | None):
    """The dataset, with the response column when it has one (else without)."""
    if args.dataset == "synthetic" or not args.response_column:
        return _load_rows(args, max_samples, seed, []), False
    try:
        return _load_rows(args, max_samples, seed, [args.response_column]), True
    except ValueError as err:
        if f"keep column '{args.response_column}' not found" not in str(err):
            raise
    return _load_rows(args, max_samples, seed, []), False


def _benchmark_rows(args: argparse.Namespace, count: int, first: bool) -> list[dict[str, Any]]:
    """Rows (prompt, images, answer) of an evaluation benchmark, prompted as in `vppo eval`.

    ``first``: the first ``count`` questions (responses files refer to rows in source order);
    otherwise a seeded random subset of ``count`` questions, kept in source order.
    """
    import random

    from vppo.data import build_prompt_messages, prepare_image, render_prompt
    from vppo.evaluation import load_benchmark

    loaded = load_benchmark(args.benchmark, path=args.benchmark_path, data_dir=args.data_dir)
    examples = loaded.examples
    if first:
        picked = list(range(min(count, len(examples))))
    else:
        picked = sorted(
            random.Random(args.seed).sample(range(len(examples)), min(count, len(examples)))
        )
    min_pixels, max_pixels = args.min_pixels, args.max_pixels
    template = args.prompt_template or "vppo_math"
    rows = []
    for i in picked:
        example = examples[i]
        images = [
            prepare_image(
                img,
                min_pixels=min_pixels,
                max_pixels=max_pixels,
                min_side=None,
                row=example.row,
                field=f"{example.benchmark} images",
            )
            for img in example.images
        ]
        text = render_prompt(example.problem, template)
        rows.append(
            {
                "prompt": build_prompt_messages(
                    text, len(images), system_prompt=args.system_prompt
                ),
                "images": images,
                "answer": example.answer,
                "id": example.id,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import torch

        from vppo.analysis.report import analyze_records, format_summary, write_report
        from vppo.analysis.scoring import generate_responses, score_responses
        from vppo.evaluation.cli import check_output_dir
        from vppo.models import check_vision_language_model, load_model_and_processor

        if args.samples < 1:
            raise ValueError(f"--samples must be a positive number of prompts, got {args.samples}.")
        if args.responses_per_prompt < 1:
            raise ValueError(
                f"--responses-per-prompt must be at least 1, got {args.responses_per_prompt}."
            )
        if not 0.0 < args.ratio <= 1.0:
            raise ValueError(f"--ratio must be in (0, 1], got {args.ratio}.")
        check_vision_language_model(args.model)  # one line for a text-only model, before any data
        output_dir = Path(
            args.output_dir
            or Path("analysis_results") / (Path(args.model.rstrip("/")).name or "model")
        )
        check_output_dir(output_dir)  # before the work, not when the report is written
        progress = not args.no_progress
        print(f"prompts: {_apply_prompt_settings(args)}")

        given = read_responses_file(args.responses) if args.responses else None
        name = args.dataset if args.dataset is not None else f"benchmark {args.benchmark}"
        if given is not None:
            needed = max(e["row"] for e in given) + 1
            if args.benchmark is not None:
                rows = _benchmark_rows(args, needed, first=True)
            else:
                dataset = _load_rows(args, needed, None, [])
                rows = [dataset[i] for i in range(len(dataset))]
            if len(rows) < needed:
                raise ValueError(
                    f"responses file {args.responses} refers to row {needed - 1} but {name} has "
                    f"{len(rows)} rows."
                )
            source = f"file {args.responses}"
        elif args.benchmark is not None:
            rows = _benchmark_rows(args, args.samples, first=False)
            source = "sampled"
        else:
            dataset, has_column = _load_dataset_with_responses(args, args.samples, args.seed)
            source = f"column '{args.response_column}'" if has_column else "sampled"
            rows = [dataset[i] for i in range(len(dataset))]
        if not rows:
            raise ValueError(f"{name} has no rows to analyse.")
        print(f"{len(rows)} prompts from {name}; responses: {source}")

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, processor = load_model_and_processor(args.model, dtype=args.dtype)
        model.to(device)

        if given is not None:
            row_ids = [e["row"] for e in given]
            samples = [e["sample"] for e in given]
            responses: list[Any] = [e["response"] for e in given]
        elif source.startswith("column"):
            row_ids = list(range(len(rows)))
            samples = [0] * len(rows)
            responses = []
            for i, row in enumerate(rows):
                text = row[args.response_column]
                if not isinstance(text, str):
                    raise ValueError(f"row {i}: column '{args.response_column}' must hold text.")
                responses.append(text)
        else:
            g = args.responses_per_prompt
            responses = generate_responses(
                model,
                processor,
                [r["prompt"] for r in rows],
                [r["images"] for r in rows],
                num_generations=g,
                max_new_tokens=args.max_new_tokens,
                temperature=args.temperature,
                top_p=args.top_p,
                top_k=args.top_k,
                seed=args.seed,
                batch_size=args.batch_size,
                progress=progress,
            )
            row_ids = [i for i in range(len(rows)) for _ in range(g)]
            samples = [j for _ in range(len(rows)) for j in range(g)]
        records = score_responses(
            model,
            processor,
            [rows[i]["prompt"] for i in row_ids],
            [rows[i]["images"] for i in row_ids],
            responses,
            estimator=args.estimator,
            perturbation=args.perturbation,
            prob=args.perturbation_prob,
            seed=args.seed,
            batch_size=args.batch_size,
            clip=args.clip,
            temperature=args.temperature if args.temperature > 0 else 1.0,
            patch_size=args.patch_size,
            kl_chunk_size=args.kl_chunk_size,
            answers=[rows[i]["answer"] for i in row_ids],
            rows=row_ids,
            samples=samples,
            progress=progress,
        )
        from vppo.perception import TOKEN_ESTIMATORS

        sampled_estimator = args.estimator in TOKEN_ESTIMATORS
        stats = analyze_records(
            records, ratio=args.ratio, clip=args.clip if sampled_estimator else None
        )
        stats["settings"] = {
            "model": args.model,
            **(
                {"dataset": args.dataset, "split": args.split}
                if args.dataset is not None
                else {"benchmark": args.benchmark}
            ),
            "responses": source,
            "estimator": args.estimator,
            "perturbation": args.perturbation,
            "perturbation_prob": args.perturbation_prob,
            "ratio": args.ratio,
            **({"clip": args.clip} if sampled_estimator else {}),
            "temperature": args.temperature,
            "seed": args.seed,
        }
        paths = write_report(
            records,
            stats,
            output_dir,
            images=[rows[i]["images"] for i in row_ids],
            html_max_responses=args.html_max_responses,
            html_order=args.html_order,
        )
    except KeyboardInterrupt:
        print("\nvppo analyze: interrupted.", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError) as err:
        print(f"vppo analyze: {err}", file=sys.stderr)
        return 2
    print()
    print(format_summary(stats))
    print(
        f"\nreport: {paths['html']}\nstatistics: {paths['statistics']}; records: {paths['records']}; "
        f"plots: {output_dir}/*.png"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
