"""The bad-input matrix of `vppo eval`, `vppo analyze` and `vppo plan` (`vppo train`'s is in
test_train_bad_input.py): every case ends with exit code 2 and one line, the last one said, that
names the file, row or field, with no traceback; nothing on disk changes (an earlier evaluation's
cache and results, an earlier report, the inputs) and no partial output is written.

Cases a command handles by doing the right thing instead (an evaluation question whose image is a
folder or a device is skipped, with the reason, as every unreadable question is) are in the same
matrix with what they say."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from vppo.cli import main as vppo_main

SMALL_IMAGES = ["--min-pixels", "3136", "--max-pixels", "3136"]


class _NotATensor:
    """A pickled object that torch.load(weights_only=True) refuses to build."""


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny Qwen2.5-VL folder, and a copy whose only weights are a pickle holding more than tensors."""
    import torch

    from vppo.models import build_tiny_vlm

    root = tmp_path_factory.mktemp("models")
    model, _ = build_tiny_vlm("qwen2_5_vl", save_dir=root / "tiny", seed=0)
    pickled = root / "pickled"
    shutil.copytree(root / "tiny", pickled)
    (pickled / "model.safetensors").unlink()
    torch.save({"state": model.state_dict(), "extra": _NotATensor()}, pickled / "pytorch_model.bin")
    return {"tiny": root / "tiny", "pickled": pickled}


@pytest.fixture(scope="module")
def earlier_evaluation(models, tmp_path_factory) -> Path:
    """The output folder of a finished `vppo eval` of benchmark 'mine' (2 questions, k=1): its cache,
    results and samples are what a failed rerun into the same folder must leave as they are."""
    root = tmp_path_factory.mktemp("earlier")
    data = _write_rows(root, 2)
    out = root / "eval"
    assert (
        vppo_main(
            [
                "eval",
                "--model",
                str(models["tiny"]),
                "--benchmark-path",
                f"mine={data}",
                "--output-dir",
                str(out),
                *EVAL_FAST,
            ]
        )
        == 0
    )
    assert (out / "results.json").is_file() and (out / "cache" / "mine.jsonl").is_file()
    return out


def _write_rows(folder: Path, n: int = 2, name: str = "rows.jsonl") -> Path:
    for i in range(n):
        Image.new("RGB", (56, 56), (40 * i, 120, 200)).save(folder / f"img{i}.png")
    rows = [
        {
            "images": [f"img{i}.png"],
            "problem": f"<image>How many shapes are there {i}?",
            "answer": str(i),
        }
        for i in range(n)
    ]
    path = folder / name
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def break_rows_file(path: Path, kind: str, line: int = 1) -> Path:
    """Break a JSON Lines file of rows as `kind` says ('non_utf8' or 'jsonl_trailing_comma' at 0-based
    `line`; 'json_list_trailing_comma' rewrites it as a JSON list); returns the file holding the rows."""
    if kind == "non_utf8":
        lines = path.read_bytes().split(b"\n")
        lines[line] = lines[line].replace(b"How", b"H\xffow")
        path.write_bytes(b"\n".join(lines))
    elif kind == "jsonl_trailing_comma":
        lines = path.read_text().splitlines()
        lines[line] = lines[line][:-1] + ",}"
        path.write_text("\n".join(lines))
    elif kind == "json_list_trailing_comma":
        rows = [json.loads(text) for text in path.read_text().splitlines()]
        path.unlink()
        path = path.with_suffix(".json")
        path.write_text(json.dumps(rows, indent=1)[:-2] + ",\n]")
    else:
        raise AssertionError(kind)
    return path


