"""vppo.data.loading: every source layout loads into TRL's VLM format; bad rows fail clearly."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import pickle

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vppo.data import TrainingDataOptions, load_template, load_training_dataset
from vppo.data.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS

INSTRUCTION = (
    "You first think through the reasoning process as an internal monologue, enclosed within "
    "<think> </think> tags. Then, provide your final answer enclosed within \\boxed{}."
)
COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "gray": (90, 90, 90)}
# keep test images at their native size unless a test is about resizing
NO_RESIZE = {"min_pixels": None, "max_pixels": None}


def _png(color="red", size=(64, 48), mode="RGB") -> bytes:
    value = COLORS[color] if mode == "RGB" else COLORS[color] + (255,) if mode == "RGBA" else 90
    buf = io.BytesIO()
    Image.new(mode, size, value).save(buf, "PNG")
    return buf.getvalue()


def _color(img: Image.Image) -> str:
    pixel = img.getpixel((img.width // 2, img.height // 2))
    return next(name for name, rgb in COLORS.items() if rgb == pixel)


def _check_common_form(ds, answers, colors):
    """Rows are TRL dicts: conversational prompt, RGB PIL images in placeholder order, str answers."""
    assert len(ds) == len(answers)
    for i, row in enumerate(ds):
        assert set(row) >= {"prompt", "images", "answer"}
        assert row["answer"] == answers[i]
        assert [_color(img) for img in row["images"]] == colors[i]
        assert all(isinstance(img, Image.Image) and img.mode == "RGB" for img in row["images"])
        user = row["prompt"][-1]
        assert user["role"] == "user"
        assert sum(part == {"type": "image"} for part in user["content"]) == len(colors[i])
        assert user["content"][-1]["text"].endswith(INSTRUCTION)
        for part in user["content"]:
            assert part in ({"type": "image"},) or set(part) == {"type", "text"}


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "hf_cache"


# ----------------------------------------------------------------------------- source layouts


def test_parquet_with_image_byte_structs(tmp_path, cache):
    # raw pyarrow parquet, no HF feature metadata: images = list<struct{bytes, path}>
    table = pa.table(
        {
            "images": [
                [{"bytes": _png("red"), "path": None}],
                [{"bytes": _png("green"), "path": None}, {"bytes": _png("blue"), "path": None}],
            ],
            "problem": ["<image>How many sides?", "Left <image> right <image>: same colour?"],
            "answer": ["4", "No"],
            "id": ["a", "b"],
        }
    )
    pq.write_table(table, tmp_path / "train.parquet")
    ds = load_training_dataset(
        tmp_path / "train.parquet", cache_dir=cache, keep_columns=["id"], **NO_RESIZE
    )
    _check_common_form(ds, ["4", "No"], [["red"], ["green", "blue"]])
    assert ds[1]["id"] == "b"
    content = ds[1]["prompt"][0]["content"]
    assert [p["type"] for p in content] == ["text", "image", "text", "image", "text"]
    assert content[0]["text"] == "Left " and content[2]["text"] == " right "
    assert ds[0]["prompt"][0]["content"][1]["text"] == "How many sides?\n\n" + INSTRUCTION


def test_hf_parquet_with_image_feature_and_single_image_column(tmp_path, cache):
    feats = datasets.Features(
        {
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answer": datasets.Value("int64"),
        }
    )
    src = datasets.Dataset.from_dict(
        {
            "image": [Image.new("RGB", (40, 40), COLORS["blue"]), Image.new("L", (40, 40), 90)],
            "question": ["<image>Which colour?", "What grey level?"],
            "answer": [1, 90],
        },
        features=feats,
    )
    src.to_parquet(tmp_path / "mmk12.parquet")
    # default image_column "images" falls back to "image"; renamed problem column; int answers
    ds = load_training_dataset(
        tmp_path / "mmk12.parquet", problem_column="question", cache_dir=cache, **NO_RESIZE
    )
    _check_common_form(ds, ["1", "90"], [["blue"], ["gray"]])


def test_jsonl_with_relative_paths_resolves_against_the_data_file(tmp_path, cache, monkeypatch):
    data = tmp_path / "data"
    (data / "imgs").mkdir(parents=True)
    (data / "imgs" / "r.png").write_bytes(_png("red"))
    (data / "imgs" / "g.png").write_bytes(_png("green"))
    rows = [
        {"problem": "<image>Q1", "answer": "\\boxed{\\frac{1}{2}}", "images": ["imgs/r.png"]},
        {"problem": "<image><image>Q2", "answer": "B", "images": ["imgs/g.png", "./imgs/r.png"]},
    ]
    (data / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths must not depend on the working directory
    ds = load_training_dataset(data / "train.jsonl", cache_dir=cache, **NO_RESIZE)
    _check_common_form(ds, ["\\frac{1}{2}", "B"], [["red"], ["green", "red"]])  # \boxed{} unwrapped
    kept = load_training_dataset(
        data / "train.jsonl", cache_dir=cache, unwrap_boxed_answer=False, **NO_RESIZE
    )
    assert kept[0]["answer"] == "\\boxed{\\frac{1}{2}}"


def test_json_list_file_and_image_dir(tmp_path, cache):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "b.png").write_bytes(_png("blue"))
    (tmp_path / "meta").mkdir()
    rows = [{"question": "<image>Q", "solution": "7", "pic": "b.png"}]
    (tmp_path / "meta" / "rows.json").write_text(json.dumps(rows))
    ds = load_training_dataset(
        tmp_path / "meta" / "rows.json",
        image_column="pic",
        problem_column="question",
        answer_column="solution",
        image_dir=tmp_path / "pics",
        cache_dir=cache,
        **NO_RESIZE,
    )
    _check_common_form(ds, ["7"], [["blue"]])
    assert ds.column_names == ["prompt", "answer", "images"]


def test_save_to_disk_dataset_dict_and_arrow_file(tmp_path, cache):
    feats = datasets.Features(
        {
            "images": datasets.List(datasets.Image()),
            "problem": datasets.Value("string"),
            "answer": datasets.Value("string"),
        }
    )

    def split(color, answer):
        return datasets.Dataset.from_dict(
            {
                "images": [[Image.new("RGB", (32, 32), COLORS[color])]],
                "problem": ["<image>Q"],
                "answer": [answer],
            },
            features=feats,
        )

    dd = datasets.DatasetDict({"train": split("red", "1"), "test": split("green", "2")})
    dd.save_to_disk(tmp_path / "dd")
    _check_common_form(
        load_training_dataset(tmp_path / "dd", split="test", **NO_RESIZE), ["2"], [["green"]]
    )
    with pytest.raises(
        ValueError, match=r"split 'validation' is not in the saved dataset .*splits: train, test"
    ):
        load_training_dataset(tmp_path / "dd", split="validation")

    split("blue", "3").save_to_disk(tmp_path / "single")
    _check_common_form(load_training_dataset(tmp_path / "single", **NO_RESIZE), ["3"], [["blue"]])
    arrow = next((tmp_path / "single").glob("*.arrow"))
    _check_common_form(
        load_training_dataset(arrow, cache_dir=cache, **NO_RESIZE), ["3"], [["blue"]]
    )


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_imagefolder_with_metadata(tmp_path, cache, fmt):
    root = tmp_path / "folder"
    (root / "train").mkdir(parents=True)
    (root / "train" / "a.png").write_bytes(_png("red", mode="RGBA"))
    (root / "train" / "b.png").write_bytes(_png("gray", mode="L"))
    rows = [("a.png", "<image>What colour?", "red"), ("b.png", "What shade?", "gray")]
    if fmt == "jsonl":
        text = "\n".join(
            json.dumps({"file_name": f, "problem": p, "answer": a}) for f, p, a in rows
        )
    else:
        text = "file_name,problem,answer\n" + "\n".join(f'{f},"{p}",{a}' for f, p, a in rows)
    (root / "train" / f"metadata.{fmt}").write_text(text + "\n")
    ds = load_training_dataset(root, cache_dir=cache, **NO_RESIZE)
    _check_common_form(ds, ["red", "gray"], [["red"], ["gray"]])
    with pytest.raises(ValueError, match="no file for split 'test'; splits found: train"):
        load_training_dataset(root, split="test", cache_dir=cache)


def test_imagefolder_with_file_names_lists(tmp_path, cache):
    (tmp_path / "x.png").write_bytes(_png("green"))
    (tmp_path / "y.png").write_bytes(_png("blue"))
    row = {"file_names": ["x.png", "y.png"], "problem": "<image> vs <image>", "answer": "A"}
    (tmp_path / "metadata.jsonl").write_text(json.dumps(row) + "\n")
    ds = load_training_dataset(tmp_path, cache_dir=cache, **NO_RESIZE)
    _check_common_form(ds, ["A"], [["green", "blue"]])


def test_folder_of_split_named_files_and_several_image_columns(tmp_path, cache):
    def write(name, color, answer):
        table = pa.table(
            {
                "image_1": [{"bytes": _png(color), "path": None}],
                "image_2": pa.array(
                    [None], type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])
                ),
                "image_3": [{"bytes": _png("gray"), "path": None}],
                "problem": ["<image> then <image>"],
                "answer": [answer],
            }
        )
        pq.write_table(table, tmp_path / name)

    write("train-00000-of-00002.parquet", "red", "1")
    write("train-00001-of-00002.parquet", "green", "2")
    write("test-00000-of-00001.parquet", "blue", "3")
    cols = ["image_1", "image_2", "image_3"]  # MMMU-style columns; nulls are skipped
    train = load_training_dataset(tmp_path, image_column=cols, cache_dir=cache, **NO_RESIZE)
    _check_common_form(train, ["1", "2"], [["red", "gray"], ["green", "gray"]])
    test = load_training_dataset(
        tmp_path, split="test", image_column=cols, cache_dir=cache, **NO_RESIZE
    )
    _check_common_form(test, ["3"], [["blue", "gray"]])


def test_folder_with_one_split_in_two_formats_is_refused(tmp_path, cache):
    """train.jsonl next to train.parquet (one table written twice) would double the data."""
    tmp_path = tmp_path / "data"  # the cache folder stays outside the data folder
    tmp_path.mkdir()
    (tmp_path / "a.png").write_bytes(_png("red"))
    rows = [{"images": ["a.png"], "problem": "<image>What colour?", "answer": "red"}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), tmp_path / "train.parquet")
    with pytest.raises(ValueError) as info:
        load_training_dataset(tmp_path, cache_dir=cache)
    assert str(info.value) == (
        f"folder {tmp_path} holds split 'train' in 2 formats (train.jsonl and train.parquet); keep "
        "one format in the folder or pass one file as the dataset."
    )
    # either file on its own, or another split in another format, is fine
    _check_common_form(
        load_training_dataset(tmp_path / "train.parquet", cache_dir=cache, **NO_RESIZE),
        ["red"],
        [["red"]],
    )
    (tmp_path / "train.parquet").rename(tmp_path / "test.parquet")
    _check_common_form(
        load_training_dataset(tmp_path, cache_dir=cache, **NO_RESIZE), ["red"], [["red"]]
    )


def test_in_memory_dataset_without_placeholders_puts_images_first():
    src = datasets.Dataset.from_dict(
        {
            "images": [
                [
                    Image.new("RGB", (56, 56), COLORS["red"]),
                    Image.new("RGB", (56, 56), COLORS["blue"]),
                ]
            ],
            "problem": ["Are these two shapes the same colour?"],
            "answer": ["no"],
        }
    )
    ds = load_training_dataset(src, system_prompt="You are a helpful assistant.", **NO_RESIZE)
    row = ds[0]
    assert row["prompt"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "You are a helpful assistant."}],
    }
    assert [p["type"] for p in row["prompt"][1]["content"]] == ["image", "image", "text"]
    assert [_color(i) for i in row["images"]] == ["red", "blue"]


def test_images_are_resized_into_the_pixel_range_when_read():
    src = datasets.Dataset.from_dict(
        {
            "images": [[Image.new("RGB", (2000, 1000))], [Image.new("RGB", (50, 20))]],
            "problem": ["<image>a", "<image>b"],
            "answer": ["1", "2"],
        }
    )
    # the recipes' range
    ds = load_training_dataset(src, min_pixels=256 * 28 * 28, max_pixels=1280 * 28 * 28)
    big, small = ds[0]["images"][0], ds[1]["images"][0]
    assert big.size == (1416, 708)
    assert 256 * 28 * 28 <= small.width * small.height <= 1280 * 28 * 28
    assert abs(small.width / small.height - 2.5) < 0.01
    # the official truncation and alpha handling are available for bit-for-bit parity
    src = datasets.Dataset.from_dict(
        {
            "images": [[Image.new("RGBA", (3, 7), (0, 0, 0, 0))]],
            "problem": ["<image>c"],
            "answer": ["3"],
        }
    )
    official_range = dict(min_pixels=256 * 28 * 28, max_pixels=1280 * 28 * 28)
    white = load_training_dataset(src, **official_range)[0]["images"][0]
    official = load_training_dataset(
        src, resize_rounding="official", alpha="drop", **official_range
    )[0]["images"][0]
    assert white.size == (294, 685) and white.getpixel((5, 5)) == (255, 255, 255)
    assert official.size == (293, 684) and official.getpixel((5, 5)) == (0, 0, 0)


def test_max_samples_is_a_seeded_subset_in_source_order():
    src = datasets.Dataset.from_dict(
        {"problem": [f"q{i}" for i in range(50)], "answer": [str(i) for i in range(50)]}
    )
    a = load_training_dataset(src, image_column=None, max_samples=10, seed=3)
    b = load_training_dataset(src, image_column=None, max_samples=10, seed=3)
    c = load_training_dataset(src, image_column=None, max_samples=10, seed=4)
    first = load_training_dataset(src, image_column=None, max_samples=10, seed=None)
    assert a["answer"] == b["answer"] != c["answer"]
    assert [int(x) for x in a["answer"]] == sorted(int(x) for x in a["answer"])
    assert first["answer"] == [str(i) for i in range(10)]
    assert load_training_dataset(src, image_column=None, max_samples=500)["answer"] == src["answer"]
    assert a[0]["images"] == []


def test_output_works_as_a_trl_dataset():
    import torch
    from trl.data_utils import is_conversational, prepare_multimodal_messages

    src = datasets.Dataset.from_dict(
        {
            "images": [[Image.new("RGBA", (30, 30), (0, 0, 0, 0))], [Image.new("P", (30, 30))] * 2],
            "problem": ["<image>one", "<image>two<image>"],
            "answer": ["1", "2"],
        }
    )
    ds = load_training_dataset(src, min_pixels=28 * 28, max_pixels=56 * 56)
    # survives shuffling, selection and pickling (DataLoader workers), as TRL's sampler uses them
    ds = pickle.loads(pickle.dumps(ds.shuffle(seed=0).select([0, 1])))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=lambda rows: rows)
    batch = next(iter(loader))
    assert len(batch) == 2
    for row in batch:
        assert is_conversational(row)
        messages = prepare_multimodal_messages(row["prompt"], images=row["images"])
        filled = [p["image"] for m in messages for p in m["content"] if p["type"] == "image"]
        assert filled == row["images"] and all(img.mode == "RGB" for img in filled)


# ----------------------------------------------------------------------------- bad input


def _jsonl(tmp_path, rows, name="train.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_missing_image_file_names_file_row_and_field(tmp_path, cache):
    (tmp_path / "ok.png").write_bytes(_png())
    path = _jsonl(
        tmp_path,
        [
            {"problem": "<image>a", "answer": "1", "images": ["ok.png"]},
            {"problem": "<image>b", "answer": "2", "images": ["gone.png"]},
        ],
    )
    with pytest.raises(FileNotFoundError) as err:
        load_training_dataset(path, cache_dir=cache)
    message = str(err.value)
    assert "row 1 of" in message and "train.jsonl" in message and "field 'images'" in message
    assert str(tmp_path / "gone.png") in message


def test_corrupt_and_truncated_image_bytes(tmp_path, cache):
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, "PNG")
    table = pa.table(
        {
            "images": [
                [{"bytes": _png(), "path": None}],
                [{"bytes": buf.getvalue()[:300], "path": None}],
            ],
            "problem": ["<image>a", "<image>b"],
            "answer": ["1", "2"],
        }
    )
    pq.write_table(table, tmp_path / "trunc.parquet")
    # the header check passes a truncated file; the full check decodes and names the row
    assert len(load_training_dataset(tmp_path / "trunc.parquet", cache_dir=cache)) == 2
    with pytest.raises(
        ValueError, match=r"row 1 of .*trunc\.parquet, field 'images', image 0 could not be decoded"
    ):
        load_training_dataset(tmp_path / "trunc.parquet", validate="full", cache_dir=cache)
    table = table.set_column(
        0, "images", pa.array([[{"bytes": b"\x89PNG garbage", "path": None}]] * 2)
    )
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(
        ValueError,
        match=r"row 0 of .*bad\.parquet, field 'images', image 0 could not be read as an image",
    ):
        load_training_dataset(tmp_path / "bad.parquet", cache_dir=cache)


def test_image_smaller_than_a_patch(tmp_path, cache):
    (tmp_path / "tiny.png").write_bytes(_png(size=(20, 12)))
    path = _jsonl(tmp_path, [{"problem": "<image>q", "answer": "1", "images": ["tiny.png"]}])
    with pytest.raises(
        ValueError,
        match=r"row 0 of .*image 0 \(.*tiny\.png\) is 20x12 px after resizing, smaller than one 28-px patch",
    ):
        load_training_dataset(path, min_pixels=None, cache_dir=cache)
    # the recipes' min_pixels upscales it
    ds = load_training_dataset(path, min_pixels=256 * 28 * 28, cache_dir=cache)
    assert min(ds[0]["images"][0].size) >= 28


def test_placeholder_count_mismatch(tmp_path, cache):
    (tmp_path / "a.png").write_bytes(_png())
    more = _jsonl(
        tmp_path, [{"problem": "<image>x<image>", "answer": "1", "images": ["a.png"]}], "more.jsonl"
    )
    with pytest.raises(
        ValueError,
        match=r"row 0 of .*more\.jsonl: field 'problem' has 2 '<image>' placeholders but field 'images' holds 1 image\.",
    ):
        load_training_dataset(more, cache_dir=cache)
    fewer = _jsonl(
        tmp_path,
        [{"problem": "<image>x", "answer": "1", "images": ["a.png", "a.png"]}],
        "fewer.jsonl",
    )
    with pytest.raises(
        ValueError, match="has 1 '<image>' placeholder but field 'images' holds 2 images"
    ):
        load_training_dataset(fewer, cache_dir=cache)


def test_unknown_columns_list_the_available_ones(tmp_path, cache):
    path = _jsonl(tmp_path, [{"question": "q", "answer": "1", "images": []}])
    with pytest.raises(
        ValueError,
        match=r"problem column 'problem' not found in .*train\.jsonl; available columns: question, answer, images",
    ):
        load_training_dataset(path, cache_dir=cache)
    with pytest.raises(ValueError, match="answer column 'solution' not found"):
        load_training_dataset(
            path, problem_column="question", answer_column="solution", cache_dir=cache
        )
    with pytest.raises(ValueError, match="image column 'pics' not found"):
        load_training_dataset(path, problem_column="question", image_column="pics", cache_dir=cache)
    with pytest.raises(ValueError, match="keep column 'id' not found"):
        load_training_dataset(path, problem_column="question", keep_columns=["id"], cache_dir=cache)
    with pytest.raises(ValueError, match="uses variable 'choices', which is not a column"):
        load_training_dataset(
            path,
            problem_column="question",
            prompt_template="{{ problem }} {{ choices }}",
            cache_dir=cache,
        )


def test_bad_text_fields(tmp_path, cache):
    cases = [
        ({"problem": "   ", "answer": "1"}, r"row 0 of .*field 'problem' is empty"),
        ({"problem": "q", "answer": None}, r"field 'answer' is null"),
        ({"problem": "q", "answer": "  "}, r"field 'answer' is empty"),
    ]
    for i, (row, pattern) in enumerate(cases):
        path = _jsonl(tmp_path, [row], f"t{i}.jsonl")
        with pytest.raises(ValueError, match=pattern):
            load_training_dataset(path, image_column=None, cache_dir=cache)


def test_skip_drops_bad_rows_and_reports_them(tmp_path, cache, caplog):
    (tmp_path / "ok.png").write_bytes(_png("green"))
    rows = [
        {"problem": "<image>a", "answer": "1", "images": ["ok.png"]},
        {"problem": "<image>b", "answer": "2", "images": ["missing.png"]},
        {"problem": "<image>c", "answer": "", "images": ["ok.png"]},
        {"problem": "<image><image>d", "answer": "4", "images": ["ok.png"]},
        {"problem": "<image>e", "answer": "5", "images": ["ok.png"]},
    ]
    path = _jsonl(tmp_path, rows)
    with caplog.at_level(logging.WARNING, logger="vppo.data.loading"):
        ds = load_training_dataset(path, on_error="skip", cache_dir=cache, **NO_RESIZE)
    _check_common_form(ds, ["1", "5"], [["green"], ["green"]])
    report = caplog.text
    assert "Skipped 3 of 5 rows" in report and "answer: 1, images: 2" in report
    assert "train.jsonl#1, train.jsonl#2, train.jsonl#3" in report and "missing.png" in report
    with pytest.raises(ValueError, match="no usable rows .* all 1 rows were skipped"):
        load_training_dataset(
            _jsonl(tmp_path, [rows[1]], "bad.jsonl"), on_error="skip", cache_dir=cache
        )


def test_prompt_token_limit(caplog):
    class WhitespaceTokenizer:  # the slice of the HF tokenizer API the loader calls
        def __call__(self, texts, add_special_tokens=True):
            assert add_special_tokens is False
            return {"input_ids": [t.split() for t in texts]}

    class Processor:
        tokenizer = WhitespaceTokenizer()

    src = datasets.Dataset.from_dict(
        {"problem": ["short one", "a b c d e f g h"], "answer": ["1", "2"]}
    )
    kw = {"image_column": None, "prompt_template": "plain", "max_prompt_tokens": 4}
    with pytest.raises(
        ValueError,
        match=r"row 1 of the given dataset, field 'prompt' has 8 text tokens, more than max_prompt_tokens=4",
    ):
        load_training_dataset(src, tokenizer=WhitespaceTokenizer(), **kw)
    with caplog.at_level(logging.WARNING, logger="vppo.data.loading"):
        ds = load_training_dataset(src, tokenizer=Processor(), on_error="skip", **kw)
    assert ds["answer"] == ["1"] and "prompt: 1" in caplog.text
    with pytest.raises(ValueError, match="needs a tokenizer"):
        load_training_dataset(src, **kw)


def test_bad_arguments_and_sources(tmp_path):
    src = datasets.Dataset.from_dict({"problem": ["q"], "answer": ["1"]})
    with pytest.raises(ValueError, match="on_error must be one of"):
        load_training_dataset(src, on_error="ignore")
    with pytest.raises(ValueError, match="must not exceed max_pixels"):
        load_training_dataset(src, min_pixels=100, max_pixels=10)
    with pytest.raises(ValueError, match="keep_columns cannot include 'answer'"):
        load_training_dataset(src, keep_columns=["answer"])
    with pytest.raises(ValueError, match="validate must be"):
        load_training_dataset(src, validate="deep")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_training_dataset(tmp_path / "nothing.parquet")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported type"):
        load_training_dataset(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="holds no data files"):
        load_training_dataset(tmp_path)
    # Hub names go through datasets.load_dataset; offline, the failure names the dataset
    with pytest.raises(
        FileNotFoundError, match="could not load the Hub dataset 'nobody/no_such_dataset'"
    ):
        load_training_dataset("nobody/no_such_dataset")


# ----------------------------------------------------------------------------- TrainingDataOptions


class _NotATokenizer:
    pass


# Every check of the options, with the message the keywords have always given.
BAD_OPTIONS = [
    (
        {"on_error": "ignore"},
        ValueError,
        "on_error must be one of ('raise', 'skip'), got 'ignore'.",
    ),
    (
        {"validate": "deep"},
        ValueError,
        "validate must be True, False, 'header', 'full' or 'none', got 'deep'.",
    ),
    (
        {"validate": 1},
        ValueError,
        "validate must be True, False, 'header', 'full' or 'none', got 1.",
    ),
    ({"alpha": "black"}, ValueError, "alpha must be one of ('white', 'drop'), got 'black'."),
    (
        {"resize_rounding": "up"},
        ValueError,
        "resize_rounding must be one of ('bounded', 'official'), got 'up'.",
    ),
    ({"min_pixels": 0}, ValueError, "min_pixels must be a positive integer or None, got 0."),
    ({"max_pixels": True}, ValueError, "max_pixels must be a positive integer or None, got True."),
    (
        {"min_pixels": 100, "max_pixels": 10},
        ValueError,
        "min_pixels (100) must not exceed max_pixels (10).",
    ),
    (
        {"min_image_side": 2.5},
        ValueError,
        "min_image_side must be a positive integer or None, got 2.5.",
    ),
    (
        {"max_aspect_ratio": 0.5},
        ValueError,
        "max_aspect_ratio must be a number >= 1 or None, got 0.5.",
    ),
    ({"problem_column": ""}, ValueError, "problem_column must be a non-empty column name, got ''."),
    (
        {"answer_column": None},
        ValueError,
        "answer_column must be a non-empty column name, got None.",
    ),
    (
        {"image_column": ["a", ""]},
        ValueError,
        "image_column must be a column name, a list of names or None, got ['a', ''].",
    ),
    ({"keep_columns": [""]}, ValueError, "keep_columns must hold column names, got ''."),
    (
        {"keep_columns": "prompt"},
        ValueError,
        "keep_columns cannot include 'prompt': the loader writes that column itself.",
    ),
    (
        {"keep_columns": ["id", "id"]},
        ValueError,
        "keep_columns lists a column twice: ['id', 'id'].",
    ),
    ({"system_prompt": 3}, ValueError, "system_prompt must be a string or None, got int."),
    (
        {"image_placeholder": ""},
        ValueError,
        "image_placeholder must be a non-empty string, got ''.",
    ),
    (
        {"max_prompt_tokens": 0},
        ValueError,
        "max_prompt_tokens must be a positive integer or None, got 0.",
    ),
    (
        {"max_prompt_tokens": 4},
        ValueError,
        "max_prompt_tokens needs a tokenizer (or processor) to count tokens; pass tokenizer=.",
    ),
    (
        {"max_prompt_tokens": 4, "tokenizer": _NotATokenizer()},
        ValueError,
        "tokenizer must be a callable Hugging Face tokenizer, got _NotATokenizer.",
    ),
    (
        {"image_dir": "/no/such/folder"},
        FileNotFoundError,
        "image_dir /no/such/folder is not an existing folder.",
    ),
    (
        {"prompt_template": ""},
        ValueError,
        "prompt_template is an empty string; pass a template name, path or source.",
    ),
    (
        {"max_samples": True},
        ValueError,
        "max_samples must be a positive integer or None, got True.",
    ),
    ({"seed": "1"}, ValueError, "seed must be an integer or None, got '1'."),
    ({"split": ""}, ValueError, "split must be a non-empty string, got ''."),
    # with two bad values, the one checked first is named, as before
    (
        {"split": "", "on_error": "x"},
        ValueError,
        "on_error must be one of ('raise', 'skip'), got 'x'.",
    ),
    (
        {"max_samples": 0, "prompt_template": ""},
        ValueError,
        "prompt_template is an empty string; pass a template name, path or source.",
    ),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_OPTIONS)
def test_options_refuse_bad_values_as_the_keywords_do(kwargs, error, message):
    src = datasets.Dataset.from_dict({"problem": ["q"], "answer": ["1"]})
    with pytest.raises(error) as built:
        TrainingDataOptions(**kwargs)
    with pytest.raises(error) as loaded:
        load_training_dataset(src, **kwargs)
    assert str(built.value) == str(loaded.value) == message
    # keywords that replace fields of a good options object are checked the same way
    with pytest.raises(error) as replaced:
        load_training_dataset(src, options=TrainingDataOptions(), **kwargs)
    assert str(replaced.value) == message


def test_options_and_keywords_give_identical_datasets(tmp_path, cache):
    (tmp_path / "r.png").write_bytes(_png("red", size=(300, 40)))
    (tmp_path / "g.png").write_bytes(_png("green"))
    path = _jsonl(
        tmp_path,
        [
            {"problem": "<image>a", "answer": "\\boxed{1}", "images": ["r.png"], "id": "x"},
            {"problem": "<image>b", "answer": "2", "images": ["gone.png"], "id": "y"},
            {"problem": "c <image><image>", "answer": "3", "images": ["g.png", "r.png"], "id": "z"},
            {"problem": "<image>d", "answer": "4", "images": ["g.png"], "id": "w"},
        ],
    )
    kwargs = dict(
        on_error="skip",
        keep_columns=["id"],
        system_prompt="Be brief.",
        min_pixels=28 * 28,
        max_pixels=96 * 96,
        resize_rounding="official",
        max_samples=3,
        seed=1,
        cache_dir=cache,
    )

    def rows(ds):
        return [{**r, "images": [(i.size, i.tobytes()) for i in r["images"]]} for r in ds]

    by_keywords = load_training_dataset(path, **kwargs)
    by_options = load_training_dataset(path, options=TrainingDataOptions(**kwargs))
    assert by_keywords.column_names == by_options.column_names
    assert by_keywords.features == by_options.features
    assert rows(by_keywords) == rows(by_options) and len(by_keywords) >= 2
    # keywords given with options= replace those fields
    other_seed = TrainingDataOptions(**{**kwargs, "seed": 5})
    assert rows(load_training_dataset(path, options=other_seed)) != rows(by_keywords)
    assert rows(load_training_dataset(path, options=other_seed, seed=1)) == rows(by_keywords)


def test_every_option_field_has_help_and_todays_default():
    fields = {f.name: f for f in dataclasses.fields(TrainingDataOptions)}
    for name, f in fields.items():
        assert isinstance(f.metadata.get("help"), str) and len(f.metadata["help"]) > 20, name
    defaults = {
        "split": "train",
        "image_column": "images",
        "problem_column": "problem",
        "answer_column": "answer",
        "prompt_template": None,
        "system_prompt": None,
        "min_pixels": DEFAULT_MIN_PIXELS,
        "max_pixels": DEFAULT_MAX_PIXELS,
        "min_image_side": 28,
        "max_aspect_ratio": 200.0,
        "alpha": "white",
        "resize_rounding": "bounded",
        "image_dir": None,
        "max_samples": None,
        "seed": 0,
        "validate": True,
        "on_error": "raise",
        "max_prompt_tokens": None,
        "tokenizer": None,
        "skip_long_prompts": False,
        "keep_columns": (),
        "unwrap_boxed_answer": True,
        "image_placeholder": "<image>",
        "cache_dir": None,
    }
    assert {name: f.default for name, f in fields.items()} == defaults


def test_options_are_normalised_once_and_frozen(tmp_path):
    options = TrainingDataOptions(
        image_column="pic",
        keep_columns="id",
        validate=False,
        prompt_template="plain",
        image_dir=tmp_path,
        skip_long_prompts=1,
    )
    assert options.image_column == ("pic",) and options.keep_columns == ("id",)
    assert options.validate == "none" and options.prompt_template == load_template("plain")
    assert options.image_dir == tmp_path.resolve() and options.skip_long_prompts is True
    assert TrainingDataOptions(image_column=None).image_column is None
    assert dataclasses.replace(options) == options  # normalising again changes nothing
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.on_error = "skip"


def test_unknown_keywords_and_options_of_the_wrong_type():
    src = datasets.Dataset.from_dict({"problem": ["q"], "answer": ["1"]})
    # the internal names of three knobs are not keywords
    with pytest.raises(
        TypeError,
        match=r"^load_training_dataset\(\) got an unexpected keyword argument 'min_side'$",
    ):
        load_training_dataset(src, min_side=28)
    with pytest.raises(ValueError, match="^options must be a TrainingDataOptions, got dict.$"):
        load_training_dataset(src, options={"on_error": "skip"})
