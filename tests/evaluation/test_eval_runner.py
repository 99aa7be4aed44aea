"""avg@k arithmetic, the resumable sample cache, skipped rows and the paper's reference table."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from vppo.evaluation.benchmarks import rows_to_examples
from vppo.evaluation.generation import GenerationRequest, SamplingConfig, request_seed
from vppo.evaluation.reference import (
    PAPER_BENCHMARKS,
    REFERENCE_RESULTS,
    compare_to_reference,
    paper_average_is_consistent,
    reference_row,
)
from vppo.evaluation.runner import (
    EvalReport,
    EvalSettings,
    SampleCache,
    avg_at_k,
    evaluate,
    evaluate_benchmark,
    format_table,
    grade_sample,
)


def png(color=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buf, format="PNG")
    return buf.getvalue()


def correct_pattern(question_id: str, sample_index: int) -> bool:
    """Question q answers samples 0..q-1 correctly (question 0 never, question 3 three times)."""
    return sample_index < int(question_id)


class ScriptedBackend:
    """A deterministic stand-in for a model: the response depends only on (question, sample)."""

    name = "scripted"

    def __init__(
        self, answers: dict[str, str], fail_after: int | None = None, benchmark: str = "toy"
    ):
        self.answers = answers
        self.benchmark = benchmark
        self.fail_after = fail_after
        self.generated: list[tuple[str, int]] = []
        self.batches: list[int] = []

    def generate(self, requests, sampling):
        if self.fail_after is not None and len(self.generated) + len(requests) > self.fail_after:
            raise KeyboardInterrupt  # the process is stopped in the middle of a batch
        out = []
        for r in requests:
            assert r.seed == request_seed(0, self.benchmark, r.question_id, r.sample_index)
            assert r.messages[0]["content"][0]["text"] == "You are a helpful assistant."
            answer = self.answers[r.question_id]
            given = answer if correct_pattern(r.question_id, r.sample_index) else "wrong"
            out.append(f"<think>looking at {len(r.images)} image(s)</think> \\boxed{{{given}}}")
            self.generated.append((r.question_id, r.sample_index))
        self.batches.append(len(requests))
        return out


def toy_benchmark(num_questions: int = 4, corrupt: tuple[int, ...] = (), name: str = "toy"):
    rows = [
        {
            "id": str(q),
            "problem": f"<image>Question {q}",
            "answer": str(10 + q),
            "images": [b"definitely not an image" if q in corrupt else png()],
        }
        for q in range(num_questions)
    ]
    return rows_to_examples(rows, name, schema="easyr1")


def settings(**kwargs) -> EvalSettings:
    base = {"num_samples": 4, "batch_size": 3, "sampling": SamplingConfig(max_new_tokens=16)}
    return EvalSettings(**{**base, **kwargs})


ANSWERS = {str(q): str(10 + q) for q in range(6)}


# --------------------------------------------------------------------------------------------
# avg@k and grading
# --------------------------------------------------------------------------------------------


def test_avg_at_k_is_a_mean_of_per_question_means():
    # j correct out of k per question: 2/4 and 1/4 -> (0.5 + 0.25) / 2.
    assert avg_at_k([[1, 1, 0, 0], [True, False, False, False]]) == pytest.approx(37.5)
    # Unequal sample counts: each question weighs the same (pooling would give 25.0).
    assert avg_at_k([[1], [0, 0, 0]]) == pytest.approx(50.0)
    assert avg_at_k([[1] * 8, [0] * 8, [1, 0] * 4]) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="question 1 has no samples"):
        avg_at_k([[1], []])
    with pytest.raises(ValueError, match="at least one question"):
        avg_at_k([])


def test_grade_sample_uses_the_last_box_after_whitespace_repair():
    assert grade_sample("< think >x</ think > so \\boxed{ 48 }", "48") == ("48", True)
    assert grade_sample("\\boxed{1} no wait \\boxed{2}", "2") == ("2", True)
    assert grade_sample("\\boxed{1} no wait \\boxed{2}", "1") == ("2", False)
    assert grade_sample("The answer is 7.", "7") == ("None", False)  # no box, no fallback


# --------------------------------------------------------------------------------------------
# The runner: scores, resume, skipped rows
# --------------------------------------------------------------------------------------------


def expected_score(question_ids, k):
    return avg_at_k([[correct_pattern(q, i) for i in range(k)] for q in question_ids])


def test_scores_outputs_and_per_question_jsonl(tmp_path):
    loaded = toy_benchmark(4)
    backend = ScriptedBackend(ANSWERS)
    result = evaluate_benchmark(loaded, backend, settings(), tmp_path, model_id="m", progress=False)

    # Questions 0..3 answer 0, 1, 2, 3 of 4 samples correctly: (0 + .25 + .5 + .75) / 4.
    assert result.score == pytest.approx(37.5) == pytest.approx(expected_score("0123", 4))
    assert (result.num_questions, result.generated, result.reused) == (4, 16, 0)
    assert backend.batches == [3, 3, 3, 3, 3, 1]
    rows = [json.loads(line) for line in open(result.samples_path, encoding="utf-8")]
    assert [r["id"] for r in rows] == ["0", "1", "2", "3"]
    third = rows[2]
    assert third["answer"] == "12" and third["correct"] == [True, True, False, False]
    assert third["extracted"] == ["12", "12", "wrong", "wrong"]
    assert third["prompt"].startswith("<image>Question 2\n\nYou first think")
    assert len(third["samples"]) == 4 and third["score"] == 0.5


def test_resume_after_interrupt_generates_only_the_rest(tmp_path):
    loaded = toy_benchmark(5)
    reference = evaluate_benchmark(
        loaded,
        ScriptedBackend(ANSWERS),
        settings(),
        tmp_path / "uninterrupted",
        model_id="m",
        progress=False,
    )

    first = ScriptedBackend(ANSWERS, fail_after=7)  # dies during the third batch of 3
    with pytest.raises(KeyboardInterrupt):
        evaluate_benchmark(
            loaded, first, settings(), tmp_path / "run", model_id="m", progress=False
        )
    assert len(first.generated) == 6  # two finished batches reached the cache

    second = ScriptedBackend(ANSWERS)
    resumed = evaluate_benchmark(
        loaded, second, settings(), tmp_path / "run", model_id="m", progress=False
    )
    all_keys = [(str(q), i) for q in range(5) for i in range(4)]
    assert second.generated == [k for k in all_keys if k not in first.generated]
    assert (resumed.generated, resumed.reused) == (14, 6)
    assert resumed.score == pytest.approx(reference.score)
    assert [q.samples for q in resumed.questions] == [q.samples for q in reference.questions]
    assert [q.correct for q in resumed.questions] == [q.correct for q in reference.questions]

    # A third run finds everything cached and generates nothing.
    third = ScriptedBackend(ANSWERS)
    again = evaluate_benchmark(
        loaded, third, settings(), tmp_path / "run", model_id="m", progress=False
    )
    assert third.generated == [] and again.score == pytest.approx(reference.score)


def test_cache_survives_a_torn_line_and_keys_on_settings(tmp_path):
    loaded = toy_benchmark(2)
    evaluate_benchmark(
        loaded,
        ScriptedBackend(ANSWERS),
        settings(num_samples=2),
        tmp_path,
        model_id="m",
        progress=False,
    )
    cache_path = tmp_path / "cache" / "toy.jsonl"
    with cache_path.open("a", encoding="utf-8") as handle:
        handle.write('{"fingerprint": "abc", "id": "0", "sam')  # killed mid-write
    lines_before = cache_path.read_text(encoding="utf-8").count("\n")

    # Raising k reuses the first samples and generates only the new indices.
    more = ScriptedBackend(ANSWERS)
    evaluate_benchmark(
        loaded, more, settings(num_samples=3), tmp_path, model_id="m", progress=False
    )
    assert more.generated == [("0", 2), ("1", 2)]
    cache = SampleCache(cache_path)
    assert len(cache.load(settings().fingerprint("m"))) == 6 and cache.corrupt_lines == 1

    # Different sampling settings or another model: nothing is reused, old rows are kept.
    hotter = ScriptedBackend(ANSWERS)
    evaluate_benchmark(
        loaded,
        hotter,
        settings(num_samples=2, sampling=SamplingConfig(temperature=0.7, max_new_tokens=16)),
        tmp_path,
        model_id="m",
        progress=False,
    )
    other_model = ScriptedBackend(ANSWERS)
    evaluate_benchmark(
        loaded, other_model, settings(num_samples=2), tmp_path, model_id="m2", progress=False
    )
    assert len(hotter.generated) == 4 and len(other_model.generated) == 4
    assert cache_path.read_text(encoding="utf-8").count("\n") == lines_before + 2 + 1 + 8
    assert settings().fingerprint("m") == settings(num_samples=8, batch_size=1).fingerprint("m")
    assert settings().fingerprint("m") != settings(template="plain").fingerprint("m")


def test_changed_question_text_is_regenerated(tmp_path):
    loaded = toy_benchmark(2)
    evaluate_benchmark(
        loaded,
        ScriptedBackend(ANSWERS),
        settings(num_samples=2),
        tmp_path,
        model_id="m",
        progress=False,
    )
    rows = [
        {"id": "0", "problem": "<image>Question 0, edited", "answer": "10", "images": [png()]},
        {"id": "1", "problem": "<image>Question 1", "answer": "11", "images": [png()]},
    ]
    backend = ScriptedBackend(ANSWERS)
    evaluate_benchmark(
        rows_to_examples(rows, "toy"),
        backend,
        settings(num_samples=2),
        tmp_path,
        model_id="m",
        progress=False,
    )
    assert backend.generated == [("0", 0), ("0", 1)]


class LookingBackend:
    """Answers with the red value of the image's first pixel: a response that depends on the image."""

    name = "looking"

    def __init__(self):
        self.generated = []

    def generate(self, requests, sampling):
        self.generated += [(r.question_id, r.sample_index) for r in requests]
        return [f"\\boxed{{{r.images[0].getpixel((0, 0))[0]}}}" for r in requests]


