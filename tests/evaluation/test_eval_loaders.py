"""Each supported schema, written as a small file that mimics it, loads into the common form."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vppo.data.prompts import render_prompt
from vppo.evaluation import benchmarks as bm
from vppo.evaluation.benchmarks import (
    BENCHMARKS,
    detect_schema,
    load_benchmark,
    load_examples_from_path,
    resolve_benchmark_names,
    rows_to_examples,
)
from vppo.evaluation.reference import COLUMN_TITLES, PAPER_BENCHMARKS

INSTRUCTION = (
    "You first think through the reasoning process as an internal monologue, enclosed within "
    "<think> </think> tags. Then, provide your final answer enclosed within \\boxed{}."
)
RED, GREEN, BLUE, GREY = (255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128)
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def png(color, size=(40, 30), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 128).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: Path, color, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png(color, size))


def colors(example) -> list[tuple[int, int, int]]:
    return [img.getpixel((0, 0)) for img in example.images]


def user_turn(question: str) -> str:
    return f"{question}\n\n{INSTRUCTION}"


def sharegpt_row(question: str, answer: str, images: list[str]) -> dict:
    return {
        "messages": [
            {"role": "user", "content": user_turn(question)},
            {"role": "assistant", "content": answer},
        ],
        "images": images,
    }


# --------------------------------------------------------------------------------------------
# ShareGPT (the files the paper scored)
# --------------------------------------------------------------------------------------------


def test_sharegpt_json_in_papo_eval_layout(tmp_path):
    data = tmp_path / "data"
    save_png(data / "images" / "hiyouga_geometry3k" / "0.png", RED)
    save_png(data / "images" / "hiyouga_geometry3k" / "1a.png", GREEN)
    save_png(data / "images" / "hiyouga_geometry3k" / "1b.png", BLUE)
    rows = [
        sharegpt_row(
            "<image>Find x. Round to the nearest tenth.",
            "48",
            ["./data/images/hiyouga_geometry3k/0.png"],
        ),
        sharegpt_row(
            "<image>Compare <image>.\nChoices: A. 1 B. 2",
            "B",
            ["./data/images/hiyouga_geometry3k/1a.png", "./data/images/hiyouga_geometry3k/1b.png"],
        ),
        sharegpt_row("<image>Lost image.", "3", ["./data/images/hiyouga_geometry3k/nope.png"]),
        {
            "messages": [{"role": "user", "content": user_turn("<image>No answer.")}],
            "images": ["./data/images/hiyouga_geometry3k/0.png"],
        },
        sharegpt_row("<image>Empty answer.", "  ", ["./data/images/hiyouga_geometry3k/0.png"]),
    ]
    (data / "papo").mkdir()
    (data / "papo" / "hiyouga_geometry3k.json").write_text(json.dumps(rows), encoding="utf-8")

    loaded = load_benchmark("geo3k", data_dir=data)

    assert loaded.schema == "sharegpt"
    assert [e.id for e in loaded.examples] == ["0", "1"]
    first, second = loaded.examples
    assert (first.answer, second.answer) == ("48", "B")
    assert first.problem == "<image>Find x. Round to the nearest tenth."
    assert second.problem == "<image>Compare <image>.\nChoices: A. 1 B. 2"
    assert colors(first) == [RED] and colors(second) == [GREEN, BLUE]
    assert all(e.benchmark == "geo3k" for e in loaded.examples)
    # Rendering the common form with the default template gives back the stored user turn.
    for example, row in zip(loaded.examples, rows, strict=False):
        assert render_prompt(example.problem) == row["messages"][0]["content"]
    reasons = {s.id: s.reason for s in loaded.skipped}
    assert set(reasons) == {"2", "3", "4"}
    assert "nope.png" in reasons["2"] and "not found" in reasons["2"]
    assert "assistant" in reasons["3"]
    assert "answer" in reasons["4"]


def test_sharegpt_file_of_your_own_carrying_the_instruction_gets_it_once(tmp_path):
    """A ShareGPT file whose questions already hold the official instruction, with other spacing
    or before the question: the default template's prompt has the instruction once."""
    save_png(tmp_path / "d.png", RED)
    spaced = INSTRUCTION.replace(". Then", ".\nThen")
    questions = [
        f"<image>Sum of the digits?\n{spaced}",
        f"<image>{INSTRUCTION}\nSum of the digits?",
        f"<image>Sum of the digits?\n\n{INSTRUCTION}  ",
    ]
    rows = [
        {
            "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "9"}],
            "images": ["d.png"],
        }
        for q in questions
    ]
    path = tmp_path / "digits.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    loaded = load_benchmark("digits", path=path)
    assert loaded.schema == "sharegpt"
    for example in loaded.examples:
        assert INSTRUCTION not in example.problem and "You first think" not in example.problem
        assert render_prompt(example.problem) in (
            f"<image>Sum of the digits?\n\n{INSTRUCTION}",
            f"<image>\nSum of the digits?\n\n{INSTRUCTION}",
        )


