"""Tests of the synthetic visual reasoning task (vppo.data.synthetic).

The image checks decode every picture with a reader written here (connected components, hue
names, and a 3×5 font spelled out below), independent of the generator's scene records, so they
prove that the labels say what the pictures show.
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import random
import re
import subprocess
import sys
from collections import Counter, deque

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest

from vppo.data import synthetic as syn
from vppo.rewards import extract_boxed_content, grade_answer, score_accuracy

# --------------------------------------------------------------------------------------------
# An independent reader of the pictures
# --------------------------------------------------------------------------------------------

WHITE = (255, 255, 255)
# The 3×5 font the pictures must use, written row by row.
FONT = {
    "####.##.##.####": 0,
    ".#.##..#..#.###": 1,
    "###..#####..###": 2,
    "###..####..####": 3,
    "#.##.####..#..#": 4,
    "####..###..####": 5,
    "####..####.####": 6,
    "###..#..#..#..#": 7,
    "####.#####.####": 8,
    "####.####..####": 9,
}


def hue_name(rgb: tuple[int, int, int]) -> str:
    """Name a saturated colour by its hue; dark unsaturated pixels are 'ink'."""
    if tuple(rgb) == WHITE:
        return "white"
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    if v < 0.3 and s < 0.3:
        return "ink"
    assert s > 0.5 and v > 0.5, f"pixel {rgb} is neither ink nor a saturated colour"
    degrees = h * 360
    for limit, name in ((15, "red"), (40, "orange"), (75, "yellow"), (170, "green")):
        if degrees < limit:
            return name
    for limit, name in ((250, "blue"), (330, "purple")):
        if degrees < limit:
            return name
    return "red"


def components(pixels: np.ndarray) -> list[dict]:
    """4-connected components of equal-coloured non-white pixels."""
    height, width, _ = pixels.shape
    seen = np.zeros((height, width), dtype=bool)
    found = []
    for y0, x0 in zip(*np.nonzero(np.any(pixels != WHITE, axis=-1)), strict=True):
        if seen[y0, x0]:
            continue
        colour = tuple(int(c) for c in pixels[y0, x0])
        queue, points = deque([(y0, x0)]), []
        seen[y0, x0] = True
        while queue:
            y, x = queue.popleft()
            points.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if (
                    0 <= ny < height
                    and 0 <= nx < width
                    and not seen[ny, nx]
                    and tuple(pixels[ny, nx]) == colour
                ):
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        ys, xs = np.array(points).T
        box = (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
        area = len(points)
        fill = area / ((box[2] - box[0]) * (box[3] - box[1]))
        found.append(
            {
                "name": hue_name(colour),
                "box": box,
                "fill": fill,
                "cx": xs.mean() + 0.5,
                "area": area,
            }
        )
    return found


def shape_kind(comp: dict) -> str:
    if comp["fill"] > 0.95:
        return "square"
    return "circle" if comp["fill"] > 0.68 else "triangle"


def read_digit(pixels: np.ndarray, comp: dict) -> int:
    y0, x0, y1, x1 = comp["box"]
    scale = (y1 - y0) // 5
    assert (y1 - y0, x1 - x0) == (5 * scale, 3 * scale), "a digit box is not a scaled 3×5 box"
    bits = "".join(
        "#"
        if hue_name(tuple(pixels[y0 + r * scale + scale // 2, x0 + c * scale + scale // 2]))
        == "ink"
        else "."
        for r in range(5)
        for c in range(3)
    )
    assert bits in FONT, f"unreadable glyph {bits}"
    return FONT[bits]


def read_answer(pixels: np.ndarray, problem: str) -> str:
    """Answer the question by looking at the picture only."""
    comps = components(pixels)
    shapes = [c for c in comps if c["name"] != "ink"]
    digits = [c for c in comps if c["name"] == "ink"]
    question = problem.removeprefix("<image>")
    if question == "How many shapes are in the image?":
        assert not digits
        return str(len(shapes))
    if m := re.fullmatch(r"How many (\w+) shapes are in the image\?", question):
        return str(sum(c["name"] == m.group(1) for c in shapes))
    if m := re.fullmatch(r"What colour is the (\w+)\?", question):
        wanted = m.group(1)
        matches = shapes if wanted == "shape" else [c for c in shapes if shape_kind(c) == wanted]
        assert len(matches) == 1, f"{len(matches)} shapes fit {question!r}"
        return matches[0]["name"]
    if m := re.fullmatch(r"Is the (?:(\w+) )?shape on the left or the right\?", question):
        matches = [c for c in shapes if m.group(1) in (None, c["name"])]
        assert len(matches) == 1, f"{len(matches)} shapes fit {question!r}"
        return "left" if matches[0]["cx"] < pixels.shape[1] / 2 else "right"
    if question == "What is the sum of the two digits?":
        assert len(digits) == 2
        return str(sum(read_digit(pixels, c) for c in digits))
    raise AssertionError(f"unknown question {question!r}")


def pixels_of(row: dict) -> np.ndarray:
    (image,) = row["images"]
    return np.asarray(image.convert("RGB"))


def pair_keys(dataset: datasets.Dataset) -> set[tuple[str, bytes]]:
    """(question, PNG bytes) pairs; the encoder is lossless and deterministic, so equal bytes
    means equal pixels and vice versa."""
    encoded = dataset.cast_column("images", datasets.List(datasets.Image(decode=False)))
    images = encoded.data.column("images").to_pylist()
    return {(p, i[0]["bytes"]) for p, i in zip(encoded["problem"], images, strict=True)}


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_medium() -> datasets.Dataset:
    return syn.make_synthetic_dataset(2000, split="train", seed=0)


@pytest.fixture(scope="module")
def test_medium() -> datasets.Dataset:
    return syn.make_synthetic_dataset(1000, split="test", seed=0)


# --------------------------------------------------------------------------------------------
# Determinism and splits
# --------------------------------------------------------------------------------------------


def raw_rows(dataset: datasets.Dataset) -> list[tuple]:
    encoded = dataset.cast_column("images", datasets.List(datasets.Image(decode=False)))
    images = encoded.data.column("images").to_pylist()
    columns = [encoded[name] for name in ("problem", "answer", "id", "scene")]
    return [(i[0]["bytes"], *rest) for i, *rest in zip(images, *columns, strict=True)]


def test_same_seed_gives_identical_bytes_and_text():
    first = syn.make_synthetic_dataset(30, split="validation", seed=7, image_size=84)
    second = syn.make_synthetic_dataset(30, split="validation", seed=7, image_size=84)
    assert raw_rows(first) == raw_rows(second)


def test_different_seed_gives_different_examples():
    first = {(p, s) for _, p, _, _, s in raw_rows(syn.make_synthetic_dataset(30, seed=0))}
    second = {(p, s) for _, p, _, _, s in raw_rows(syn.make_synthetic_dataset(30, seed=1))}
    assert len(first & second) < 3


def test_a_shorter_dataset_is_a_prefix_of_a_longer_one():
    short = raw_rows(syn.make_synthetic_dataset(7, seed=2, difficulty="hard"))
    long = raw_rows(syn.make_synthetic_dataset(16, seed=2, difficulty="hard"))
    assert long[:7] == short


def test_generate_example_is_deterministic_given_the_rng():
    a = syn.generate_example(random.Random(5), "digit_sum", 84, difficulty="hard")
    b = syn.generate_example(random.Random(5), "digit_sum", 84, difficulty="hard")
    assert np.array_equal(np.asarray(a["images"][0]), np.asarray(b["images"][0]))
    assert (a["problem"], a["answer"], a["scene"]) == (b["problem"], b["answer"], b["scene"])


def test_dataset_pixels_are_the_rendered_scene():
    dataset = syn.make_synthetic_dataset(10, split="test", seed=5, image_size=84)
    for row in dataset:
        assert np.array_equal(pixels_of(row), syn.render_scene(json.loads(row["scene"])))
    example = syn.generate_example(random.Random(1), "count", answer=3)
    assert example["answer"] == "3"
    assert read_answer(np.asarray(example["images"][0]), example["problem"]) == "3"


def test_splits_never_share_an_image_question_pair(train_medium, test_medium):
    validation = syn.make_synthetic_dataset(600, split="validation", seed=0)
    other_seed_validation = syn.make_synthetic_dataset(600, split="validation", seed=1)
    train, val, test = pair_keys(train_medium), pair_keys(validation), pair_keys(test_medium)
    other_val = pair_keys(other_seed_validation)
    assert not train & val
    assert not train & test
    assert not val & test
    assert not other_val & (train | test)  # whatever the seeds
    # The check has teeth: the scene space is small enough that two streams of a split collide.
    assert val & other_val


# --------------------------------------------------------------------------------------------
# Schema, labels and reference solutions
# --------------------------------------------------------------------------------------------


def test_schema_matches_the_training_data(train_medium):
    assert set(train_medium.column_names) == {
        "images",
        "problem",
        "answer",
        "task_type",
        "id",
        "scene",
    }
    assert len(set(train_medium["id"])) == len(train_medium)
    row = train_medium[0]
    assert len(row["images"]) == 1
    assert row["images"][0].mode == "RGB" and row["images"][0].size == (56, 56)
    assert all(p.count("<image>") == 1 and p.startswith("<image>") for p in train_medium["problem"])
    assert Counter(train_medium["task_type"]) == {t: 400 for t in syn.TASK_TYPES}


@pytest.mark.parametrize(
    ("difficulty", "image_size", "n"),
    [("medium", 56, 120), ("easy", 56, 50), ("hard", 56, 120), ("hard", 84, 80)],
)
def test_pictures_show_the_answer(difficulty, image_size, n, train_medium):
    dataset = (
        train_medium.select(range(n))
        if (difficulty, image_size) == ("medium", 56)
        else syn.make_synthetic_dataset(
            n, split="train", seed=3, image_size=image_size, difficulty=difficulty
        )
    )
    for row in dataset:
        pixels = pixels_of(row)
        assert pixels.shape == (image_size, image_size, 3)
        assert read_answer(pixels, row["problem"]) == row["answer"], row["id"]


def test_hard_level_draws_distractors():
    dataset = syn.make_synthetic_dataset(40, difficulty="hard", task_types=["colour", "position"])
    for row in dataset:
        assert len(components(pixels_of(row))) >= 2
        assert "the shape" not in row["problem"]  # the question names which object it means


def test_reference_solution_boxes_the_answer(train_medium):
    rows = list(train_medium.select(range(300)))
    rows += list(syn.make_synthetic_dataset(100, difficulty="hard", image_size=84))
    rows += list(syn.make_synthetic_dataset(50, difficulty="easy"))
    for row in rows:
        solution = syn.reference_solution(row)
        assert extract_boxed_content(solution) == row["answer"]
        assert score_accuracy(solution, row["answer"]) == 1.0
        assert solution.startswith("<think>") and "</think> \\boxed{" in solution
        assert 10 <= len(solution.split()) <= 30  # short: a tiny model generates ~24-40 tokens


def test_grader_tells_the_answers_apart():
    level = syn.SyntheticDifficulty(max_count=9, max_digit=9, num_colours=6)
    words = syn.answer_space("colour", 84, level) + syn.answer_space("position", 84, level)
    for given in words:
        for truth in words:
            assert grade_answer(given, truth) == (given == truth), (given, truth)
    numbers = syn.answer_space("digit_sum", 84, level)
    for given, truth in zip(numbers, numbers[1:], strict=False):
        assert grade_answer(given, given) and not grade_answer(given, truth)
    assert not grade_answer("1", "10") and not grade_answer("18", "1")


def test_reference_solution_states_the_facts_read_off_the_picture():
    row = syn.make_synthetic_dataset(4, task_types=["digit_sum"], seed=11)[2]
    digits = [
        read_digit(pixels_of(row), c) for c in components(pixels_of(row)) if c["name"] == "ink"
    ]
    solution = syn.reference_solution(row)
    assert f"They are {digits[0]} and {digits[1]}" in solution


def test_reference_solution_rejects_a_wrong_answer(train_medium):
    row = dict(train_medium[0])
    row["answer"] = "not-the-answer"
    with pytest.raises(ValueError, match="answer"):
        syn.reference_solution(row)
    del row["scene"]
    with pytest.raises(ValueError, match="scene"):
        syn.reference_solution(row)


# --------------------------------------------------------------------------------------------
# Text alone cannot answer
# --------------------------------------------------------------------------------------------


def test_answers_are_balanced_within_each_question_type(train_medium):
    for task_type in syn.TASK_TYPES:
        answers = [
            a
            for a, t in zip(train_medium["answer"], train_medium["task_type"], strict=True)
            if t == task_type
        ]
        counts = Counter(answers)
        assert set(counts) == set(syn.answer_space(task_type))
        assert max(counts.values()) - min(counts.values()) <= 1


def test_text_only_baseline_is_at_chance(train_medium, test_medium):
    chance = syn.chance_accuracy(test_medium)
    assert chance == pytest.approx((1 / 4 + 1 / 4 + 1 / 2 + 1 / 9 + 1 / 4) / 5)
    assert abs(syn.text_only_baseline_accuracy(train_medium, test_medium) - chance) < 0.03
    both = {"train": train_medium, "test": test_medium}
    assert syn.text_only_baseline_accuracy(both) == syn.text_only_baseline_accuracy(
        train_medium, test_medium
    )
    assert abs(syn.text_only_baseline_accuracy(train_medium) - chance) < 0.03
    for task_type in syn.TASK_TYPES:  # per task too: one leaky task must not hide in the mean
        fit = train_medium.select(np.flatnonzero(np.array(train_medium["task_type"]) == task_type))
        score = test_medium.select(np.flatnonzero(np.array(test_medium["task_type"]) == task_type))
        task_chance = 1 / len(syn.answer_space(task_type))
        assert syn.chance_accuracy(score) == pytest.approx(task_chance)
        assert abs(syn.text_only_baseline_accuracy(fit, score) - task_chance) < 0.05, task_type


def test_text_only_baseline_is_at_chance_when_questions_name_colours_and_kinds():
    train = syn.make_synthetic_dataset(1000, split="train", difficulty="hard")
    test = syn.make_synthetic_dataset(500, split="validation", difficulty="hard")
    assert len(set(test["problem"])) > 10
    assert abs(syn.text_only_baseline_accuracy(train, test) - syn.chance_accuracy(test)) < 0.05


def test_text_only_baseline_catches_an_answer_leak():
    leaky = [
        {"problem": f"<image>Which side, hint {side}?", "answer": side, "task_type": "position"}
        for side in ["left"] * 50 + ["right"] * 50
    ]
    assert syn.text_only_baseline_accuracy(leaky) == 1.0
    assert syn.chance_accuracy(leaky) == 0.5


def test_difficulty_knobs_change_the_answer_spaces():
    sizes = {
        level: [len(syn.answer_space(t, 56, level)) for t in syn.TASK_TYPES]
        for level in ("easy", "medium", "hard")
    }
    assert sizes["easy"] == [3, 3, 2, 5, 4]
    assert sizes["medium"] == [4, 4, 2, 9, 4]
    assert sizes["hard"] == [4, 6, 2, 19, 4]
    custom = syn.SyntheticDifficulty(max_count=9, max_digit=1, num_colours=2)
    assert syn.answer_space("count", 84, custom) == tuple(str(i) for i in range(1, 10))
    assert syn.answer_space("count_colour", 84, custom) == tuple(str(i) for i in range(9))


# --------------------------------------------------------------------------------------------
# Files and vocabulary
# --------------------------------------------------------------------------------------------


def test_saved_parquet_loads_like_a_hub_image_dataset(tmp_path):
    files = syn.save_synthetic_dataset(tmp_path / "synthetic", 12, 5, 6, seed=4)
    assert sorted(files) == ["test", "train", "validation"]
    assert sorted(p.name for p in (tmp_path / "synthetic").iterdir()) == [
        "test.parquet",
        "train.parquet",
        "validation.parquet",
    ]
    table = pq.read_table(files["train"])
    assert (
        str(table.schema.field("images").type)
        == "list<element: struct<bytes: binary, path: string>>"
    )
    cell = table.column("images")[0].as_py()[0]
    assert cell["bytes"].startswith(b"\x89PNG\r\n\x1a\n") and cell["path"] is None

    loaded = datasets.load_dataset("parquet", data_dir=str(tmp_path / "synthetic"))
    assert {name: len(split) for name, split in loaded.items()} == {
        "train": 12,
        "validation": 5,
        "test": 6,
    }
    expected = syn.make_synthetic_dataset(5, split="validation", seed=4)
    for got, want in zip(loaded["validation"], expected, strict=True):
        assert np.array_equal(pixels_of(got), pixels_of(want))
        assert (got["problem"], got["answer"], got["id"]) == (
            want["problem"],
            want["answer"],
            want["id"],
        )
        assert syn.reference_solution(got) == syn.reference_solution(want)


def test_vocab_texts_cover_every_word_the_task_uses():
    words = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")
    vocab = {w for text in syn.SYNTHETIC_VOCAB_TEXTS for w in words.findall(text)}
    custom = syn.SyntheticDifficulty(max_count=9, max_digit=9, num_colours=6, distractors=True)
    for difficulty, image_size in (("easy", 56), ("medium", 112), ("hard", 84), (custom, 84)):
        for row in syn.make_synthetic_dataset(
            60, seed=9, image_size=image_size, difficulty=difficulty
        ):
            text = row["problem"] + " " + syn.reference_solution(row)
            missing = set(words.findall(text)) - vocab
            assert not missing, f"{missing} from {text!r}"


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": -1}, "n must be"),
        ({"n": 3, "split": "val"}, "split must be"),
        ({"n": 3, "task_types": ["count", "shape_area"]}, "task_type must be"),
        ({"n": 3, "task_types": ["count", "count"]}, "must not repeat"),
        ({"n": 3, "task_types": []}, "at least one"),
        ({"n": 3, "image_size": 60}, "image_size must be"),
        ({"n": 3, "image_size": 28}, "image_size must be"),
        ({"n": 3, "difficulty": "extreme"}, "difficulty must be"),
        ({"n": 3, "difficulty": syn.SyntheticDifficulty(max_count=5)}, "max_count=5"),
    ],
)
def test_bad_arguments_raise_one_clear_error(kwargs, message):
    n = kwargs.pop("n")
    with pytest.raises(ValueError, match=message):
        syn.make_synthetic_dataset(n, **kwargs)


def test_bad_difficulty_and_example_arguments():
    with pytest.raises(ValueError, match="num_colours"):
        syn.SyntheticDifficulty(num_colours=7)
    with pytest.raises(ValueError, match="max_digit"):
        syn.SyntheticDifficulty(max_digit=0)
    with pytest.raises(ValueError, match="rng must be"):
        syn.generate_example(0, "count")
    with pytest.raises(ValueError, match="not a possible answer"):
        syn.generate_example(random.Random(0), "position", answer="up")
    with pytest.raises(ValueError, match="no 'task_type' column"):
        syn.chance_accuracy(datasets.Dataset.from_dict({"answer": ["1"]}))


# --------------------------------------------------------------------------------------------
# The package layout: the family registry and the lazily built vocabulary
# --------------------------------------------------------------------------------------------


def test_registry_lists_the_families_and_their_task_types():
    assert tuple(syn.TASK_FAMILY_REGISTRY) == syn.TASK_FAMILIES == ("shapes", "reasoning")
    assert syn.TASK_FAMILY_REGISTRY["shapes"].task_types == syn.TASK_TYPES
    assert syn.TASK_FAMILY_REGISTRY["reasoning"].task_types == syn.REASONING_TASK_TYPES
    for name, family in syn.TASK_FAMILY_REGISTRY.items():
        assert isinstance(family, syn.TaskFamily) and family.name == name
        for task_type in family.task_types:
            assert syn.family_of(task_type) is family
            assert syn.task_family(task_type) == name
    versions = {f.stream_version for f in syn.TASK_FAMILY_REGISTRY.values()}
    prefixes = {f.id_prefix for f in syn.TASK_FAMILY_REGISTRY.values()}
    assert len(versions) == len(prefixes) == len(syn.TASK_FAMILIES)
    with pytest.raises(dataclasses.FrozenInstanceError):
        syn.TASK_FAMILY_REGISTRY["shapes"].name = "other"  # type: ignore[misc]


def test_unknown_task_type_message_names_every_task_type():
    expected = (
        "task_type must be one of ['count', 'colour', 'position', 'digit_sum', 'count_colour', "
        "'add_count_digit', 'double_count', 'add_colour_digit'], got 'shape_area'."
    )
    for call in (
        lambda: syn.family_of("shape_area"),
        lambda: syn.task_family("shape_area"),
        lambda: syn.answer_space("shape_area"),
        lambda: syn.generate_example(random.Random(0), "shape_area"),
        lambda: syn.make_synthetic_dataset(1, task_types=["shape_area"]),
        lambda: syn.reference_solution({"task_type": "shape_area", "answer": "1", "scene": "{}"}),
    ):
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == expected


def test_vocab_texts_are_built_on_first_access_only():
    code = (
        "import vppo.data.synthetic as syn\n"
        "assert syn.family_vocab_texts.cache_info().currsize == 0\n"
        "from vppo.data.synthetic import SYNTHETIC_VOCAB_TEXTS\n"
        "assert syn.family_vocab_texts.cache_info().currsize == 1\n"
        "assert SYNTHETIC_VOCAB_TEXTS is syn.synthetic_vocab_texts() is syn.SYNTHETIC_VOCAB_TEXTS\n"
        "assert syn.REASONING_VOCAB_TEXTS is syn.reasoning_vocab_texts()\n"
        "assert syn.family_vocab_texts.cache_info().currsize == 2\n"
        "assert 'SYNTHETIC_VOCAB_TEXTS' in dir(syn)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    with pytest.raises(AttributeError, match="no attribute 'NOT_A_NAME'"):
        syn.NOT_A_NAME  # noqa: B018
