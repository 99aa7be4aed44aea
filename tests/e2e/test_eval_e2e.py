"""End to end: a tiny real Qwen2.5-VL evaluated on ShareGPT fixtures, from Python and the CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vppo.cli import main as vppo_main
from vppo.data.prompts import build_prompt_messages
from vppo.evaluation import (
    EvalSettings,
    GenerationRequest,
    SamplingConfig,
    TransformersBackend,
    VLLMBackend,
    evaluate,
    load_benchmark,
    rows_to_examples,
)
from vppo.models import build_tiny_vlm

INSTRUCTION = (
    "You first think through the reasoning process as an internal monologue, enclosed within "
    "<think> </think> tags. Then, provide your final answer enclosed within \\boxed{}."
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model dir, model, processor) of a tiny random Qwen2.5-VL saved to disk."""
    path = tmp_path_factory.mktemp("tiny_qwen")
    model, processor = build_tiny_vlm("qwen2_5_vl", save_dir=path)
    return path, model, processor


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A PAPO-Eval style data folder: geo3k with 3 questions, the last one's image is corrupt."""
    root = tmp_path_factory.mktemp("papo") / "data"
    images = root / "images" / "hiyouga_geometry3k"
    images.mkdir(parents=True)
    Image.new("RGB", (80, 60), (250, 0, 0)).save(images / "0.png")
    Image.new("RGB", (40, 90), (0, 0, 250)).save(images / "1.png")
    (images / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"<image>{q}\n\n{INSTRUCTION}"},
                {"role": "assistant", "content": a},
            ],
            "images": [f"./data/images/hiyouga_geometry3k/{i}.png"],
        }
        for i, (q, a) in enumerate([("Find x.", "48"), ("Which? A. 1 B. 2", "B"), ("Find y.", "3")])
    ]
    (root / "papo").mkdir()
    (root / "papo" / "hiyouga_geometry3k.json").write_text(json.dumps(rows), encoding="utf-8")
    return root


def run_settings() -> EvalSettings:
    return EvalSettings(num_samples=2, batch_size=3, sampling=SamplingConfig(max_new_tokens=8))


def test_transformers_backend_end_to_end(tiny, data_dir, tmp_path):
    path, _, _ = tiny
    backend = TransformersBackend.from_pretrained(path, device="cpu")
    geo3k = load_benchmark("geo3k", data_dir=data_dir)
    report = evaluate(
        [geo3k], backend, run_settings(), tmp_path / "a", model_id=str(path), progress=False
    )
    (result,) = report.results

    assert (result.num_questions, result.num_samples, result.generated) == (2, 2, 4)
    assert [s.id for s in result.skipped] == ["2"]
    assert "corrupt" in result.skipped[0].reason or "could not" in result.skipped[0].reason
    for question in result.questions:
        assert len(question.samples) == len(question.extracted) == len(question.correct) == 2
        assert all(isinstance(s, str) for s in question.samples)
    expected = 100 * sum(sum(q.correct) / 2 for q in result.questions) / 2
    assert result.score == pytest.approx(expected)
    cache_rows = (tmp_path / "a" / "cache" / "geo3k.jsonl").read_text().splitlines()
    assert len(cache_rows) == 4

    # The prompt is the chat template with the default system prompt and the perception prompt.
    messages = build_prompt_messages(
        result.questions[0].prompt, 1, system_prompt="You are a helpful assistant."
    )
    request = GenerationRequest("0", 0, messages, [Image.new("RGB", (56, 56))])
    text = backend.chat_text(request)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert text.endswith(f"Find x.\n\n{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n")
    assert backend.prompt_length(request) > len(backend.tokenizer(text)["input_ids"])

    # Same batches, same seeds: a second run reproduces every sample.
    again = evaluate(
        [geo3k], backend, run_settings(), tmp_path / "b", model_id=str(path), progress=False
    )
    assert [q.samples for q in again.results[0].questions] == [q.samples for q in result.questions]


def test_smolvlm_batches_prompts_with_different_image_counts(data_dir, tmp_path):
    # Idefics3-family processors need images grouped per prompt; Qwen ones accept either.
    model, processor = build_tiny_vlm("smolvlm")
    backend = TransformersBackend(model, processor)
    folder = data_dir / "images" / "hiyouga_geometry3k"
    rows = [
        {"problem": "<image>One image.", "answer": "1", "images": [str(folder / "0.png")]},
        {
            "problem": "<image> and <image>: two.",
            "answer": "2",
            "images": [str(folder / "0.png"), str(folder / "1.png")],
        },
    ]
    loaded = rows_to_examples(rows, "mixed")
    settings = EvalSettings(num_samples=1, batch_size=2, sampling=SamplingConfig(max_new_tokens=4))
    report = evaluate([loaded], backend, settings, tmp_path, model_id="smol", progress=False)
    assert report.results[0].num_questions == 2 and not report.results[0].skipped