def with_image(path: Path, value: str) -> Path:
    """`path` (JSONL rows) with row 1's image replaced by `value`."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["images"] = [value]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def _bad_file(tmp_path: Path, kind: str) -> Path:
    """A data file of two rows (images next to it), broken as `kind` says."""
    path = _write_rows(tmp_path)
    if kind in ("non_utf8", "jsonl_trailing_comma", "json_list_trailing_comma"):
        path = break_rows_file(path, kind)
    elif kind == "empty":
        path.write_text("")
    elif kind == "image_is_a_folder":
        (tmp_path / "pictures").mkdir()
        with_image(path, "pictures")
    elif kind == "image_is_a_device":
        with_image(path, "/dev/zero")
    elif kind == "missing_image":
        (tmp_path / "img1.png").unlink()
    elif kind == "not_an_image":
        (tmp_path / "img1.png").write_bytes(b"not an image")
    elif kind == "sharegpt":
        path.write_text(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": "<image>How many?"},
                        {"role": "assistant", "content": "1"},
                    ],
                    "images": ["img0.png"],
                }
            )
        )
    else:
        raise AssertionError(kind)
    return path


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for a folder)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
        if not p.is_symlink() and (p.is_file() or p.is_dir())
    }


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = vppo_main(argv)
    except SystemExit as stop:  # argparse's one line
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line(
    prefix: str, code: int, out: str, err: str, expected: str, *, done: str
) -> str:
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    lines = [line for line in err.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, err
    assert err.strip().splitlines()[-1] == lines[0], err  # the last thing said
    assert re.search(expected, lines[0]), lines[0]
    assert done not in out, out  # no table, no report: no partial output
    return lines[0]


# ------------------------------------------------------------------------------------------ vppo eval
EVAL_FAST = [
    "--backend",
    "transformers",
    "--device",
    "cpu",
    "-k",
    "1",
    "--max-new-tokens",
    "4",
    "--no-progress",
    *SMALL_IMAGES,
]

# case -> (argv after `vppo eval`, the last line's pattern); {model}, {pickled}, {text_only}, {out}, {file}
# and {tmp} are filled in; {file:KIND} is a data file broken as _bad_file's KIND.
EVAL_CASES = {
    "missing_model": (
        ["--model", "{tmp}/nowhere", "--benchmark-path", "mine={file:}"],
        r"^vppo eval: model directory '.*nowhere' does not exist\.$",
    ),
    "model_path_is_a_file": (
        ["--model", "{file:}", "--benchmark-path", "mine={file:}"],
        r"^vppo eval: model path '.*rows\.jsonl' is a file, expected a model directory\.$",
    ),
    "model_without_config": (
        ["--model", "{tmp}", "--benchmark-path", "mine={file:}"],
        r"^vppo eval: model directory '.*' has no config\.json\.$",
    ),
    "text_only_model": (
        ["--model", "{text_only}", "--benchmark-path", "mine={file:}"],
        r"^vppo eval: model .*text_model is not a vision-language model \(model_type 'qwen2'\)",
    ),
    "pickle_only_model": (
        ["--model", "{pickled}", "--benchmark-path", "mine={file:}"],
        r"^vppo eval: model .*pickled: its pickle weights \(pytorch_model\*\.bin\) hold objects "
        r"other than tensors, which are never unpickled here .*convert the weights to safetensors",
    ),
    "missing_benchmark_file": (
        ["--model", "{model}", "--benchmark-path", "mine={tmp}/nothing.jsonl"],
        r"^vppo eval: benchmark path '.*nothing\.jsonl' is neither an existing file or folder "
        r"nor a Hub name\.$",
    ),
    "non_utf8_benchmark_file": (
        ["--model", "{model}", "--benchmark-path", "mine={file:non_utf8}"],
        r"^vppo eval: could not read .*rows\.jsonl: line 2 is not UTF-8 \(byte 0xff\); save "
        r"the file as UTF-8\.$",
    ),
    "jsonl_trailing_comma": (
        ["--model", "{model}", "--benchmark-path", "mine={file:jsonl_trailing_comma}"],
        r"^vppo eval: could not read .*rows\.jsonl: line 2 is not one JSON object \(Expecting "
        r"property name .*: a trailing comma at column \d+; JSON allows no comma before a closing",
    ),
    "json_list_trailing_comma": (
        ["--model", "{model}", "--benchmark-path", "mine={file:json_list_trailing_comma}"],
        r"^vppo eval: could not read .*rows\.json: line 15 is not valid JSON \(a trailing "
        r"comma at column 3; JSON allows no comma before a closing \] or \}\)\.$",
    ),
    "empty_benchmark_file": (
        ["--model", "{model}", "--benchmark-path", "mine={file:empty}"],
        r"^vppo eval: could not read .*rows\.jsonl: the file is empty\.$",
    ),
    "unknown_benchmark": (
        ["--model", "{model}", "--benchmarks", "no_such_bench"],
        r"^vppo eval: unknown benchmark 'no_such_bench': choose from mathverse, .* or give its "
        r"file with --benchmark-path NAME=PATH\.$",
    ),
    "no_sharegpt_file_in_data_dir": (
        ["--model", "{model}", "--benchmarks", "geo3k", "--data-dir", "{tmp}"],
        r"^vppo eval: no ShareGPT file for geo3k under .* \(looked for "
        r"hiyouga_geometry3k as \.json/\.jsonl/\.parquet in",
    ),
    "benchmark_path_without_name": (
        ["--model", "{model}", "--benchmark-path", "{file:}"],
        r"^vppo eval: --benchmark-path '.*rows\.jsonl' must look like NAME=PATH\.$",
    ),
    "unknown_compare_to": (
        ["--model", "{model}", "--benchmark-path", "mine={file:}", "--compare-to", "GPT-5"],
        r"^vppo eval: --compare-to 'GPT-5' is not a reference row; choose one of: "
        r"Qwen2\.5-VL-7B, ",
    ),
    "limit_zero": (
        ["--model", "{model}", "--benchmark-path", "mine={file:}", "--limit", "0"],
        r"^vppo eval: --limit must be a positive number of questions, got 0\.$",
    ),
    "num_samples_zero": (
        ["--model", "{model}", "--benchmark-path", "mine={file:}", "-k", "0"],
        r"^vppo eval: num_samples \(k\) must be >= 1, got 0\.$",
    ),
    "not_an_integer": (
        ["--model", "{model}", "--benchmark-path", "mine={file:}", "--limit", "ten"],
        r"^vppo eval: argument --limit: invalid int value: 'ten' \(see `vppo eval --help`\)\.$",
    ),
    "unknown_choice": (
        ["--model", "{model}", "--benchmark-path", "mine={file:}", "--grader", "exact"],
        r"^vppo eval: argument --grader: invalid choice: 'exact'",
    ),
    "no_model": (["--benchmark-path", "mine={file:}"], r"^vppo eval: --model is required\.$"),
    "unknown_template": (
        ["--model", "{model}", "--benchmark-path", "mine={file:}", "--prompt-template", "fancy"],
        r"^vppo eval: prompt template 'fancy' is not a built-in template",
    ),
    "output_dir_is_a_file": (
        ["--model", "{model}", "--benchmark-path", "mine={file:}", "--output-dir", "{file:}"],
        r"^vppo eval: --output-dir .*rows\.jsonl: .*rows\.jsonl is a file, not a folder\.$",
    ),
    # the right thing instead: the question is skipped with its reason (exit 0), as every unreadable one
    "image_is_a_folder": (
        ["--model", "{model}", "--benchmark-path", "mine={file:image_is_a_folder}"],
        r"^\[mine\] skipped 1: row 1, field 'mine images' names a folder, not an image file: "
        r".*pictures\.$",
    ),
    "image_is_a_device": (
        ["--model", "{model}", "--benchmark-path", "mine={file:image_is_a_device}"],
        r"^\[mine\] skipped 1: row 1, field 'mine images' names /dev/zero, which is not a "
        r"regular file \(a device or a pipe\)\.$",
    ),
}
EVAL_SKIPS = {"image_is_a_folder", "image_is_a_device"}


def _fill(argv: list[str], tmp_path: Path, **paths: Path) -> list[str]:
    files: dict[str, Path] = {}

    def file(kind: str) -> str:
        if kind not in files:
            folder = tmp_path / f"data_{kind or 'good'}"
            folder.mkdir()
            files[kind] = _bad_file(folder, kind) if kind else _write_rows(folder)
        return str(files[kind])

    out = []
    for arg in argv:
        arg = re.sub(r"\{file:(\w*)\}", lambda m: file(m.group(1)), arg)
        out.append(arg.format(tmp=tmp_path, **{k: str(v) for k, v in paths.items()}))
    return out


@pytest.mark.parametrize("case", sorted(EVAL_CASES))
def test_vppo_eval_bad_input(case, tmp_path, capsys, models, earlier_evaluation, text_only_model):
    argv, expected = EVAL_CASES[case]
    prior = tmp_path / "prior"
    shutil.copytree(earlier_evaluation, prior)
    argv = _fill(
        argv, tmp_path, model=models["tiny"], pickled=models["pickled"], text_only=text_only_model
    )
    if case in EVAL_SKIPS:
        out_dir = tmp_path / "fresh"
        code, out, err = _run(["eval", *EVAL_FAST, *argv, "--output-dir", str(out_dir)], capsys)
        assert code == 0 and "Traceback" not in err, err
        [line] = [x for x in out.splitlines() if x.startswith("[mine] skipped")]
        assert re.search(expected, line), line
        result = json.loads((out_dir / "results.json").read_text())["benchmarks"]["mine"]
        assert (result["num_questions"], result["num_skipped"], result["generated_this_run"]) == (
            1,
            1,
            1,
        )
        return
    if "--output-dir" not in argv:
        argv += ["--output-dir", str(prior)]  # a rerun into an earlier evaluation's folder
    before = _snapshot(tmp_path)
    code, out, err = _run(["eval", *EVAL_FAST, *argv], capsys)
    _assert_one_line("vppo eval:", code, out, err, expected, done="results:")
    assert (
        _snapshot(tmp_path) == before
    )  # the earlier cache, results and samples, and the inputs, as they were


# --------------------------------------------------------------------------------------- vppo analyze
ANALYZE_FAST = ["--samples", "2", "--max-new-tokens", "4", "--no-progress", *SMALL_IMAGES]

ANALYZE_CASES = {
    "missing_model": (
        ["--model", "{tmp}/nowhere", "--dataset", "{file:}"],
        r"^vppo analyze: model directory '.*nowhere' does not exist\.$",
    ),
    "text_only_model": (
        ["--model", "{text_only}", "--dataset", "{file:}"],
        r"^vppo analyze: model .*text_model is not a vision-language model",
    ),
    "pickle_only_model": (
        ["--model", "{pickled}", "--dataset", "{file:}"],
        r"^vppo analyze: model .*pickled: its pickle weights \(pytorch_model\*\.bin\) hold "
        r"objects other than tensors, which are never unpickled here",
    ),
    "missing_dataset": (
        ["--model", "{model}", "--dataset", "{tmp}/nothing.jsonl"],
        r"nothing\.jsonl",
    ),
    "non_utf8_dataset": (
        ["--model", "{model}", "--dataset", "{file:non_utf8}"],
        r"^vppo analyze: could not read data file .*rows\.jsonl: line 2 is not UTF-8 \(byte "
        r"0xff\); save the file as UTF-8\.$",
    ),
    "jsonl_trailing_comma": (
        ["--model", "{model}", "--dataset", "{file:jsonl_trailing_comma}"],
        r"^vppo analyze: could not read data file .*rows\.jsonl: line 2 is not one JSON object "
        r"\(.*: a trailing comma at column \d+;",
    ),
    "json_list_trailing_comma": (
        ["--model", "{model}", "--dataset", "{file:json_list_trailing_comma}"],
        r"^vppo analyze: could not read data file .*rows\.json: line 15 is not valid JSON \(a "
        r"trailing comma at column 3;",
    ),
    "empty_dataset": (
        ["--model", "{model}", "--dataset", "{file:empty}"],
        r"^vppo analyze: could not read data file .*rows\.jsonl: the file is empty\.$",
    ),
    "image_is_a_folder": (
        ["--model", "{model}", "--dataset", "{file:image_is_a_folder}"],
        r"^vppo analyze: row 1 of .*rows\.jsonl, field 'images', image 0 names a folder, not an "
        r"image file: .*pictures\.$",
    ),
    "image_is_a_device": (
        ["--model", "{model}", "--dataset", "{file:image_is_a_device}"],
        r"^vppo analyze: row 1 of .*rows\.jsonl, field 'images', image 0 names /dev/zero, which "
        r"is not a regular file \(a device or a pipe\)\.$",
    ),
    "missing_image": (
        ["--model", "{model}", "--dataset", "{file:missing_image}"],
        r"row 1 .*img1\.png",
    ),
    "not_an_image": (
        ["--model", "{model}", "--dataset", "{file:not_an_image}"],
        r"row 1 .*img1\.png",
    ),
    "missing_column": (
        ["--model", "{model}", "--dataset", "{file:}", "--answer-column", "solution"],
        r"^vppo analyze: answer column 'solution' not found in .*rows\.jsonl",
    ),
    "sharegpt_dataset": (
        ["--model", "{model}", "--dataset", "{file:sharegpt}"],
        r"^vppo analyze: .*rows\.jsonl is in ShareGPT form \(chat turns\), which --dataset does not "
        r"read; analyse it as a benchmark: --benchmark NAME --benchmark-path .*rows\.jsonl\.$",
    ),
    "unknown_benchmark": (
        ["--model", "{model}", "--benchmark", "no_such_bench"],
        r"^vppo analyze: unknown benchmark 'no_such_bench'",
    ),
    "non_utf8_benchmark_file": (
        ["--model", "{model}", "--benchmark", "mine", "--benchmark-path", "{file:non_utf8}"],
        r"^vppo analyze: could not read .*rows\.jsonl: line 2 is not UTF-8 \(byte 0xff\)",
    ),
    "benchmark_image_is_a_device": (
        [
            "--model",
            "{model}",
            "--benchmark",
            "mine",
            "--benchmark-path",
            "{file:image_is_a_device}",
        ],
        r"^vppo analyze: row 1, field 'mine images' names /dev/zero, which is not a "
        r"regular file",
    ),
    "responses_not_utf8": (
        ["--model", "{model}", "--dataset", "{file:}", "--responses", "{tmp}/bad_utf8.jsonl"],
        r"^vppo analyze: responses file .*bad_utf8\.jsonl: line 2 is not UTF-8 \(byte 0xff\)",
    ),
    "responses_trailing_comma": (
        ["--model", "{model}", "--dataset", "{file:}", "--responses", "{tmp}/comma.jsonl"],
        r"^vppo analyze: line 1 of .*comma\.jsonl is not valid JSON \(Expecting property "
        r"name .* at column 19: a trailing comma at column 18;",
    ),
    "responses_without_response": (
        ["--model", "{model}", "--dataset", "{file:}", "--responses", "{tmp}/no_response.jsonl"],
        r"^vppo analyze: line 1 of .*no_response\.jsonl: field 'response' must be a "
        r"string\.$",
    ),
    "responses_beyond_the_rows": (
        ["--model", "{model}", "--dataset", "{file:}", "--responses", "{tmp}/beyond.jsonl"],
        r"^vppo analyze: responses file .*beyond\.jsonl refers to row 5 but .* has 2 rows",
    ),
    "responses_missing": (
        ["--model", "{model}", "--dataset", "{file:}", "--responses", "{tmp}/none.jsonl"],
        r"^vppo analyze: responses file not found: .*none\.jsonl\.$",
    ),
    "samples_zero": (
        ["--model", "{model}", "--dataset", "{file:}", "--samples", "0"],
        r"^vppo analyze: --samples must be a positive number of prompts, got 0\.$",
    ),
    "ratio_out_of_range": (
        ["--model", "{model}", "--dataset", "{file:}", "--ratio", "1.5"],
        r"^vppo analyze: --ratio must be in \(0, 1\], got 1\.5\.$",
    ),
    "not_an_integer": (
        ["--model", "{model}", "--dataset", "{file:}", "--samples", "two"],
        r"^vppo analyze: argument --samples: invalid int value: 'two' \(see `vppo analyze --help`\)",
    ),
    "unknown_choice": (
        ["--model", "{model}", "--dataset", "{file:}", "--estimator", "l2"],
        r"^vppo analyze: argument --estimator: invalid choice: 'l2'",
    ),
    "no_data_source": (
        ["--model", "{model}"],
        r"^vppo analyze: one of the arguments --dataset --benchmark is required",
    ),
    "output_dir_is_a_file": (
        ["--model", "{model}", "--dataset", "{file:}", "--output-dir", "{file:}"],
        r"^vppo analyze: --output-dir .*rows\.jsonl: .*rows\.jsonl is a file, not a folder\.$",
    ),
}


@pytest.mark.parametrize("case", sorted(ANALYZE_CASES))
def test_vppo_analyze_bad_input(case, tmp_path, capsys, models, text_only_model):
    argv, expected = ANALYZE_CASES[case]
    (tmp_path / "bad_utf8.jsonl").write_bytes(b'{"response": "ok"}\n{"response": "\xff"}\n')
    (tmp_path / "comma.jsonl").write_text('{"response": "ok",}\n')
    (tmp_path / "no_response.jsonl").write_text('{"row": 0}\n')
    (tmp_path / "beyond.jsonl").write_text('{"row": 5, "response": "ok"}\n')
    report = tmp_path / "report"  # an earlier report, which a failed run must leave as it is
    report.mkdir()
    (report / "statistics.json").write_text('{"earlier": true}')
    argv = _fill(
        argv, tmp_path, model=models["tiny"], pickled=models["pickled"], text_only=text_only_model
    )
    if "--output-dir" not in argv:
        argv += ["--output-dir", str(report)]
    before = _snapshot(tmp_path)
    code, out, err = _run(["analyze", *ANALYZE_FAST, *argv], capsys)
    _assert_one_line("vppo analyze:", code, out, err, expected, done="report:")
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------ vppo plan
def _recipe(tmp_path: Path, content: str | bytes, name: str = "recipe.yaml") -> str:
    from vppo.trainer.cli import recipe_path

    path = tmp_path / name
    if isinstance(content, str) and content.startswith("+"):  # a field over the 7B recipe
        content = f"base: {recipe_path('qwen2_5_vl_7b_vppo')}\n{content[1:]}\n"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


SEVEN_B = ["--config", "qwen2_5_vl_7b_vppo", "--gpus", "8"]

# case -> (argv after `vppo plan`, or a callable of tmp_path giving it; the line's pattern)
PLAN_CASES = {
    "recipe_bad_yaml": (
        lambda t: ["--config", _recipe(t, "learning_rate: 1e-6\n  bad indent: [\n"), "--gpus", "8"],
        r"^vppo plan: --config: recipe .*recipe\.yaml is not valid YAML at line 2, column 13: "
        r"mapping values are not allowed here; fix the YAML syntax there\.$",
    ),
    "recipe_unsafe_tag": (
        lambda t: [
            "--config",
            _recipe(t, "x: !!python/object/apply:os.system ['echo hi']\n"),
            "--gpus",
            "8",
        ],
        r"^vppo plan: --config: recipe .*recipe\.yaml is not valid YAML at line 1, column 4: .*; "
        r"recipes hold plain values only \(no !!python tags\)\.$",
    ),
    "recipe_binary": (
        lambda t: ["--config", _recipe(t, b"\x89PNG\r\n\x1a\n\x00\xff"), "--gpus", "8"],
        r"^vppo plan: --config: recipe .*recipe\.yaml is not a UTF-8 text file \(byte \d+\); give a "
        r"YAML file of field: value lines\.$",
    ),
    "recipe_not_a_mapping": (
        lambda t: ["--config", _recipe(t, "- a\n- b\n"), "--gpus", "8"],
        r"^vppo plan: --config: recipe .*recipe\.yaml must be a mapping of field: value\.$",
    ),
    "unknown_recipe": (
        ["--config", "no_such_recipe", "--gpus", "8"],
        r"^vppo plan: --config: no recipe file 'no_such_recipe'; built-in recipes are ",
    ),
    "missing_base_recipe": (
        lambda t: ["--config", _recipe(t, "base: elsewhere.yaml\n"), "--gpus", "8"],
        r"^vppo plan: --config: recipe .* has base: 'elsewhere\.yaml', which is neither a file next "
        r"to it nor a built-in recipe; built-in recipes are ",
    ),
    "wrong_type_integer": (
        lambda t: ["--config", _recipe(t, "+per_device_train_batch_size: four"), "--gpus", "8"],
        r"^vppo plan: per_device_train_batch_size must be an integer, got 'four'\.$",
    ),
    "wrong_type_list": (
        lambda t: ["--config", _recipe(t, "+max_pixels: [1, 2]"), "--gpus", "8"],
        r"^vppo plan: max_pixels must be an integer, got \[1, 2\]\.$",
    ),
    "wrong_type_number": (
        lambda t: ["--config", _recipe(t, "+vllm_gpu_memory_utilization: high"), "--gpus", "8"],
        r"^vppo plan: vllm_gpu_memory_utilization must be a number, got 'high'\.$",
    ),
    "wrong_type_boolean": (
        lambda t: ["--config", _recipe(t, "+bf16: maybe"), "--gpus", "8"],
        r"^vppo plan: bf16 must be true or false, got 'maybe'\.$",
    ),
    "negative_integer": (
        lambda t: ["--config", _recipe(t, "+per_device_train_batch_size: -4"), "--gpus", "8"],
        r"^vppo plan: per_device_train_batch_size must be a positive integer, got -4\.$",
    ),
    "fraction_out_of_range": (
        lambda t: ["--config", _recipe(t, "+vllm_gpu_memory_utilization: 1.5"), "--gpus", "8"],
        r"^vppo plan: vllm_gpu_memory_utilization must be a fraction in \(0, 1\], got 1\.5\.$",
    ),
    "gpus_zero": (
        ["--config", "qwen2_5_vl_7b_vppo", "--gpus", "0"],
        r"^vppo plan: --gpus must be a positive number of GPUs, got 0\.$",
    ),
    "gpus_not_an_integer": (
        ["--config", "qwen2_5_vl_7b_vppo", "--gpus", "eight"],
        r"^vppo plan: argument --gpus: invalid int value: 'eight' \(see `vppo plan --help`\)\.$",
    ),
    "nodes_not_dividing": (
        [*SEVEN_B, "--nodes", "3"],
        r"^vppo plan: --nodes must be positive and divide --gpus \(8\), got 3\.$",
    ),
    "gpu_memory_nan": (
        [*SEVEN_B, "--gpu-memory-gb", "nan"],
        r"^vppo plan: --gpu-memory-gb must be a positive number, got nan\.$",
    ),
    "no_config": (["--gpus", "8"], r"^vppo plan: the following arguments are required: --config"),
    "unknown_accelerate_config": (
        [*SEVEN_B, "--accelerate-config", "zero9"],
        r"^vppo plan: --accelerate-config: no file 'zero9'; shipped configs are ",
    ),
    "accelerate_config_bad_yaml": (
        lambda t: [*SEVEN_B, "--accelerate-config", _recipe(t, "a: [\n", "acc.yaml")],
        r"^vppo plan: --accelerate-config .*acc\.yaml is not valid YAML at line 2, "
        r"column 1: ",
    ),
    "accelerate_config_binary": (
        lambda t: [*SEVEN_B, "--accelerate-config", _recipe(t, b"\x00\xff", "acc.yaml")],
        r"^vppo plan: --accelerate-config .*acc\.yaml is not a UTF-8 text file \(byte 1\)",
    ),
    "accelerate_config_not_a_mapping": (
        lambda t: [*SEVEN_B, "--accelerate-config", _recipe(t, "- a\n", "acc.yaml")],
        r"^vppo plan: --accelerate-config .*acc\.yaml must be a mapping of field: "
        r"value\.$",
    ),
    "accelerate_config_wrong_type": (
        lambda t: [
            *SEVEN_B,
            "--accelerate-config",
            _recipe(
                t,
                "distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: three\n",
                "acc.yaml",
            ),
        ],
        r"^vppo plan: --accelerate-config .*acc\.yaml: zero_stage must be an integer, got 'three'\.$",
    ),
    "model_missing": (
        [*SEVEN_B, "--model", "/nowhere/model"],
        r"^vppo plan: model '/nowhere/model': neither a built-in model .* nor a folder with a "
        r"config\.json; pass --model PATH\.$",
    ),
    "model_config_not_json": (
        lambda t: [*SEVEN_B, "--model", _model_config(t, b"{not json")],
        r"^vppo plan: .*config\.json: line 1 is not valid JSON \(Expecting property name "
        r"enclosed in double quotes at column 2\)\.$",
    ),
    "model_config_not_utf8": (
        lambda t: [*SEVEN_B, "--model", _model_config(t, b'{"model_type": "\xff"}')],
        r"^vppo plan: .*config\.json: line 1 is not UTF-8 \(byte 0xff\); save the file as "
        r"UTF-8\.$",
    ),
    "model_of_unknown_architecture": (
        lambda t: [*SEVEN_B, "--model", _model_config(t, b'{"model_type": "llama"}')],
        r"^vppo plan: .*config\.json: model_type 'llama' is not an architecture vppo "
        r"plan knows",
    ),
    "tiny_recipe": (
        ["--config", "tiny_vppo", "--gpus", "1"],
        r"^vppo plan: model 'tiny:qwen2_5_vl': neither",
    ),
}


def _model_config(tmp_path: Path, content: bytes) -> str:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_bytes(content)
    return str(folder)


@pytest.mark.parametrize("case", sorted(PLAN_CASES))
def test_vppo_plan_bad_input(case, tmp_path, capsys):
    argv, expected = PLAN_CASES[case]
    argv = argv(tmp_path) if callable(argv) else argv
    before = _snapshot(tmp_path)
    code, out, err = _run(["plan", *argv], capsys)
    _assert_one_line("vppo plan:", code, out, err, expected, done="peak per GPU")
    assert out == "" and len(err.strip().splitlines()) == 1, (
        out,
        err,
    )  # no table at all; only the line
    assert _snapshot(tmp_path) == before