def _coloured(reds):
    rows = [
        {
            "id": str(q),
            "problem": f"<image>What is the red value? {q}",
            "answer": str(red),
            "images": [png((red, 10, 10))],
        }
        for q, red in enumerate(reds)
    ]
    return rows_to_examples(rows, "toy", schema="easyr1")


def test_changed_images_are_regenerated_and_the_rerun_equals_a_fresh_one(tmp_path):
    k = settings(num_samples=2)
    evaluate_benchmark(
        _coloured([10, 20, 30, 40]),
        LookingBackend(),
        k,
        tmp_path / "run",
        model_id="m",
        progress=False,
    )
    # same questions; questions 1 and 3 now show other pictures (and have other answers)
    changed = _coloured([10, 120, 30, 140])
    backend = LookingBackend()
    rerun = evaluate_benchmark(changed, backend, k, tmp_path / "run", model_id="m", progress=False)
    assert sorted(backend.generated) == [("1", 0), ("1", 1), ("3", 0), ("3", 1)]
    assert (rerun.generated, rerun.reused) == (4, 4)
    fresh = evaluate_benchmark(
        changed, LookingBackend(), k, tmp_path / "fresh", model_id="m", progress=False
    )
    assert rerun.score == fresh.score == 100.0
    assert [q.samples for q in rerun.questions] == [q.samples for q in fresh.questions]