def test_sharegpt_parquet_hub_layout_with_moved_images(tmp_path):
    # Hub layout: data/<split>-00000-of-00001.parquet; the image archive was extracted into
    # images/ without the "data/" prefix, and one file sits in another folder (found by name).
    root = tmp_path / "papo_eval"
    save_png(root / "images" / "We-Math" / "a.png", RED)
    save_png(root / "images" / "elsewhere" / "b.png", BLUE)
    rows = [
        sharegpt_row("<image>Which angle? A. 30 B. 60", "A", ["./data/images/We-Math/a.png"]),
        sharegpt_row("<image>How long?", "\\frac{3}{2}", ["./data/images/We-Math/b.png"]),
    ]
    table = pa.table(
        {
            "messages": [r["messages"] for r in rows],
            "images": [r["images"] for r in rows],
        }
    )
    (root / "data").mkdir(parents=True)
    pq.write_table(table, root / "data" / "We_Math-00000-of-00001.parquet")

    loaded = load_benchmark("We-Math", data_dir=root)

    assert loaded.name == "wemath" and loaded.schema == "sharegpt"
    assert [e.answer for e in loaded.examples] == ["A", "\\frac{3}{2}"]
    assert [colors(e) for e in loaded.examples] == [[RED], [BLUE]]
    assert loaded.examples[0].problem == "<image>Which angle? A. 30 B. 60"
    assert not loaded.skipped


def test_sharegpt_vppo_eval_layout_and_limit(tmp_path):
    data = tmp_path / "VPPO-Eval" / "data"
    for i in range(4):
        save_png(data / "images" / "MathLLMs_MathVision" / f"{i}.png", (i * 60, 0, 0))
    rows = [
        sharegpt_row(f"<image>Question {i}", str(i), [f"./data/images/MathLLMs_MathVision/{i}.png"])
        for i in range(4)
    ]
    (data / "vppo").mkdir(parents=True)
    (data / "vppo" / "MathLLMs_MathVision.json").write_text(json.dumps(rows), encoding="utf-8")

    loaded = load_benchmark("mathvision", data_dir=data, limit=2)

    assert [e.answer for e in loaded.examples] == ["0", "1"]
    assert colors(loaded.examples[1]) == [(60, 0, 0)]


def test_missing_sharegpt_file_names_what_was_searched(tmp_path):
    with pytest.raises(FileNotFoundError, match="DynaMath_DynaMath_Sample"):
        load_benchmark("dynamath", data_dir=tmp_path)


# --------------------------------------------------------------------------------------------
# EasyR1 schema (ViRL39K train, MMK12 validation, hiyouga/geometry3k)
# --------------------------------------------------------------------------------------------


def test_easyr1_parquet_with_image_structs_and_optional_ids(tmp_path):
    schema = pa.schema(
        [
            ("images", pa.list_(IMAGE_STRUCT)),
            ("problem", pa.string()),
            ("answer", pa.string()),
            ("id", pa.string()),
        ]
    )
    table = pa.table(
        {
            "images": [
                [{"bytes": png(RED), "path": None}],
                [{"bytes": png(GREEN), "path": None}, {"bytes": png(BLUE), "path": "x.png"}],
                [],
            ],
            "problem": [
                "<image>How many?",
                "<image> vs <image>: which is larger?",
                "Text only: 2+2",
            ],
            "answer": ["\\boxed{17}", "B", "4"],
            "id": ["virl-7", None, "virl-9"],
        },
        schema=schema,
    )
    path = tmp_path / "train.parquet"
    pq.write_table(table, path)

    loaded = load_examples_from_path("virl39k", path)

    assert loaded.schema == "easyr1"
    assert [e.id for e in loaded.examples] == ["virl-7", "1", "virl-9"]
    assert [e.answer for e in loaded.examples] == ["17", "B", "4"]  # one outer \boxed{} unwrapped
    assert [colors(e) for e in loaded.examples] == [[RED], [GREEN, BLUE], []]
    assert loaded.examples[2].problem == "Text only: 2+2"


