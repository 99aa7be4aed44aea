"""Bad input ends in one line that names the file, line, row or field (issue 19's cases)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from vppo.cli import main as vppo_main
from vppo.data import load_training_dataset
from vppo.data.images import to_rgb_image


def _rows(tmp_path, n=2):
    Image.new("RGB", (56, 56), (10, 200, 30)).save(tmp_path / "img.png")
    return [
        {"images": ["img.png"], "problem": f"<image>What is {i}?", "answer": str(i)}
        for i in range(n)
    ]


def test_a_jsonl_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(r).encode() for r in _rows(tmp_path)]
    lines[1] = lines[1].replace(b"What", b"Wh\xffat")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(
        ValueError,
        match=rf"could not read data file {path}: line 2 is not UTF-8 \(byte 0xff\); "
        "save the file as UTF-8",
    ):
        load_training_dataset(str(path))


def test_a_jsonl_line_with_a_trailing_comma_names_the_line(tmp_path):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(r) for r in _rows(tmp_path, 3)]
    lines[2] = lines[2][:-1] + ",}"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(
        ValueError, match=rf"{path}: line 3 is not one JSON object \(Expecting property name"
    ):
        load_training_dataset(str(path))


def test_a_json_list_with_a_trailing_comma_names_the_line(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(_rows(tmp_path), indent=1)[:-2] + ",\n]", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path}: line \d+ is not valid JSON \("):
        load_training_dataset(str(path))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("learning_rate: 1e-6\n  bad indent: [\n", "is not valid YAML at line 2, column"),
        ("model_name_or_path: !!python/object/apply:os.system ['echo hi']\n", "no !!python tags"),
    ],
)
def test_a_bad_recipe_file_is_one_line_naming_it(tmp_path, capsys, content, expected):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(content, encoding="utf-8")
    assert vppo_main(["train", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert (
        f"vppo train: --config: recipe {recipe} " in err
        and expected in err
        and "Traceback" not in err
    )


def test_a_binary_recipe_file_is_one_line(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    assert vppo_main(["train", "--config", str(recipe)]) == 2
    assert (
        f"vppo train: --config: recipe {recipe} is not a UTF-8 text file" in capsys.readouterr().err
    )


def test_an_image_path_that_is_a_folder_or_a_device_says_so(tmp_path):
    (tmp_path / "pictures").mkdir()
    with pytest.raises(ValueError, match=r"names a folder, not an image file: .*pictures"):
        to_rgb_image("pictures", base_dir=tmp_path, row=3, field="images")
    with pytest.raises(
        ValueError, match=r"names /dev/zero, which is not a regular file \(a device or a pipe\)"
    ):
        to_rgb_image("/dev/zero", row=3, field="images")
    with pytest.raises(FileNotFoundError, match="missing image file"):
        to_rgb_image("nowhere.png", base_dir=tmp_path, row=3, field="images")


class _NotATensor:
    """A pickled object that torch.load(weights_only=True) refuses to build."""


def test_a_model_folder_with_pickle_weights_is_one_sentence(tmp_path, capsys):
    import torch

    from vppo.models import build_tiny_vlm, load_model_and_processor

    folder = tmp_path / "model"
    model, _ = build_tiny_vlm("qwen2_5_vl", save_dir=folder)
    (folder / "model.safetensors").unlink()
    torch.save({"state": model.state_dict(), "extra": _NotATensor()}, folder / "pytorch_model.bin")
    with pytest.raises(
        ValueError,
        match=r"its pickle weights \(pytorch_model\*\.bin\) hold objects other than "
        r"tensors, which are never unpickled here",
    ):
        load_model_and_processor(folder)
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in _rows(tmp_path)), encoding="utf-8")
    assert (
        vppo_main(
            [
                "train",
                "--model_name_or_path",
                str(folder),
                "--dataset_name",
                str(data),
                "--output_dir",
                str(tmp_path / "run"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "vppo train: " in err and "never unpickled here" in err and "Traceback" not in err


def test_vppo_plan_names_a_field_of_the_wrong_type(tmp_path, capsys):
    from vppo.plan import main as plan_main
    from vppo.trainer.cli import recipe_path

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"base: {recipe_path('qwen2_5_vl_7b_vppo')}\nper_device_train_batch_size: four\n",
        encoding="utf-8",
    )
    assert plan_main(["--config", str(recipe), "--gpus", "8"]) == 2
    assert "per_device_train_batch_size must be an integer, got 'four'." in capsys.readouterr().err


def test_a_run_ends_naming_its_folder_and_its_card_names_base_and_method(tmp_path, capsys):
    from vppo.demo import default_checkpoint

    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in _rows(tmp_path, 4)), encoding="utf-8")
    run = tmp_path / "run"
    assert (
        vppo_main(
            [
                "train",
                "--config",
                "tiny_vppo",
                "--model_name_or_path",
                str(default_checkpoint()),
                "--dataset_name",
                str(data),
                "--output_dir",
                str(run),
                "--max_steps",
                "1",
                "--max_completion_length",
                "8",
            ]
        )
        == 0
    )
    assert f"vppo train: 1 step trained; the model is in {run}." in capsys.readouterr().err
    card = (run / "README.md").read_text(encoding="utf-8")
    assert "None" not in card.split("## Training procedure")[0]
    assert f"fine-tuned version of `{default_checkpoint()}`" in card
    assert "trained with VPPO (arXiv 2510.09285; token_selection=topk, token_ratio=0.4" in card


def test_a_sharegpt_file_for_training_says_which_formats_train(tmp_path):
    path = tmp_path / "chat.jsonl"
    Image.new("RGB", (56, 56), (10, 200, 30)).save(tmp_path / "img.png")
    rows = [
        {
            "messages": [
                {"role": "user", "content": "<image>What is 1?"},
                {"role": "assistant", "content": "1"},
            ],
            "images": ["img.png"],
        }
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    with pytest.raises(
        ValueError,
        match=r"is in ShareGPT form \(a 'messages' column of chat turns\), which vppo "
        r"eval reads but vppo train does not",
    ):
        load_training_dataset(str(path))


def test_each_warning_text_is_shown_once():
    import warnings

    from vppo.cli import _show_each_warning_once

    shown = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # what libraries leave behind
        warnings.showwarning = lambda message, *args, **kwargs: shown.append(str(message))
        _show_each_warning_once()
        for _ in range(3):
            warnings.warn("`old` is deprecated", FutureWarning, stacklevel=1)
            warnings.warn("`old` is deprecated", FutureWarning, stacklevel=1)  # another call site
        warnings.warn("something else", UserWarning, stacklevel=1)
    assert shown == ["`old` is deprecated", "something else"]
