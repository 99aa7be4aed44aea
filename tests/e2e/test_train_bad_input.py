"""`vppo train` on bad input: one line naming the field, row or file, exit code 2, no traceback;
Ctrl-C says what was saved; a truncated image never ends a run; nothing finished is lost."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from test_bad_input_matrix import break_rows_file, with_image

from vppo.cli import main as vppo_main

RECIPE = ["--config", "tiny_vppo"]
TINY = [
    "--max_completion_length",
    "8",
    "--per_device_train_batch_size",
    "4",
    "--num_generations",
    "2",
    "--min_pixels",
    "3136",
    "--max_pixels",
    "3136",
    "--save_steps",
    "1",
    "--max_steps",
    "1",
]


def _data(tmp_path, rows=4):
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    lines = []
    for i in range(rows):
        Image.new("RGB", (56, 56), (40 * i, 120, 200)).save(folder / f"img{i}.png")
        lines.append(
            {
                "images": [f"img{i}.png"],
                "problem": f"<image>How many shapes are there {i}?",
                "answer": str(i % 3),
            }
        )
    path = folder / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines))
    return path


class _NotATensor:
    """A pickled object that torch.load(weights_only=True) refuses to build."""


@pytest.fixture(scope="module")
def pickle_only_model(tmp_path_factory):
    """A tiny Qwen2.5-VL folder whose only weights are a pytorch_model.bin holding more than tensors."""
    import torch

    from vppo.models import build_tiny_vlm

    folder = tmp_path_factory.mktemp("pickle_model")
    model, _ = build_tiny_vlm("qwen2_5_vl", save_dir=folder)
    (folder / "model.safetensors").unlink()
    torch.save({"state": model.state_dict(), "extra": _NotATensor()}, folder / "pytorch_model.bin")
    return folder


def _break(tmp_path, case, text_only_model, pickle_only_model=None):
    """Make the bad input of `case`; returns extra argv."""
    data = _data(tmp_path, rows=1 if case == "dataset_smaller_than_one_rollout" else 4)
    out = str(tmp_path / "run")
    if case.startswith("recipe_"):
        recipe = tmp_path / "recipe.yaml"
        content = {
            "recipe_bad_yaml": "learning_rate: 1e-6\n  bad indent: [\n",
            "recipe_unsafe_tag": "model_name_or_path: !!python/object/apply:os.system ['echo hi']\n",
            "recipe_not_a_mapping": "- learning_rate\n- 1e-6\n",
        }.get(case)
        recipe.write_bytes(content.encode() if content else b"\x89PNG\r\n\x1a\n\x00\xff")
        return ["--config", str(recipe), "--dataset_name", str(data), "--output_dir", out]
    if case == "pickle_only_model":
        return [
            "--dataset_name",
            str(data),
            "--output_dir",
            out,
            "--model_name_or_path",
            str(pickle_only_model),
        ]
    if case == "non_utf8_data_file":
        break_rows_file(data, "non_utf8", line=1)
    elif case == "jsonl_trailing_comma":
        break_rows_file(data, "jsonl_trailing_comma", line=2)
    elif case == "json_list_trailing_comma":
        return ["--dataset_name", str(break_rows_file(data, case)), "--output_dir", out]
    elif case == "empty_data_file":
        data.write_text("")
    elif case == "image_is_a_folder":
        (data.parent / "pictures").mkdir()
        with_image(data, "pictures")
    elif case == "image_is_a_device":
        with_image(data, "/dev/zero")
    elif case == "image_is_a_url":
        with_image(data, "https://example.com/img1.png")
    elif case == "sharegpt_file":
        data.write_text(
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
    if case == "output_dir_is_file":
        (tmp_path / "file").write_text("x")
        return ["--dataset_name", str(data), "--output_dir", str(tmp_path / "file")]
    if case == "output_dir_not_writable":  # a folder under a file cannot be created (also as root)
        (tmp_path / "file").write_text("x")
        return ["--dataset_name", str(data), "--output_dir", str(tmp_path / "file" / "run")]
    if case == "text_only_model":
        return [
            "--dataset_name",
            str(data),
            "--output_dir",
            out,
            "--model_name_or_path",
            str(text_only_model),
        ]
    if case == "missing_model":
        return [
            "--dataset_name",
            str(data),
            "--output_dir",
            out,
            "--model_name_or_path",
            str(tmp_path / "nowhere"),
        ]
    if case in ("max_steps_negative", "max_steps_zero"):
        value = "-3" if case == "max_steps_negative" else "0"
        return ["--dataset_name", str(data), "--output_dir", out, "--max_steps", value]
    if case == "misspelt_dynamic_sampling_reward":
        return [
            "--dataset_name",
            str(data),
            "--output_dir",
            out,
            "--dynamic_sampling_reward",
            "acuracy",
        ]
    if case == "unknown_choice":
        return ["--dataset_name", str(data), "--output_dir", out, "--dependency_estimator", "l2"]
    if case == "field_out_of_range":
        return ["--dataset_name", str(data), "--output_dir", out, "--token_ratio", "0"]
    if case == "unknown_recipe":
        return ["--config", "no_such_recipe", "--output_dir", out]
    if case == "missing_data_file":
        return ["--dataset_name", str(tmp_path / "nothing.parquet"), "--output_dir", out]
    if case == "split_in_two_formats":  # train.jsonl and train.parquet: the same rows twice
        import pyarrow.json as pa_json
        import pyarrow.parquet as pq

        pq.write_table(pa_json.read_json(data), data.with_suffix(".parquet"))
        return ["--dataset_name", str(data.parent), "--output_dir", out]
    if case == "missing_image":
        (data.parent / "img1.png").unlink()
    elif case == "not_an_image":
        (data.parent / "img0.png").write_bytes(b"not an image")
    elif case == "truncated_image_full_validation":
        raw = (data.parent / "img2.png").read_bytes()
        (data.parent / "img2.png").write_bytes(raw[: len(raw) // 2])
        return ["--dataset_name", str(data), "--output_dir", out, "--validate_images", "full"]
    elif case == "placeholder_mismatch":
        data.write_text(
            json.dumps({"images": ["img1.png"], "problem": "<image> and <image>?", "answer": "1"})
        )
    elif case == "missing_column":
        return ["--dataset_name", str(data), "--output_dir", out, "--answer_column", "solution"]
    return ["--dataset_name", str(data), "--output_dir", out]


# case -> a fragment of the one line the user sees
BAD_INPUTS = {
    "output_dir_is_file": r"output_dir .*file exists and is a file, not a folder",
    "output_dir_not_writable": r"output_dir .*file/run is not writable",
    "text_only_model": r"text_model is not a vision-language model \(model_type 'qwen2'\)",
    "missing_model": r"model directory .*nowhere.* does not exist",
    "max_steps_negative": r"VPPOConfig.max_steps must be a positive number .* or -1 .*; got -3",
    "max_steps_zero": r"VPPOConfig.max_steps must be a positive number .*; got 0",
    "misspelt_dynamic_sampling_reward": r"dynamic_sampling_reward 'acuracy' is not a reward function "
    r"of this run; choose one of accuracy, total",
    "unknown_choice": r"--dependency_estimator.*invalid choice: 'l2'",
    "field_out_of_range": r"VPPOConfig.token_ratio must be in \(0, 1\], got 0",
    "unknown_recipe": r"no recipe file 'no_such_recipe'; built-in recipes are",
    "missing_data_file": r"nothing\.parquet",
    "missing_image": r"row 1 .*img1\.png",
    "not_an_image": r"img0\.png",
    "truncated_image_full_validation": r"row 2 .*img2\.png",
    "placeholder_mismatch": r"placeholder",
    "missing_column": r"solution",
    "split_in_two_formats": r"data holds split 'train' in 2 formats \(train\.jsonl and train\.parquet\)",
    # issue 19
    "non_utf8_data_file": r"could not read data file .*train\.jsonl: line 2 is not UTF-8 \(byte 0xff\); save the "
    r"file as UTF-8\.$",
    "jsonl_trailing_comma": r"could not read data file .*train\.jsonl: line 3 is not one JSON object \(Expecting "
    r"property name .*: a trailing comma at column 89; JSON allows no comma before a closing",
    "json_list_trailing_comma": r"could not read data file .*train\.json: line 29 is not valid JSON \(a trailing comma "
    r"at column 3; JSON allows no comma before a closing \] or \}\)\.$",
    "empty_data_file": r"could not read data file .*train\.jsonl: the file is empty\.$",
    "recipe_bad_yaml": r"--config: recipe .*recipe\.yaml is not valid YAML at line 2, column \d+: .*; fix the YAML "
    r"syntax there\.$",
    "recipe_unsafe_tag": r"--config: recipe .*recipe\.yaml is not valid YAML at line 1, .*; recipes hold plain "
    r"values only \(no !!python tags\)\.$",
    "recipe_binary": r"--config: recipe .*recipe\.yaml is not a UTF-8 text file \(byte \d+\)",
    "recipe_not_a_mapping": r"--config: recipe .*recipe\.yaml must be a mapping of field: value\.$",
    "image_is_a_folder": r"row 1 of .*train\.jsonl, field 'images', image 0 names a folder, not an image file: "
    r".*pictures\.$",
    "image_is_a_device": r"row 1 of .*train\.jsonl, field 'images', image 0 names /dev/zero, which is not a "
    r"regular file \(a device or a pipe\)\.$",
    "image_is_a_url": r"row 1 of .*train\.jsonl, field 'images', image 0 is a URL .*; download the image",
    "pickle_only_model": r"its pickle weights \(pytorch_model\*\.bin\) hold objects other than tensors, which are "
    r"never unpickled here .*convert the weights to safetensors",
    "sharegpt_file": r"train\.jsonl is in ShareGPT form \(a 'messages' column of chat turns\), which vppo eval "
    r"reads but vppo train does not",
    "dataset_smaller_than_one_rollout": r"train_dataset has 1 rows, fewer than one rollout needs: 2 prompts .*so "
    r"training would run 0 steps",
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_code_2(
    case, tmp_path, capsys, monkeypatch, text_only_model, request
):
    import re

    monkeypatch.delenv("VPPO_DEBUG", raising=False)
    pickled = request.getfixturevalue("pickle_only_model") if case == "pickle_only_model" else None
    extra = _break(tmp_path, case, text_only_model, pickled)
    argv = ["train", *([] if "--config" in extra else RECIPE), *TINY, *extra]
    assert vppo_main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("vppo train:")]
    assert len(lines) == 1, err
    assert re.search(BAD_INPUTS[case], lines[0]), lines[0]
    assert err.strip().splitlines()[-1] == lines[0], err  # the last thing said
    # nothing ran: no checkpoint, no model written
    assert (
        not list(tmp_path.glob("run/checkpoint-*"))
        and not (tmp_path / "run" / "model.safetensors").exists()
    )


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    argv = ["train", *RECIPE, *TINY, *_break(tmp_path, "max_steps_negative", None)]
    with pytest.raises(ValueError, match="max_steps"):
        vppo_main([*argv, "--debug"])
    monkeypatch.setenv("VPPO_DEBUG", "1")
    with pytest.raises(ValueError, match="max_steps"):
        vppo_main(argv)


def test_help_leads_with_data_and_vppo_options(capsys):
    assert vppo_main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    head = text[: text.index("all options:")]
    for flag in (
        "--config",
        "--dataset_name",
        "--max_prompt_tokens",
        "--validate_images",
        "--token_ratio",
        "--use_tas",
        "--model_name_or_path",
        "--report_to",
    ):
        assert flag in head.replace("--no_use_tas", "--use_tas")
    assert (
        head.index("--dataset_name") < head.index("--token_ratio") < head.index("--learning_rate")
    )
    # vppo's own fields first (about 400 lines with PAPO's), TRL's full list after.
    assert len(head.splitlines()) < 450 and len(text.splitlines()) > 1000


@pytest.mark.slow
def test_ctrl_c_says_what_was_saved_and_resume_loses_nothing(tmp_path, capsys, interrupt_training):
    interrupt_training(2)
    data = _data(tmp_path)
    out = tmp_path / "run"
    argv = [
        "train",
        *RECIPE,
        *TINY,
        "--dataset_name",
        str(data),
        "--output_dir",
        str(out),
        "--max_steps",
        "3",
    ]
    assert vppo_main(argv) == 130
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("vppo train:")]
    assert line == (
        f"vppo train: interrupted at step 2; saved: {out}/checkpoint-1; continue with the "
        "same command --resume_from_checkpoint last."
    )
    interrupt_training(None)
    assert vppo_main([*argv, "--resume_from_checkpoint", "last"]) == 0
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_truncated_image_during_training_is_replaced_with_a_warning(tmp_path, caplog):
    data = _data(tmp_path)
    raw = (data.parent / "img2.png").read_bytes()
    (data.parent / "img2.png").write_bytes(raw[: len(raw) // 2])  # header intact, pixels cut
    out = tmp_path / "run"
    with caplog.at_level("WARNING"):
        assert (
            vppo_main(
                [
                    "train",
                    *RECIPE,
                    *TINY,
                    "--dataset_name",
                    str(data),
                    "--output_dir",
                    str(out),
                    "--max_steps",
                    "2",
                ]
            )
            == 0
        )
    warnings = [r.getMessage() for r in caplog.records if "Replaced by row" in r.getMessage()]
    assert warnings and warnings[0].startswith("training row 2:") and "img2.png" in warnings[0]
    assert (out / "checkpoint-2").is_dir() and (out / "model.safetensors").is_file()


def test_long_prompts_are_skipped_with_a_count(tmp_path, caplog):
    from vppo.trainer.cli import build_trainer, parse

    data = _data(tmp_path)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[3]["problem"] = "<image>" + "how many shapes " * 400
    data.write_text("\n".join(json.dumps(r) for r in rows))
    script_args, config, model_args = parse(
        [
            *RECIPE,
            *TINY,
            "--dataset_name",
            str(data),
            "--output_dir",
            str(tmp_path / "run"),
            "--max_prompt_tokens",
            "64",
        ]
    )
    with caplog.at_level("WARNING"):
        trainer = build_trainer(script_args, config, model_args)
    assert len(trainer.train_dataset) == 3
    assert any(
        "Skipped 1 of 4 rows" in r.getMessage() and "prompt: 1" in r.getMessage()
        for r in caplog.records
    )