def test_original_virl39k_jsonl_with_relative_paths(tmp_path):
    save_png(tmp_path / "images" / "q1.png", GREEN)
    rows = [
        {
            "qid": "q1",
            "question": "<image>What is shown?",
            "answer": "\\boxed{\\frac{1}{2}}",
            "image": ["images/q1.png"],
            "source": "x",
            "category": "y",
        }
    ]
    path = tmp_path / "virl.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")

    loaded = load_examples_from_path("virl39k", path)

    assert loaded.schema == "virl39k_original"
    (example,) = loaded.examples
    assert (example.id, example.answer) == ("q1", "\\frac{1}{2}")
    assert colors(example) == [GREEN]


def test_saved_hf_dataset_with_decoded_image_feature(tmp_path):
    import datasets

    features = datasets.Features(
        {
            "images": datasets.List(datasets.Image()),
            "problem": datasets.Value("string"),
            "answer": datasets.Value("string"),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "images": [[Image.new("RGB", (30, 30), RED)], [Image.new("L", (30, 30), 200)]],
            "problem": ["<image>First", "<image>Second"],
            "answer": ["1", "2"],
        },
        features=features,
    )
    ds.save_to_disk(str(tmp_path / "saved"))

    loaded = load_examples_from_path("mmk12_val", tmp_path / "saved")

    assert [e.answer for e in loaded.examples] == ["1", "2"]
    assert colors(loaded.examples[0]) == [RED]
    assert colors(loaded.examples[1]) == [(200, 200, 200)]  # grayscale converted to RGB
    assert all(img.mode == "RGB" for e in loaded.examples for img in e.images)


# --------------------------------------------------------------------------------------------
# Raw Hub schemas of the eight benchmarks
# --------------------------------------------------------------------------------------------


def write_parquet(path: Path, columns: dict, schema: pa.Schema | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns, schema=schema), path)
    return path


def test_geo3k_raw_uses_the_answer_not_the_choice_letter(tmp_path):
    schema = pa.schema(
        [
            ("images", pa.list_(IMAGE_STRUCT)),
            ("problem", pa.string()),
            ("answer", pa.string()),
            ("id", pa.int64()),
            ("choices", pa.list_(pa.string())),
            ("ground_truth", pa.string()),
        ]
    )
    write_parquet(
        tmp_path / "data" / "test-00000-of-00001.parquet",
        {
            "images": [[{"bytes": png(RED), "path": None}]],
            "problem": ["<image>Find x. Round to the nearest tenth."],
            "answer": ["48"],
            "id": [2101],
            "choices": [["24", "48", "60", "96"]],
            "ground_truth": ["B"],
        },
        schema,
    )
    write_parquet(  # another split in the same snapshot is not read
        tmp_path / "data" / "train-00000-of-00001.parquet",
        {
            "images": [[]],
            "problem": ["Train"],
            "answer": ["1"],
            "id": [0],
            "choices": [[]],
            "ground_truth": ["A"],
        },
        schema,
    )
    loaded = load_examples_from_path("geo3k", tmp_path)
    (example,) = loaded.examples
    assert (example.id, example.answer, colors(example)) == ("2101", "48", [RED])


