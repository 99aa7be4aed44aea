"""avg@k evaluation with an append-only sample cache: interrupted runs resume, nothing is redone.

Protocol (PAPO-Eval, which the paper used): k samples per question at temperature 1.0; each
sample is scored 1 when the content of its last ``\\boxed{}`` (after removing whitespace around
``<``, ``>`` and ``/``) grades equal to the answer, else 0; a question's score is the mean of its k
samples and the benchmark's avg@k is the mean over questions, in percent.

Caching: every generated sample is appended to ``<output>/cache/<benchmark>.jsonl`` as soon as
its batch finishes (flushed and fsynced), keyed by question id, sample index and a fingerprint of
everything that changes the sampling distribution (model, decoding settings, prompt template,
system prompt, image pixel limits, seed). A rerun with the same settings only generates the
missing samples; a rerun with different settings ignores, but keeps, the old rows. Grading is not
cached (it is cheap and the grader can change without regenerating).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from vppo.data.images import prepare_image
from vppo.data.prompts import DEFAULT_TEMPLATE, build_prompt_messages, load_template
from vppo.data.settings import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from vppo.evaluation.benchmarks import BENCHMARKS, EvalExample, LoadedBenchmark, SkippedRow
from vppo.evaluation.generation import (
    DEFAULT_SYSTEM_PROMPT,
    GenerationBackend,
    GenerationRequest,
    SamplingConfig,
    request_seed,
)
from vppo.evaluation.reference import COLUMN_TITLES, PAPER_BENCHMARKS
from vppo.rewards import GRADERS, extract_boxed_content, normalize_response

__all__ = [
    "BenchmarkResult",
    "EvalReport",
    "EvalSettings",
    "QuestionResult",
    "SampleCache",
    "avg_at_k",
    "evaluate",
    "evaluate_benchmark",
    "grade_sample",
]

# PAPO-Eval's image range (run_infer.py defaults): 32*32 to 768*768 pixels.
EVAL_MIN_PIXELS = DEFAULT_MIN_PIXELS  # PAPO-Eval's, shared by every command (vppo.data.settings)
EVAL_MAX_PIXELS = DEFAULT_MAX_PIXELS
# PAPO-Eval's cutoff_len.
EVAL_MAX_PROMPT_TOKENS = 9216


@dataclass(frozen=True)
class EvalSettings:
    """Everything that defines an evaluation run besides the model and the data."""

    num_samples: int = 8
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    template: str = DEFAULT_TEMPLATE
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    min_pixels: int | None = EVAL_MIN_PIXELS
    max_pixels: int | None = EVAL_MAX_PIXELS
    max_prompt_tokens: int | None = EVAL_MAX_PROMPT_TOKENS
    seed: int = 0
    batch_size: int = 8
    grader: str = "mathruler"

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"num_samples (k) must be >= 1, got {self.num_samples}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.grader not in GRADERS:
            raise ValueError(f"grader must be one of {sorted(GRADERS)}, got {self.grader!r}.")
        if self.grader == "math_verify" and importlib.util.find_spec("math_verify") is None:
            raise ImportError(
                "grader 'math_verify' needs the optional package math-verify; install it with "
                "`pip install math-verify` or use the default grader 'mathruler'."
            )
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}.")
        load_template(self.template)  # fails early on a bad template name or syntax

    def fingerprint(self, model_id: str) -> str:
        """12 hex digits over the model and every setting that changes what is sampled.

        ``num_samples``, ``batch_size`` and ``grader`` are left out: raising k reuses the first
        samples, and grading happens after generation.
        """
        payload = {
            "model": model_id,
            "weights": weights_stamp(model_id),
            "sampling": self.sampling.to_dict(),
            "template": load_template(self.template).source,
            "system_prompt": self.system_prompt,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "max_prompt_tokens": self.max_prompt_tokens,
            "seed": self.seed,
        }
        text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sampling"] = self.sampling.to_dict()
        return out


def weights_stamp(model: str) -> str:
    """For a local model folder, 16 hex digits over its weight files' names, sizes and modification
    times: a model trained again into the same folder gets a new evaluation cache key. "" for a Hub
    name (its revision is the Hub's business)."""
    folder = Path(model)
    if not folder.is_dir():
        return ""
    entries = sorted(
        f"{path.relative_to(folder)}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
        for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth")
        for path in folder.glob(pattern)
    )
    return hashlib.sha256("|".join(entries).encode()).hexdigest()[:16] if entries else ""


def avg_at_k(correct: Iterable[Sequence[float | bool]]) -> float:
    """avg@k in percent: the mean over questions of each question's mean sample score.

    Args:
        correct: per question, its sample scores (bools or floats in [0, 1]); questions may have
            different sample counts, each question still weighs the same.

    Returns:
        100 * mean_q(mean_i correct[q][i]).
    """
    means = []
    for q, scores in enumerate(correct):
        if len(scores) == 0:
            raise ValueError(f"question {q} has no samples; avg@k needs at least one per question.")
        means.append(sum(float(s) for s in scores) / len(scores))
    if not means:
        raise ValueError("avg@k needs at least one question.")
    return 100.0 * sum(means) / len(means)


def grade_sample(response: str, answer: str, grader: str = "mathruler") -> tuple[str, bool]:
    """(extracted answer, correct) for one response: the last ``\\boxed{}`` after removing the
    whitespace around ``<``, ``>`` and ``/``; ``"None"`` when there is no box (scores 0)."""
    extracted = extract_boxed_content(normalize_response(response))
    return extracted, bool(GRADERS[grader](extracted, answer))


# --------------------------------------------------------------------------------------------
# The sample cache
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedSample:
    response: str
    prompt_sha: str


class SampleCache:
    """Append-only JSON Lines file of generated samples for one benchmark.

    Each line: ``{"fingerprint", "id", "sample", "prompt_sha", "response"}``. A torn last line
    (the process died mid-write) is ignored; later appends start on a fresh line.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.corrupt_lines = 0

    def load(self, fingerprint: str) -> dict[tuple[str, int], CachedSample]:
        """Samples of this fingerprint; a later row for the same key wins. A line that is not a
        whole UTF-8 JSON row with a text response (a torn write, a null) is counted in
        `corrupt_lines` and its sample generated again."""
        found: dict[tuple[str, int], CachedSample] = {}
        self.corrupt_lines = 0
        if not self.path.is_file():
            return found
        with self.path.open("rb") as handle:
            for raw in handle:
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw.decode("utf-8"))
                    if row["fingerprint"] != fingerprint:
                        continue
                    key = (str(row["id"]), int(row["sample"]))
                    if not isinstance(row["response"], str):
                        raise TypeError("response is not text")
                    found[key] = CachedSample(row["response"], str(row["prompt_sha"]))
                except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
                    self.corrupt_lines += 1
        return found

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append rows and flush them to disk before returning."""
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = False
        if self.path.is_file() and self.path.stat().st_size > 0:
            with self.path.open("rb") as handle:
                handle.seek(-1, os.SEEK_END)
                needs_newline = handle.read(1) != b"\n"
        with self.path.open("a", encoding="utf-8") as handle:
            if needs_newline:
                handle.write("\n")
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class QuestionResult:
    id: str
    prompt: str
    answer: str
    samples: list[str]
    extracted: list[str]
    correct: list[bool]

    @property
    def score(self) -> float:
        return sum(self.correct) / len(self.correct)


@dataclass
class BenchmarkResult:
    """avg@k of one benchmark (``score`` is None when no question could be evaluated)."""

    name: str
    score: float | None
    num_questions: int
    num_samples: int
    skipped: list[SkippedRow]
    generated: int
    reused: int
    source: str = ""
    samples_path: str = ""
    questions: list[QuestionResult] = field(default_factory=list, repr=False)

    @property
    def title(self) -> str:
        spec = BENCHMARKS.get(self.name)
        return spec.title if spec is not None else self.name

    def summary(self) -> dict[str, Any]:
        return {
            "title": self.title,
            f"avg@{self.num_samples}": self.score,
            "score": self.score,
            "k": self.num_samples,
            "num_questions": self.num_questions,
            "num_skipped": len(self.skipped),
            "skipped": [asdict(s) for s in self.skipped],
            "generated_this_run": self.generated,
            "reused_from_cache": self.reused,
            "source": self.source,
            "samples_file": self.samples_path,
        }


def _prompt_sha(user_text: str, example: EvalExample) -> str:
    """16 hex digits over what one question asks: its prompt text and its images' content."""
    try:
        images = example.image_digest()
    except (
        ValueError,
        OSError,
    ):  # unreadable: the question fails when it is generated, never a hit
        images = "unreadable"
    return hashlib.sha256(f"{example.num_images}|{images}|{user_text}".encode()).hexdigest()[:16]


def _batches(items: Iterator[GenerationRequest], size: int) -> Iterator[list[GenerationRequest]]:
    batch: list[GenerationRequest] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


@dataclass
class _Plan:
    """What one benchmark run must do: prompts, samples already cached, samples still missing."""

    prompts: dict[str, tuple[str, str]]  # question id -> (rendered user text, prompt hash)
    responses: dict[str, dict[int, str]]  # question id -> {sample index: completion}
    pending: dict[str, list[int]]  # question id -> sample indices still to generate

    @property
    def reused(self) -> int:
        return sum(len(v) for v in self.responses.values())


def _plan(
    loaded: LoadedBenchmark,
    settings: EvalSettings,
    cached: Mapping[tuple[str, int], CachedSample],
) -> _Plan:
    template = load_template(settings.template)
    plan = _Plan({}, {}, {})
    for example in loaded.examples:
        if example.id in plan.prompts:
            raise ValueError(
                f"{loaded.name}: question id {example.id!r} occurs twice; ids must be unique."
            )
        user_text = template.render(example.problem)
        sha = _prompt_sha(user_text, example)
        plan.prompts[example.id] = (user_text, sha)
        hits = {i: cached.get((example.id, i)) for i in range(settings.num_samples)}
        plan.responses[example.id] = {
            i: hit.response for i, hit in hits.items() if hit is not None and hit.prompt_sha == sha
        }
        missing = [i for i in hits if i not in plan.responses[example.id]]
        if missing:
            plan.pending[example.id] = missing
    return plan


def _grade_questions(
    examples: Sequence[EvalExample],
    plan: _Plan,
    settings: EvalSettings,
    label: str,
    progress: bool,
) -> list[QuestionResult]:
    questions = []
    for example in tqdm(examples, desc=label, unit="question", disable=not progress):
        samples = [plan.responses[example.id][i] for i in range(settings.num_samples)]
        graded = [grade_sample(s, example.answer, settings.grader) for s in samples]
        questions.append(
            QuestionResult(
                example.id,
                plan.prompts[example.id][0],
                example.answer,
                samples,
                [extracted for extracted, _ in graded],
                [ok for _, ok in graded],
            )
        )
    return questions


def evaluate_benchmark(
    loaded: LoadedBenchmark,
    backend: GenerationBackend,
    settings: EvalSettings,
    output_dir: str | Path,
    *,
    model_id: str,
    progress: bool = True,
) -> BenchmarkResult:
    """Generate the missing samples of one benchmark, grade all k per question, write results.

    Writes ``<output_dir>/cache/<name>.jsonl`` (append-only) and ``<output_dir>/<name>.samples.jsonl``
    (one line per question: id, prompt, answer, samples, extracted answers, correctness, score).
    A question whose images cannot be read or whose prompt exceeds ``max_prompt_tokens`` is
    skipped and listed in ``skipped``, like the rows the loader skipped.
    """
    output = Path(output_dir)
    name = loaded.name
    fingerprint = settings.fingerprint(model_id)
    cache = SampleCache(output / "cache" / f"{_safe_name(name)}.jsonl")
    plan = _plan(loaded, settings, cache.load(fingerprint))
    if cache.corrupt_lines:
        print(
            f"[{name}] ignored {cache.corrupt_lines} unreadable line(s) in {cache.path}.",
            file=sys.stderr,
        )
    reused = plan.reused
    skipped = list(loaded.skipped)
    failed: set[str] = set()
    total = sum(len(v) for v in plan.pending.values())
    bar = tqdm(
        total=total, desc=f"{name} generate", unit="sample", disable=not progress or total == 0
    )

    def requests() -> Iterator[GenerationRequest]:
        # Lazily, question by question, so only the images of the current batch are in memory.
        for example in loaded.examples:
            indices = plan.pending.get(example.id)
            if not indices:
                continue
            user_text = plan.prompts[example.id][0]
            try:
                first = _request(example, indices[0], user_text, settings, backend, name)
            except (ValueError, FileNotFoundError, OSError) as err:
                skipped.append(SkippedRow(example.id, str(err)))
                failed.add(example.id)
                bar.update(len(indices))
                continue
            yield first
            for i in indices[1:]:
                seed = request_seed(settings.seed, name, example.id, i)
                yield GenerationRequest(example.id, i, first.messages, first.images, seed)

    generated = 0
    try:
        for batch in _batches(requests(), settings.batch_size):
            outputs = backend.generate(batch, settings.sampling)
            if len(outputs) != len(batch):
                raise RuntimeError(
                    f"backend {backend.name} returned {len(outputs)} completions for "
                    f"{len(batch)} requests."
                )
            cache.append(
                [
                    {
                        "fingerprint": fingerprint,
                        "id": r.question_id,
                        "sample": r.sample_index,
                        "prompt_sha": plan.prompts[r.question_id][1],
                        "response": text,
                    }
                    for r, text in zip(batch, outputs, strict=True)
                ]
            )
            for r, text in zip(batch, outputs, strict=True):
                plan.responses[r.question_id][r.sample_index] = text
            generated += len(batch)
            bar.update(len(batch))
    finally:
        bar.close()

    evaluated = [e for e in loaded.examples if e.id not in failed]
    questions = _grade_questions(evaluated, plan, settings, f"{name} grade", progress)
    score = avg_at_k(q.correct for q in questions) if questions else None
    samples_path = output / f"{_safe_name(name)}.samples.jsonl"
    _write_samples(samples_path, name, questions)
    return BenchmarkResult(
        name,
        score,
        len(questions),
        settings.num_samples,
        skipped,
        generated,
        reused,
        loaded.source,
        str(samples_path),
        questions,
    )


def _request(
    example: EvalExample,
    sample_index: int,
    user_text: str,
    settings: EvalSettings,
    backend: GenerationBackend,
    benchmark: str,
) -> GenerationRequest:
    """The first request of a question: decodes and resizes its images, checks the prompt."""
    images = [
        prepare_image(
            img,
            min_pixels=settings.min_pixels,
            max_pixels=settings.max_pixels,
            min_side=None,  # the processor rounds small sides up to one patch itself
            row=example.row,
            field=f"{example.benchmark} images",
        )
        for img in example.images
    ]
    messages = build_prompt_messages(user_text, len(images), system_prompt=settings.system_prompt)
    request = GenerationRequest(
        example.id,
        sample_index,
        messages,
        images,
        request_seed(settings.seed, benchmark, example.id, sample_index),
    )
    limit = settings.max_prompt_tokens
    length_of = getattr(backend, "prompt_length", None)
    if limit is not None and callable(length_of):
        length = length_of(request)
        if length > limit:
            raise ValueError(f"the prompt has {length} tokens, more than max_prompt_tokens={limit}")
    return request


def _write_samples(path: Path, name: str, questions: Sequence[QuestionResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for q in questions:
            row = {
                "id": q.id,
                "benchmark": name,
                "prompt": q.prompt,
                "answer": q.answer,
                "samples": q.samples,
                "extracted": q.extracted,
                "correct": q.correct,
                "score": q.score,
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Several benchmarks
# --------------------------------------------------------------------------------------------


@dataclass
class EvalReport:
    model: str
    fingerprint: str
    backend: str
    settings: EvalSettings
    results: list[BenchmarkResult]

    @property
    def scores(self) -> dict[str, float | None]:
        return {r.name: r.score for r in self.results}

    @property
    def average(self) -> float | None:
        """Mean avg@k over the evaluated paper benchmarks (all benchmarks when none is one)."""
        scored = {n: s for n, s in self.scores.items() if s is not None}
        paper = [s for n, s in scored.items() if n in PAPER_BENCHMARKS]
        values = paper if paper else list(scored.values())
        return sum(values) / len(values) if values else None

    def ordered(self) -> list[BenchmarkResult]:
        """Results in the paper's column order, other benchmarks after, in run order."""
        rank = {name: i for i, name in enumerate(PAPER_BENCHMARKS)}
        return sorted(self.results, key=lambda r: rank.get(r.name, len(rank)))

    def to_dict(self, compare_to: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "fingerprint": self.fingerprint,
            "backend": self.backend,
            "settings": self.settings.to_dict(),
            "metric": f"avg@{self.settings.num_samples} (%)",
            "columns": [r.name for r in self.ordered()],
            "benchmarks": {r.name: r.summary() for r in self.ordered()},
            "average": self.average,
        }
        if compare_to is not None:
            from vppo.evaluation.reference import compare_to_reference, reference_row

            out["compare_to"] = {
                "name": compare_to,
                "paper": reference_row(compare_to),
                "difference": compare_to_reference(self.scores, compare_to),
            }
        return out


def evaluate(
    benchmarks: Sequence[LoadedBenchmark],
    backend: GenerationBackend,
    settings: EvalSettings,
    output_dir: str | Path,
    *,
    model_id: str,
    progress: bool = True,
    compare_to: str | None = None,
) -> EvalReport:
    """Evaluate several loaded benchmarks and write ``<output_dir>/results.json``."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    results = [
        evaluate_benchmark(b, backend, settings, output, model_id=model_id, progress=progress)
        for b in benchmarks
    ]
    report = EvalReport(model_id, settings.fingerprint(model_id), backend.name, settings, results)
    tmp = output / "results.json.tmp"
    tmp.write_text(
        json.dumps(report.to_dict(compare_to), indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    os.replace(tmp, output / "results.json")
    return report


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def format_table(report: EvalReport, compare_to: str | None = None) -> str:
    """The paper-style table: one column per benchmark (paper order) plus Avg; rows for this
    model and, with ``compare_to``, the paper's row and the difference (ours - paper)."""
    from vppo.evaluation.reference import compare_to_reference, reference_row

    ordered = report.ordered()
    titles = [COLUMN_TITLES.get(r.name, r.name) for r in ordered] + ["Avg"]
    ours = [r.score for r in ordered] + [report.average]
    rows: list[tuple[str, list[str]]] = [
        (f"this model (avg@{report.settings.num_samples})", [_fmt(v) for v in ours])
    ]
    if compare_to is not None:
        paper = reference_row(compare_to)
        diff = compare_to_reference(report.scores, compare_to)
        # The paper's Avg covers all eight columns; over a subset, average the same columns.
        covered = [n for n in PAPER_BENCHMARKS if report.scores.get(n) is not None]
        paper_avg = (
            paper["avg"]
            if len(covered) == len(PAPER_BENCHMARKS)
            else (sum(paper[n] for n in covered) / len(covered) if covered else None)
        )
        rows.append(
            (f"paper: {compare_to}", [_fmt(paper.get(r.name)) for r in ordered] + [_fmt(paper_avg)])
        )
        rows.append(
            (
                "difference",
                [_fmt(diff.get(r.name), signed=True) for r in ordered]
                + [_fmt(diff.get("avg"), signed=True)],
            )
        )
    rows.append(("questions", [str(r.num_questions) for r in ordered] + [""]))
    rows.append(("skipped", [str(len(r.skipped)) for r in ordered] + [""]))
    label_width = max(len(label) for label, _ in rows)
    widths = [max(len(t), *(len(cells[i]) for _, cells in rows)) for i, t in enumerate(titles)]
    lines = [
        " " * label_width
        + "  "
        + "  ".join(t.rjust(w) for t, w in zip(titles, widths, strict=True))
    ]
    for label, cells in rows:
        lines.append(
            label.ljust(label_width)
            + "  "
            + "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))
        )
    return "\n".join(lines)
