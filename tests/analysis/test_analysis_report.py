"""`vppo analyze` end to end on a tiny Qwen2.5-VL: every file, valid HTML, real PNGs, a browser render."""

from __future__ import annotations

import json
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vppo.analysis import (
    REPORT_FILES,
    ResponseRecord,
    analyze_records,
    display_text,
    load_records,
    render_html,
    write_report,
)
from vppo.analysis.cli import main
from vppo.data.synthetic import make_synthetic_dataset
from vppo.models import build_tiny_vlm

CHROMIUM = "/usr/bin/chromium"
SMALL_IMAGES = ["--min-pixels", "3136", "--max-pixels", "12544"]
VOID = {"meta", "img", "br", "hr", "input", "link"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "qwen"
    build_tiny_vlm("qwen2_5_vl", path, seed=0)
    return path


@pytest.fixture(scope="module")
def sampled_report(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "sampled"
    code = main(
        [
            "--model",
            str(tiny_model),
            "--dataset",
            "synthetic",
            "--samples",
            "3",
            "--responses-per-prompt",
            "2",
            "--max-new-tokens",
            "10",
            "--output-dir",
            str(out),
            "--batch-size",
            "4",
            "--no-progress",
            *SMALL_IMAGES,
        ]
    )
    assert code == 0
    return out


class _PageParser(HTMLParser):
    """Checks nesting and collects each response's token spans."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.responses: list[list[dict]] = []
        self.tags: list[tuple[str, dict]] = []
        self._token: dict | None = None
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        classes = (attrs.get("class") or "").split()
        if tag == "article" and "response" in classes:
            self.responses.append([])
        if tag == "span" and "t" in classes and "sample" not in classes and self.responses:
            self._token = {
                "text": "",
                "title": attrs.get("title"),
                "classes": classes,
                "dep": float(attrs["data-dep"]),
            }
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()
        if tag == "span" and self._token is not None:
            self.responses[-1].append(self._token)
            self._token = None

    def handle_data(self, data):
        if self._token is not None:
            self._token["text"] += data


def _parse(path: Path) -> _PageParser:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    parser = _PageParser()
    parser.feed(text)
    parser.close()
    assert not parser.errors and not parser.stack
    return parser


def _assert_png(path: Path) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 100 and img.height > 100
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 10, f"{path.name} is (nearly) one colour"


def test_sampled_run_writes_every_file_and_a_faithful_page(sampled_report):
    for name in REPORT_FILES.values():
        assert (sampled_report / name).stat().st_size > 0, name
    stats = json.loads((sampled_report / "statistics.json").read_text())
    assert stats["num_responses"] == 6
    assert stats["settings"]["estimator"] == "k3" and stats["settings"]["responses"] == "sampled"
    assert stats["token_dependency"]["clip"] == 10.0
    assert {"correctness", "entropy", "token_strings", "selection"} <= stats.keys()
    assert "token dependency" in (sampled_report / "summary.txt").read_text()

    records = load_records(sampled_report / "records.jsonl")
    assert [(r.row, r.sample) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    again = analyze_records(records, ratio=0.4, clip=10.0)["token_dependency"]
    for key in ("mean", "max", "gini", "share_zero"):
        assert again[key] == pytest.approx(stats["token_dependency"][key], rel=1e-9)
    assert again["mass_share_top"] == pytest.approx(stats["token_dependency"]["mass_share_top"])

    page = _parse(sampled_report / "report.html")
    assert len(page.responses) == len(records)
    for spans, record in zip(page.responses, records, strict=True):
        assert [s["text"] for s in spans] == [display_text(t) for t in record.tokens]
        assert [s["dep"] for s in spans] == pytest.approx(record.dependency, rel=1e-5, abs=1e-12)
        assert all(s["title"] and "dependency" in s["title"] for s in spans)
        kept = sum("sel" in s["classes"] for s in spans)
        assert kept == -(-2 * len(record.tokens) // 5)  # ceil(0.4 n): the TGF count
    tags = {tag for tag, _ in page.tags}
    assert "script" not in tags and "link" not in tags
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    assert len(images) == 4 and all(src.startswith("data:image/png;base64,") for src in images)
    thumbs = [
        attrs["class"].split()[1]
        for tag, attrs in page.tags
        if tag == "span" and "thumb" in (attrs.get("class") or "")
    ]
    assert thumbs == ["image-0", "image-0", "image-1", "image-1", "image-2", "image-2"]
    page_text = (sampled_report / "report.html").read_text()
    assert page_text.count("background-image: url(data:image/png;base64,") == 3  # once per row
    for key in ("token_histogram", "trajectory_histogram", "dependency_vs_entropy", "top_tokens"):
        _assert_png(sampled_report / REPORT_FILES[key])


def test_benchmark_with_responses_file_exact_kl_and_correctness(tiny_model, tmp_path):
    data = tmp_path / "rows.parquet"
    raw = make_synthetic_dataset(4, seed=3)
    raw.to_parquet(str(data))
    lines = [
        {
            "row": i,
            "sample": s,
            "response": f"<think>I look.</think> \\boxed{{{raw[i]['answer'] if s == 0 else 'zzz'}}}",
        }
        for i in range(4)
        for s in range(2)
    ]
    responses = tmp_path / "responses.jsonl"
    responses.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    out = tmp_path / "kl"
    # a custom benchmark file goes through vppo.evaluation's loader, prompted as `vppo eval` does
    code = main(
        [
            "--model",
            str(tiny_model),
            "--benchmark",
            "mysynthetic",
            "--benchmark-path",
            str(data),
            "--responses",
            str(responses),
            "--estimator",
            "kl",
            "--output-dir",
            str(out),
            "--no-progress",
            "--html-order",
            "dependency",
            *SMALL_IMAGES,
        ]
    )
    assert code == 0
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["settings"]["estimator"] == "kl" and "clip" not in stats["token_dependency"]
    assert stats["settings"]["benchmark"] == "mysynthetic"
    corr = stats["correctness"]
    assert corr["accuracy"] == pytest.approx(0.5) and corr["n"] == 8
    assert corr["point_biserial"] is not None and -1 <= corr["point_biserial"] <= 1
    records = load_records(out / "records.jsonl")
    assert [r.correct for r in records] == [True, False] * 4
    page = _parse(out / "report.html")
    traj = [sum(s["dep"] for s in spans) / len(spans) for spans in page.responses]
    # --html-order dependency: highest trajectory dependency first
    assert all(a >= b * (1 - 1e-5) for a, b in zip(traj[:-1], traj[1:], strict=True))


def test_response_column_is_picked_up_and_bad_input_fails_with_one_line(
    tiny_model, tmp_path, capsys
):
    data = tmp_path / "with_responses.parquet"
    raw = make_synthetic_dataset(2, seed=4)
    raw.add_column("response", ["I see \\boxed{3}", "left"]).to_parquet(str(data))
    out = tmp_path / "column"
    assert (
        main(
            [
                "--model",
                str(tiny_model),
                "--dataset",
                str(data),
                "--output-dir",
                str(out),
                "--no-progress",
                *SMALL_IMAGES,
            ]
        )
        == 0
    )
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["settings"]["responses"] == "column 'response'"
    assert [r.response for r in load_records(out / "records.jsonl")] == ["I see \\boxed{3}", "left"]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"response": "ok"}\n{"row": 0}\n')
    capsys.readouterr()
    assert (
        main(
            [
                "--model",
                str(tiny_model),
                "--dataset",
                str(data),
                "--responses",
                str(bad),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "line 2 of" in capsys.readouterr().err
    beyond = tmp_path / "beyond.jsonl"
    beyond.write_text('{"row": 5, "response": "ok"}\n')
    assert (
        main(
            [
                "--model",
                str(tiny_model),
                "--dataset",
                str(data),
                "--responses",
                str(beyond),
                "--no-progress",
                *SMALL_IMAGES,
            ]
        )
        == 2
    )
    assert "refers to row 5" in capsys.readouterr().err
    assert (
        main(
            [
                "--model",
                str(tiny_model),
                "--dataset",
                str(tmp_path / "missing.jsonl"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "missing.jsonl" in capsys.readouterr().err


def test_page_escapes_model_text_and_shows_control_characters(tmp_path):
    tokens = ["<script>", "alert(1)", "</script>", " & ", "\x0b", "\n", "é"]
    n = len(tokens)
    record = ResponseRecord(
        index=0,
        row=0,
        sample=0,
        question="<b>Q</b>",
        response="".join(tokens),
        answer="<i>",
        correct=None,
        num_images=0,
        token_ids=list(range(n)),
        tokens=tokens,
        logp_real=[-1.0] * n,
        logp_perturbed=[-2.0] * n,
        dependency=[0.0, 0.5, 1.0, 2.0, 0.1, 0.0, 3.0],
        entropy=[1.0] * n,
    )
    stats = analyze_records([record], ratio=0.4, clip=10.0)
    page_text = render_html([record], stats)
    assert "<script>" not in page_text and "&lt;script&gt;" in page_text
    assert "\x0b" not in page_text and "\u240b" in page_text
    path = tmp_path / "page.html"
    path.write_text(page_text, encoding="utf-8")
    (spans,) = _parse(path).responses
    assert [s["text"] for s in spans] == [display_text(t) for t in tokens]
    paths = write_report([record], stats, tmp_path / "out")
    assert all(p.exists() for p in paths.values())


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"
)
def test_page_renders_in_headless_chromium(sampled_report, tmp_path):
    shot = tmp_path / "page.png"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1000,800",
        (sampled_report / "report.html").resolve().as_uri(),
    ]
    subprocess.run(command, check=True, timeout=120, capture_output=True)
    with Image.open(shot) as img:
        rgb = img.convert("RGB")
        assert rgb.size == (1000, 800)
        colours = rgb.getcolors(maxcolors=1 << 20)
        assert colours is None or len(colours) > 50  # text, panels, gradient: not a blank page
        pixels = np.asarray(rgb).reshape(-1, 3).astype(int)
        r, g, b = pixels.T
        # the legend's dependency gradient reaches the dark red end of the colour scale
        assert ((r > 180) & (g < 90) & (b < 70)).any()
        assert (pixels == 255).all(axis=1).mean() < 0.9