def test_wemath_image_in_image_path_column(tmp_path):
    path = write_parquet(
        tmp_path / "testmini.parquet",
        {
            "ID": ["3steps_1", "3steps_1"],
            "split": ["testmini", "testmini"],
            "knowledge concept": ["angles", "angles"],
            "question": ["What is angle x?", "And angle y?"],
            "option": ["A. 30°; B. 45°; C. 60°", "A. 10°; B. 20°"],
            "answer": ["C", "A"],
            "key": ["k", "k"],
            "question number": [1, 2],
            "image_path": [
                {"bytes": png(RED), "path": "1.png"},
                {"bytes": png(BLUE), "path": None},
            ],
        },
    )
    loaded = load_examples_from_path("wemath", path)

    assert loaded.schema == "wemath"
    first, second = loaded.examples
    assert first.problem == "<image>What is angle x?\nOptions: A. 30°; B. 45°; C. 60°"
    assert (first.answer, second.answer) == ("C", "A")
    assert (first.id, second.id) == ("3steps_1", "3steps_1#2")  # ids made unique
    assert colors(first) == [RED] and colors(second) == [BLUE]


def test_mmk12_raw_with_plain_bytes_images(tmp_path):
    write_parquet(
        tmp_path / "test-00000-of-00001.parquet",
        {
            "id": ["m1", "m2"],
            "subject": ["math", "physics"],
            "image": [png(GREEN), png(RED)],
            "question": ["<image>Pick one. A. 1 B. 2", "Which force? A. up B. down"],
            "answer": ["A", "B"],
        },
    )
    loaded = load_examples_from_path("mmk12", tmp_path)  # a folder: split files are found

    assert loaded.schema == "mmk12"
    assert [e.problem for e in loaded.examples] == [
        "<image>Pick one. A. 1 B. 2",
        "<image>Which force? A. up B. down",
    ]
    assert [colors(e) for e in loaded.examples] == [[GREEN], [RED]]


def test_mathverse_keeps_multiple_choice_only(tmp_path):
    path = write_parquet(
        tmp_path / "testmini.parquet",
        {
            "sample_index": ["1", "2", "3"],
            "problem_index": ["1", "1", "2"],
            "problem_version": ["Text Dominant", "Vision Only", "Text Lite"],
            "question": ["As shown, find x.\nChoices:\nA:1\nB:2", "", "Find the area."],
            "image": [{"bytes": png(RED), "path": None}] * 3,
            "answer": ["B", "A", "12"],
            "question_type": ["multi-choice", "multi-choice", "free-form"],
            "query_wo": ["q", "q", "q"],
        },
    )
    loaded = load_examples_from_path("mathverse", path)

    assert loaded.schema == "mathverse"
    assert [e.id for e in loaded.examples] == ["1", "2"]
    assert loaded.filtered == 1 and not loaded.skipped
    assert loaded.examples[1].problem == "<image>" + bm.MATHVERSE_VISION_ONLY_QUESTION


def test_mathvision_decoded_image_options_and_image_refs(tmp_path):
    save_png(tmp_path / "images" / "2.jpg", GREEN)
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("question", pa.string()),
            ("options", pa.list_(pa.string())),
            ("image", pa.string()),
            ("decoded_image", IMAGE_STRUCT),
            ("answer", pa.string()),
            ("solution", pa.string()),
            ("level", pa.int64()),
            ("subject", pa.string()),
        ]
    )
    path = write_parquet(
        tmp_path / "test.parquet",
        {
            "id": ["1", "2"],
            "question": ["<image1>\nWhich shape comes next?", "How many cubes are there?"],
            "options": [["circle", "square"], []],
            "image": ["images/1.jpg", "images/2.jpg"],
            "decoded_image": [{"bytes": png(RED), "path": "images/1.jpg"}, None],
            "answer": ["B", "7"],
            "solution": [None, None],
            "level": [1, 2],
            "subject": ["logic", "counting"],
        },
        schema,
    )
    loaded = load_examples_from_path("mathvision", path)

    assert loaded.schema == "mathvision"
    first, second = loaded.examples
    assert first.problem == "<image>\nWhich shape comes next?\nChoices:\nA. circle\nB. square"
    assert colors(first) == [RED]
    # No decoded image: the relative `image` path is used, resolved against the file's folder.
    assert second.problem == "<image>How many cubes are there?"
    assert (second.answer, colors(second)) == ("7", [GREEN])