def test_cli_end_to_end_with_resume_and_a_custom_benchmark(tiny, data_dir, tmp_path, capsys):
    path, _, _ = tiny
    custom = tmp_path / "mine.parquet"
    image_struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    png = (data_dir / "images" / "hiyouga_geometry3k" / "0.png").read_bytes()
    pq.write_table(
        pa.table(
            {
                "images": [[{"bytes": png, "path": None}]],
                "problem": ["<image>Count."],
                "answer": ["2"],
            },
            schema=pa.schema(
                [
                    ("images", pa.list_(image_struct)),
                    ("problem", pa.string()),
                    ("answer", pa.string()),
                ]
            ),
        ),
        custom,
    )
    out = tmp_path / "out"
    argv = [
        "eval",
        "--model",
        str(path),
        "--benchmarks",
        "geo3k,mine",
        "--data-dir",
        str(data_dir),
        "--benchmark-path",
        f"mine={custom}",
        "-k",
        "2",
        "--max-new-tokens",
        "8",
        "--output-dir",
        str(out),
        "--backend",
        "transformers",
        "--device",
        "cpu",
        "--compare-to",
        "Qwen2.5-VL-7B+VPPO",
        "--no-progress",
    ]

    assert vppo_main(argv) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if "Geo3k" in line).split()
    assert header == ["Geo3k", "mine", "Avg"]
    assert "paper: Qwen2.5-VL-7B+VPPO" in printed and "difference" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["columns"] == ["geo3k", "mine"]
    geo = results["benchmarks"]["geo3k"]
    assert (geo["k"], geo["num_questions"], geo["num_skipped"]) == (2, 2, 1)
    assert geo["generated_this_run"] == 4 and results["benchmarks"]["mine"]["num_questions"] == 1
    assert results["compare_to"]["paper"]["geo3k"] == 46.5
    assert results["compare_to"]["difference"]["geo3k"] == pytest.approx(geo["score"] - 46.5)
    lines = [json.loads(x) for x in (out / "geo3k.samples.jsonl").read_text().splitlines()]
    assert [row["id"] for row in lines] == ["0", "1"]
    assert set(lines[0]) >= {"id", "prompt", "answer", "samples", "extracted", "correct"}

    # Rerunning the same command resumes from the cache: nothing is generated again.
    assert vppo_main(argv) == 0
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["benchmarks"]["geo3k"]["generated_this_run"] == 0
    assert rerun["benchmarks"]["geo3k"]["reused_from_cache"] == 4
    assert rerun["benchmarks"]["geo3k"]["score"] == geo["score"]


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys, tiny):
    assert vppo_main(["eval", "--model", str(tmp_path), "--compare-to", "GPT-5"]) == 2
    assert "not a reference row" in capsys.readouterr().err
    assert (
        vppo_main(
            [
                "eval",
                "--model",
                str(tiny[0]),
                "--benchmarks",
                "dynamath",
                "--data-dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "no ShareGPT file for dynamath" in capsys.readouterr().err
    assert vppo_main(["eval", "--model", str(tmp_path), "--benchmark-path", "oops"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
    assert vppo_main(["eval", "--list-references"]) == 0
    assert "Qwen2.5-VL-7B+VPPO" in capsys.readouterr().out.splitlines()


def test_transformers_backend_sets_every_sampling_field_and_bans_vision_tokens(tiny):
    # The vLLM side of the same settings is tested against real vLLM in tests/e2e/test_vllm_engine.py.
    _, model, processor = tiny
    hf_backend = TransformersBackend(model, processor)
    config = hf_backend._generation_config(
        SamplingConfig(temperature=1.0, top_p=1.0, top_k=50, max_new_tokens=2048)
    )
    assert (config.temperature, config.top_p, config.top_k) == (1.0, 1.0, 50)
    banned = set(hf_backend.banned_token_ids)
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") in banned
    assert sorted(t for (t,) in config.bad_words_ids) == sorted(banned)
    assert config.repetition_penalty == 1.0 and config.do_sample
    # top_k = 0 turns top-k off.
    assert hf_backend._generation_config(SamplingConfig(top_k=0)).top_k == 0


def test_vllm_backend_without_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ImportError, match="pip install vllm"):
        VLLMBackend("some/model", processor=object())