def test_a_torn_multibyte_line_and_a_null_response_are_skipped(tmp_path, capsys):
    loaded = toy_benchmark(2)
    evaluate_benchmark(
        loaded,
        ScriptedBackend(ANSWERS),
        settings(num_samples=2),
        tmp_path,
        model_id="m",
        progress=False,
    )
    cache_path = tmp_path / "cache" / "toy.jsonl"
    rows = [json.loads(line) for line in cache_path.read_text(encoding="utf-8").splitlines()]
    rows[0]["response"] = None  # a null is not the text "None"
    torn = json.dumps({**rows[1], "response": "réponse"}, ensure_ascii=False).encode()
    torn = torn[: torn.index("é".encode()) + 1]  # cut inside the two bytes of "é"
    cache_path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + torn)
    backend = ScriptedBackend(ANSWERS)
    result = evaluate_benchmark(
        loaded, backend, settings(num_samples=2), tmp_path, model_id="m", progress=False
    )
    assert backend.generated == [("0", 0)]  # the null sample; the torn line duplicated a cached one
    assert f"[toy] ignored 2 unreadable line(s) in {cache_path}." in capsys.readouterr().err
    assert "None" not in json.dumps([q.samples for q in result.questions])


def test_corrupt_image_row_is_skipped_and_reported(tmp_path):
    loaded = toy_benchmark(4, corrupt=(2,))
    backend = ScriptedBackend(ANSWERS)
    report = evaluate([loaded], backend, settings(), tmp_path, model_id="m", progress=False)
    (result,) = report.results

    assert {q for q, _ in backend.generated} == {"0", "1", "3"}
    assert result.num_questions == 3
    assert result.score == pytest.approx(expected_score("013", 4))
    ((skipped_id, reason),) = [(s.id, s.reason) for s in result.skipped]
    assert skipped_id == "2" and "could not be read as an image" in reason
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert saved["benchmarks"]["toy"]["num_skipped"] == 1
    assert saved["benchmarks"]["toy"]["skipped"][0]["id"] == "2"