def test_dynamath_from_the_hub_concatenates_variants(monkeypatch):
    import datasets

    def fake_load_dataset(repo, config=None, split=None):
        assert repo == "DynaMath/DynaMath_Sample" and config is None
        shade = int(split.removeprefix("sample_variant"))
        return datasets.Dataset.from_dict(
            {
                "id": ["1", "2"],
                "question": ["<image>What is f(0)?", "<image>Choose. A. x B. y"],
                "image": ["images/1.png", "images/2.png"],
                "decoded_image": [Image.new("RGB", (20, 20), (shade, 0, 0))] * 2,
                "ground_truth": ["3.5", "B"],
                "answer_type": ["float", "multiple choice"],
                "subject": ["algebra", "graph"],
                "knowledge_level": ["high school", "college"],
            },
            features=datasets.Features(
                {
                    "id": datasets.Value("string"),
                    "question": datasets.Value("string"),
                    "image": datasets.Value("string"),
                    "decoded_image": datasets.Image(),
                    "ground_truth": datasets.Value("string"),
                    "answer_type": datasets.Value("string"),
                    "subject": datasets.Value("string"),
                    "knowledge_level": datasets.Value("string"),
                }
            ),
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = load_examples_from_path("dynamath", "hub:DynaMath/DynaMath_Sample", limit=5)

    assert loaded.schema == "dynamath"
    assert [e.id for e in loaded.examples] == [
        "sample_variant1/1",
        "sample_variant1/2",
        "sample_variant2/1",
        "sample_variant2/2",
        "sample_variant3/1",
    ]
    assert [e.answer for e in loaded.examples[:2]] == ["3.5", "B"]
    assert colors(loaded.examples[2]) == [(2, 0, 0)]


def test_logicvista_multi_letter_answers(tmp_path):
    path = write_parquet(
        tmp_path / "test.parquet",
        {
            "question": ["Which two? (A) a (B) b (C) c"],
            "answer": ["A, C"],
            "reasoning": ["r"],
            "image": [{"bytes": png(BLUE), "path": None}],
            "skill": ["inductive"],
            "broad_capability": ["x"],
            "id": ["lv1"],
        },
    )
    (example,) = load_examples_from_path("logicvista", path).examples
    assert (example.id, example.answer, colors(example)) == ("lv1", "A, C", [BLUE])


def test_mmmu_pro_options_string_and_numbered_image_columns(tmp_path):
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("question", pa.string()),
            ("options", pa.string()),
            ("explanation", pa.string()),
        ]
        + [(f"image_{i}", IMAGE_STRUCT) for i in range(1, 8)]
        + [("img_type", pa.string()), ("answer", pa.string()), ("subject", pa.string())]
    )
    empty = {f"image_{i}": [None, None] for i in range(1, 8)}
    empty["image_1"] = [{"bytes": png(RED), "path": None}, {"bytes": png(RED), "path": None}]
    empty["image_2"] = [{"bytes": png(GREEN), "path": None}, None]
    empty["image_3"] = [{"bytes": png(BLUE), "path": None}, None]
    path = write_parquet(
        tmp_path / "test-00000-of-00001.parquet",
        {
            "id": ["validation_Art_1", "validation_Art_2"],
            "question": ["Compare <image 2> with <image 1>.", "What does the chart show?"],
            "options": ["['<image 3>', 'both', \"neither\"]", "['up', 'down']"],
            "explanation": ["", ""],
            **empty,
            "img_type": ["['Paintings']", "['Charts']"],
            "answer": ["C", "A"],
            "subject": ["Art", "Economics"],
        },
        schema,
    )
    loaded = load_examples_from_path("mmmu_pro", path)

    assert loaded.schema == "mmmu_pro"
    first, second = loaded.examples
    assert first.problem == (
        "Compare <image> with <image>.\nChoices:\nA. <image>\nB. both\nC. neither"
    )
    assert colors(first) == [GREEN, RED, BLUE]  # images follow the order of the references
    # An image the text never references is put first.
    assert second.problem == "<image>What does the chart show?\nChoices:\nA. up\nB. down"
    assert colors(second) == [RED]


