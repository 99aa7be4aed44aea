"""The README's "Train on your own data": a parquet file and a model folder to a trained, evaluated
and analysed model, with the options that must agree (template, system prompt, pixel limits)
agreeing by default; one spelling per option across the commands."""

from __future__ import annotations

import json

import pytest

from vppo.cli import main as vppo_main
from vppo.data.settings import read_prompt_settings, resolve_prompt_settings
from vppo.demo import default_checkpoint


def test_demo_checkpoint_carries_its_prompt_settings():
    settings = resolve_prompt_settings(default_checkpoint())
    assert (
        settings.template,
        settings.system_prompt,
        settings.min_pixels,
        settings.max_pixels,
    ) == ("plain", None, 3136, 3136)
    assert (
        resolve_prompt_settings(default_checkpoint(), template="vppo_math").template == "vppo_math"
    )
    # without a recorded file: one default for every command
    plain = resolve_prompt_settings(None)
    assert (plain.template, plain.system_prompt, plain.min_pixels, plain.max_pixels) == (
        "vppo_math",
        None,
        1024,
        589824,
    )


def test_every_command_takes_both_spellings():
    from vppo.analysis.cli import build_parser as analyze_parser
    from vppo.compare import build_parser as compare_parser
    from vppo.demo import build_parser as demo_parser
    from vppo.evaluation.cli import build_parser as eval_parser
    from vppo.trainer.cli import build_parser as train_parser

    for spelling in ("--prompt-template", "--prompt_template", "--template"):
        assert eval_parser().parse_args([spelling, "plain"]).template == "plain"
        args = analyze_parser().parse_args(["--model", "m", "--dataset", "d", spelling, "plain"])
        assert args.prompt_template == "plain"
    for spelling in ("--output-dir", "--output_dir"):
        assert eval_parser().parse_args([spelling, "o"]).output_dir == "o"
        assert demo_parser().parse_args([spelling, "o"]).output_dir == "o"
        assert compare_parser().parse_args([spelling, "o"]).output_dir == "o"
    assert eval_parser().parse_args(["--max_pixels", "9"]).max_pixels == 9
    train = train_parser()
    for spelling in ("--prompt-template", "--prompt_template", "--output-dir", "--output_dir"):
        assert spelling in train._option_string_actions


@pytest.mark.slow
def test_train_evaluate_and_analyse_your_own_parquet(tmp_path, capsys):
    from vppo.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(16, split="train", seed=0).to_parquet(tmp_path / "train.parquet")
    make_synthetic_dataset(4, split="validation", seed=1).to_parquet(tmp_path / "test.parquet")
    run = tmp_path / "run"
    # default options: only the model, the data, the output folder and a short run
    assert (
        vppo_main(
            [
                "train",
                "--model_name_or_path",
                str(default_checkpoint()),
                "--dataset_name",
                str(tmp_path / "train.parquet"),
                "--output_dir",
                str(run),
                "--max_steps",
                "2",
                "--num_generations",
                "4",
                "--per_device_train_batch_size",
                "8",
                "--logging_steps",
                "1",
            ]
        )
        == 0
    )
    history = json.loads((run / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    rewards = [entry["reward"] for entry in history if "reward" in entry]
    assert rewards and rewards[0] > 0  # the demo model's own prompt layout and image size
    assert read_prompt_settings(run)[0] == {
        "template": "plain",
        "system_prompt": None,
        "min_pixels": 3136,
        "max_pixels": 3136,
    }
    # an intermediate checkpoint is prompted as training did, too
    assert read_prompt_settings(run / "checkpoint-2")[0] == read_prompt_settings(run)[0]
    capsys.readouterr()
    # --benchmark-path alone evaluates just that benchmark, prompted as in training
    assert (
        vppo_main(
            [
                "eval",
                "--model",
                str(run),
                "--benchmark-path",
                f"mine={tmp_path / 'test.parquet'}",
                "-k",
                "2",
                "--max-new-tokens",
                "48",
                "--output-dir",
                str(tmp_path / "eval"),
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "template plain" in out and "pixels 3136-3136" in out
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert "mine" in json.dumps(results) and "geo3k" not in json.dumps(results)
    assert (
        vppo_main(
            [
                "analyze",
                "--model",
                str(run),
                "--dataset",
                str(tmp_path / "test.parquet"),
                "--samples",
                "2",
                "--max-new-tokens",
                "48",
                "--output-dir",
                str(tmp_path / "analysis"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (tmp_path / "analysis" / "report.html").is_file()