def test_prompt_longer_than_the_limit_is_skipped(tmp_path):
    class LongPrompts(ScriptedBackend):
        def prompt_length(self, request: GenerationRequest) -> int:
            return 100 if request.question_id == "1" else 10

    backend = LongPrompts(ANSWERS)
    result = evaluate_benchmark(
        toy_benchmark(3),
        backend,
        settings(max_prompt_tokens=50),
        tmp_path,
        model_id="m",
        progress=False,
    )
    assert [s.id for s in result.skipped] == ["1"]
    assert "100 tokens" in result.skipped[0].reason
    assert {q for q, _ in backend.generated} == {"0", "2"}


def test_settings_validation():
    with pytest.raises(ValueError, match="num_samples"):
        EvalSettings(num_samples=0)
    with pytest.raises(ValueError, match="grader"):
        EvalSettings(grader="exact")
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(FileNotFoundError, match="prompt template"):
        EvalSettings(template="no_such_template")


# --------------------------------------------------------------------------------------------
# Reference numbers and the table
# --------------------------------------------------------------------------------------------


def test_reference_rows_match_the_paper():
    assert len(REFERENCE_RESULTS) == 18
    assert all(paper_average_is_consistent(name) for name in REFERENCE_RESULTS)
    vppo = reference_row("qwen2.5-vl-7b + vppo")
    assert [vppo[b] for b in PAPER_BENCHMARKS] == [71.6, 68.1, 82.8, 46.5, 33.3, 71.5, 47.9, 37.9]
    assert vppo["avg"] == 57.5
    assert reference_row("VPPO-8B")["avg"] == 71.4
    assert reference_row("Qwen2.5-VL-32B+DAPO")["mmk12"] == 86.4
    with pytest.raises(ValueError, match="not a reference row"):
        reference_row("GPT-5")


def test_compare_to_reference_over_all_and_over_a_subset():
    base = reference_row("Qwen2.5-VL-7B")
    full = {b: base[b] + 1.0 for b in PAPER_BENCHMARKS}
    diff = compare_to_reference(full, "Qwen2.5-VL-7B")
    assert all(diff[b] == pytest.approx(1.0) for b in PAPER_BENCHMARKS)
    assert diff["avg"] == pytest.approx(38.325 + 1.0 - 38.3)  # the paper's printed Avg
    subset = compare_to_reference({"geo3k": 40.0, "wemath": 50.0, "custom": 3.0}, "Qwen2.5-VL-7B")
    assert set(subset) == {"geo3k", "wemath", "avg"}
    assert subset["avg"] == pytest.approx(45.0 - (37.1 + 46.4) / 2)


def test_table_uses_the_paper_column_order(tmp_path):
    names = ["wemath", "custom_set", "mathverse"]
    results = [
        evaluate_benchmark(
            toy_benchmark(2, name=n),
            ScriptedBackend(ANSWERS, benchmark=n),
            settings(),
            tmp_path,
            model_id="m",
            progress=False,
        )
        for n in names
    ]
    report = EvalReport("m", "fp", "scripted", settings(), results)
    assert [r.name for r in report.ordered()] == ["mathverse", "wemath", "custom_set"]
    assert report.average == pytest.approx(expected_score("01", 4))  # paper columns only
    table = format_table(report, "Qwen2.5-VL-7B+VPPO").splitlines()
    header = table[0].split()
    assert header == ["MathVerse", "We-Math", "custom_set", "Avg"]
    paper = next(line for line in table if line.startswith("paper:")).split()
    assert paper[-4:] == ["71.6", "71.5", "-", f"{(71.6 + 71.5) / 2:.1f}"]
    diff = next(line for line in table if line.startswith("difference")).split()
    assert diff[1] == f"{expected_score('01', 4) - 71.6:+.1f}"


def test_duplicate_question_ids_are_refused(tmp_path):
    loaded = toy_benchmark(2)
    loaded.examples.append(loaded.examples[0])
    with pytest.raises(ValueError, match="question id '0' occurs twice"):
        evaluate_benchmark(
            loaded, ScriptedBackend(ANSWERS), settings(), tmp_path, model_id="m", progress=False
        )


def test_a_model_trained_again_into_its_folder_gets_a_new_cache_key(tmp_path):
    import os

    folder = tmp_path / "model"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"first weights")
    first = settings().fingerprint(str(folder))
    assert settings().fingerprint(str(folder)) == first  # stable while the weights are the same
    weights.write_bytes(b"other weights")
    os.utime(weights, ns=(1, 10**18))
    assert settings().fingerprint(str(folder)) != first
    assert settings().fingerprint("Qwen/Qwen2.5-VL-7B-Instruct") == settings().fingerprint(
        "Qwen/Qwen2.5-VL-7B-Instruct"
    )