def test_mmmu_pro_vision_config_and_sharegpt_conversations(tmp_path):
    vision = write_parquet(
        tmp_path / "vision" / "test.parquet",
        {
            "id": ["v1"],
            "image": [{"bytes": png(GREEN), "path": None}],
            "options": ["['1', '2']"],
            "answer": ["B"],
            "subject": ["Math"],
        },
    )
    loaded = load_examples_from_path("mmmu_pro", vision)
    assert loaded.schema == "mmmu_pro_vision"
    (example,) = loaded.examples
    assert example.problem == "<image>" + bm.MMMU_PRO_VISION_QUESTION
    assert (example.answer, colors(example)) == ("B", [GREEN])

    save_png(tmp_path / "img.png", BLUE)
    rows = [
        {
            "conversations": [
                {"from": "human", "value": user_turn("<image>Sum?")},
                {"from": "gpt", "value": "7"},
            ],
            "images": ["img.png"],
        }
    ]
    (tmp_path / "conv.json").write_text(json.dumps(rows), encoding="utf-8")
    (example,) = load_examples_from_path("custom", tmp_path / "conv.json").examples
    assert (example.problem, example.answer, colors(example)) == ("<image>Sum?", "7", [BLUE])


# --------------------------------------------------------------------------------------------
# Detection, names, registry and the Hub ShareGPT path
# --------------------------------------------------------------------------------------------


def test_detect_schema_prefers_sharegpt_and_rejects_unknown_columns():
    assert detect_schema(["messages", "images", "problem", "answer"]) == "sharegpt"
    assert detect_schema(["question", "answer", "image"], hint="logicvista") == "mmk12"
    assert detect_schema(["question", "answer", "image", "skill"]) == "logicvista"
    with pytest.raises(ValueError, match="cannot tell the schema"):
        detect_schema(["text", "label"])


def test_placeholder_mismatch_is_a_skipped_row():
    rows = [
        {"problem": "<image><image>Two?", "answer": "1", "images": [png(RED)]},
        {"problem": "Fine", "answer": "2", "images": [png(RED)]},
    ]
    loaded = rows_to_examples(rows, "custom")
    assert [e.problem for e in loaded.examples] == ["<image>Fine"]
    assert "2 <image> placeholders" in loaded.skipped[0].reason


def test_benchmark_names_registry_and_paper_order():
    assert resolve_benchmark_names("all") == list(PAPER_BENCHMARKS)
    assert resolve_benchmark_names("We-Math, geometry3k,wemath") == ["wemath", "geo3k"]
    assert resolve_benchmark_names("my_set") == ["my_set"]
    paper = [name for name, spec in BENCHMARKS.items() if spec.in_paper]
    assert paper == list(PAPER_BENCHMARKS)
    assert all(BENCHMARKS[n].title == COLUMN_TITLES[n] for n in PAPER_BENCHMARKS)
    assert sum(BENCHMARKS[n].paper_rows for n in PAPER_BENCHMARKS) == 15271
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("my_set")


def test_papo_eval_from_the_hub_extracts_the_image_archive(tmp_path, monkeypatch):
    import huggingface_hub

    snapshot = tmp_path / "snapshot"
    (snapshot / "data").mkdir(parents=True)
    rows = [sharegpt_row("<image>Count.", "5", ["./data/images/lscpku_LogicVista/0.png"])]
    pq.write_table(
        pa.table(
            {"messages": [r["messages"] for r in rows], "images": [r["images"] for r in rows]}
        ),
        snapshot / "data" / "lscpku_LogicVista-00000-of-00001.parquet",
    )
    with zipfile.ZipFile(snapshot / "lscpku_LogicVista_images.zip", "w") as archive:
        archive.writestr("lscpku_LogicVista/0.png", png(GREY))
    calls = []

    def fake_snapshot_download(repo_id, repo_type=None, allow_patterns=None):
        calls.append((repo_id, repo_type, tuple(allow_patterns)))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setenv("VPPO_CACHE", str(tmp_path / "cache"))

    loaded = load_benchmark("logicvista")

    assert calls == [
        (
            "PAPO-Galaxy/PAPO_eval",
            "dataset",
            ("data/lscpku_LogicVista-*.parquet", "lscpku_LogicVista_images.zip"),
        )
    ]
    (example,) = loaded.examples
    assert (example.answer, colors(example)) == ("5", [GREY])
    assert (
        tmp_path / "cache" / "eval_images" / "lscpku_LogicVista" / "lscpku_LogicVista" / "0.png"
    ).is_file()
