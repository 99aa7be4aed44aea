"""Tests of the synthetic task's "reasoning" family and of the shapes family staying unchanged.

The reasoning family's pictures use the shapes family's rasteriser, so the pixel-level reader of
tests/data/test_data_synthetic.py is reused to check that the labels say what the pictures show.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from vppo.data import synthetic as syn
from vppo.rewards import extract_boxed_content, score_accuracy

MAX_SOLUTION_TOKENS = 80  # the RL budget of the reasoning family is 80-96 completion tokens


@pytest.fixture(scope="module")
def train_rows() -> list[dict]:
    return list(syn.make_synthetic_dataset(360, split="train", seed=0, family="reasoning"))


@pytest.fixture(scope="module")
def tokenizer():
    from vppo.models.tiny import train_bpe_tokenizer

    return train_bpe_tokenizer(
        syn.SYNTHETIC_VOCAB_TEXTS + syn.REASONING_VOCAB_TEXTS,
        768,
        ["<|endoftext|>", "<|im_end|>"],
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template="",
    )


def _shapes_digest() -> tuple[str, str]:
    digest = hashlib.sha256()
    for split in syn.SPLITS:
        dataset = syn.make_synthetic_dataset(10, split=split, seed=3)
        for row in dataset.with_format("arrow")[:].to_pylist():
            fields = {k: row[k] for k in ("problem", "answer", "task_type", "id", "scene")}
            digest.update(json.dumps(fields, sort_keys=True).encode())
            digest.update(row["images"][0]["bytes"])
        for row in dataset:
            digest.update(syn.reference_solution(row).encode())
    vocab = hashlib.sha256("\n".join(syn.SYNTHETIC_VOCAB_TEXTS).encode()).hexdigest()
    return digest.hexdigest(), vocab


def test_shapes_family_output_is_unchanged():
    # Computed before the reasoning family was added: finished experiment runs depend on these
    # rows, their PNG bytes, their reference solutions and the tiny tokenizer's corpus.
    rows, vocab = _shapes_digest()
    assert rows == "5ebb4fcf3e96d08fbe52c258cb7b8961727f4a7563e7ab080687fa3f19e75652"
    assert vocab == "62b4dddce0c9eda4bd4dfb7d52fb5ab8ced3f17d4b018e5bcd7c867023f72ccd"
    assert syn.TASK_FAMILIES == ("shapes", "reasoning")
    default = syn.make_synthetic_dataset(6, seed=3)
    explicit = syn.make_synthetic_dataset(6, seed=3, family="shapes")
    assert default["scene"] == explicit["scene"] and default["id"] == explicit["id"]


def test_same_arguments_give_identical_rows_and_solutions():
    a = syn.make_synthetic_dataset(24, split="validation", seed=5, family="reasoning")
    b = syn.make_synthetic_dataset(24, split="validation", seed=5, family="reasoning")
    assert a.with_format("arrow")[:].equals(b.with_format("arrow")[:])
    assert [syn.reference_solution(r) for r in a] == [syn.reference_solution(r) for r in b]
    assert a[0]["id"] == "reasoning-validation-5-000000"
    assert set(a["task_type"]) == set(syn.REASONING_TASK_TYPES)
    prefix = syn.make_synthetic_dataset(10, split="validation", seed=5, family="reasoning")
    assert prefix["scene"] == a["scene"][:10]


def test_reasoning_hashes_differ_from_the_shapes_family():
    shapes = syn.make_synthetic_dataset(20, seed=0)
    reasoning = syn.make_synthetic_dataset(20, seed=0, family="reasoning")
    assert not set(shapes["scene"]) & set(reasoning["scene"])
    assert not set(shapes["problem"]) & set(reasoning["problem"])


def _pixels_key(row) -> bytes:
    return np.asarray(row["images"][0]).tobytes() + row["problem"].encode()


def test_splits_never_share_an_image_question_pair():
    keys = {}
    for split in syn.SPLITS:
        rows = syn.make_synthetic_dataset(150, split=split, seed=len(split), family="reasoning")
        keys[split] = {_pixels_key(r) for r in rows}
        for row in rows:
            scene = json.loads(row["scene"])
            assert syn._split_of(syn._scene_key(row["problem"], scene)) == split
    assert not keys["train"] & keys["validation"]
    assert not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]


def test_pictures_show_the_facts_the_answer_is_computed_from(train_rows):
    from test_data_synthetic import components, read_digit  # the independent pixel reader

    for row in train_rows[:120]:
        pixels = np.asarray(row["images"][0])
        comps = components(pixels)
        shapes = [c["name"] for c in comps if c["name"] != "ink"]
        digits = [read_digit(pixels, c) for c in comps if c["name"] == "ink"]
        answer = int(row["answer"])
        if row["task_type"] == "double_count":
            assert not digits and answer == 2 * len(shapes)
            continue
        (digit,) = digits
        named = re.search(r"number of (\w+) shapes", row["problem"])
        if row["task_type"] == "add_count_digit":
            assert named is None
            assert answer == digit + len(shapes)
        else:
            n_target = sum(s == named.group(1) for s in shapes)
            assert answer == digit + n_target and len(shapes) > n_target


def test_answers_are_balanced_and_text_only_is_at_chance(train_rows):
    by_task = Counter((r["task_type"], r["answer"]) for r in train_rows)
    for task_type in syn.REASONING_TASK_TYPES:
        counts = [by_task[(task_type, a)] for a in syn.answer_space(task_type)]
        assert min(counts) > 0 and max(counts) - min(counts) <= 1, (task_type, counts)
    test = list(syn.make_synthetic_dataset(360, split="test", seed=1, family="reasoning"))
    chance = syn.chance_accuracy(test)
    assert chance == pytest.approx((1 / 7 + 1 / 4 + 1 / 7) / 3)
    assert syn.text_only_baseline_accuracy(train_rows, test) <= chance + 0.03
    assert syn.text_only_baseline_accuracy(train_rows) <= chance + 0.03


def test_reference_solutions_are_graded_correct_and_fit_the_budget(train_rows, tokenizer):
    lengths = []
    rows = train_rows + list(
        syn.make_synthetic_dataset(60, seed=2, family="reasoning", difficulty="hard", image_size=84)
    )
    for row in rows:
        solution = syn.reference_solution(row)
        assert extract_boxed_content(solution) == row["answer"]
        assert score_accuracy(solution, row["answer"]) == 1.0
        assert solution.startswith("<think>") and "</think> \\boxed{" in solution
        lengths.append(len(tokenizer(solution, add_special_tokens=False)["input_ids"]))
    assert max(lengths) <= MAX_SOLUTION_TOKENS
    assert 55 <= sum(lengths) / len(lengths) <= 72  # long: mostly answer-irrelevant text


def test_phrasing_varies_but_the_grounded_facts_do_not(train_rows):
    row = train_rows[0]
    solutions = {syn.reference_solution(row, rng=random.Random(i)) for i in range(40)}
    assert len(solutions) >= 30  # many equivalent phrasings
    facts = {re.search(r"\. (I \w+ \d.*?\.) ", s).group(1).split(" ", 2)[2] for s in solutions}
    assert len(facts) == 1  # counts and digit read off the picture, in one wording
    assert all(extract_boxed_content(s) == row["answer"] for s in solutions)
    assert syn.reference_solution(row) == syn.reference_solution(dict(row))  # seeded by the row


def test_every_solution_word_is_one_token(train_rows, tokenizer):
    words = re.compile(r"[A-Za-z]+")
    for row in train_rows[:120]:
        text = row["problem"] + " " + syn.reference_solution(row)
        pieces = tokenizer.convert_ids_to_tokens(
            tokenizer(text, add_special_tokens=False)["input_ids"]
        )
        whole = {p.removeprefix("Ġ") for p in pieces}
        for word in set(words.findall(text)):  # never split into sub-word pieces
            assert word in whole or word in ("think", "boxed"), word
        ids = tokenizer(syn.reference_solution(row), add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids


def test_reference_solution_rejects_a_wrong_answer(train_rows):
    row = dict(train_rows[1])
    row["answer"] = str(int(row["answer"]) + 1)
    with pytest.raises(ValueError, match="scene shows"):
        syn.reference_solution(row)


def test_family_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="family must be"):
        syn.make_synthetic_dataset(2, family="maths")
    with pytest.raises(ValueError, match="family 'reasoning'"):
        syn.make_synthetic_dataset(2, family="reasoning", task_types=["count"])
    with pytest.raises(ValueError, match="family 'shapes'"):
        syn.make_synthetic_dataset(2, task_types=["double_count"])
    assert syn.task_family("double_count") == "reasoning" and syn.task_family("count") == "shapes"
    written = syn.save_synthetic_dataset(tmp_path / "r", 3, 0, 2, family="reasoning")
    assert sorted(written) == ["test", "train"]


def test_shipped_reasoning_checkpoint_loads_and_generates():
    import torch

    from vppo.models import load_model_and_processor
    from vppo.toy.demo import default_checkpoint, synthetic_split
    from vppo.toy.warmstart import prompt_messages, read_warmstart_info

    folder = default_checkpoint("reasoning")
    assert folder == Path(str(resources.files("vppo") / "assets" / "warmstart_reasoning"))
    assert default_checkpoint() == Path(str(resources.files("vppo") / "assets" / "warmstart"))
    info = read_warmstart_info(folder)
    assert info["config"]["family"] == "reasoning" and 0.0 < info["pass_rate"] < 1.0
    model, processor = load_model_and_processor(folder, dtype="float32")
    row = synthetic_split("test", 1, 0, family="reasoning")[0]
    assert row["task_type"] in syn.REASONING_TASK_TYPES
    text = processor.apply_chat_template(
        prompt_messages(row["problem"]), tokenize=False, add_generation_prompt=True
    )
    inputs = processor(text=[text], images=[row["images"]], return_tensors="pt")
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=96, do_sample=False)
    completion = processor.tokenizer.decode(
        out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    )
    assert completion.startswith("<think>") and "\\boxed{" in completion


def test_warm_start_config_family_defaults():
    from vppo.toy.warmstart import WarmStartConfig, build_parser

    shapes = WarmStartConfig()
    assert (shapes.family, shapes.vocab_size, shapes.max_new_tokens) == ("shapes", 512, 48)
    reasoning = WarmStartConfig(family="reasoning")
    assert (reasoning.vocab_size, reasoning.max_new_tokens) == (768, 96)
    assert WarmStartConfig(family="reasoning", task_types=["double_count"]).task_types == (
        "double_count",
    )
    with pytest.raises(ValueError, match="family"):
        WarmStartConfig(family="maths")
    with pytest.raises(ValueError, match="task_types"):
        WarmStartConfig(family="reasoning", task_types=("count",))
    args = build_parser().parse_args(["--output", "x", "--family", "reasoning"])
    assert args.family == "reasoning"


def test_reasoning_family_record():
    family = syn.TASK_FAMILY_REGISTRY["reasoning"]
    assert syn.family_of("add_colour_digit") is family
    assert family.stream_version == "vppo-synthetic-reasoning/v1"
    assert family.id_prefix == "reasoning"
    row = syn.make_synthetic_dataset(1, seed=5, family="reasoning")[0]
    assert row["id"] == "reasoning-train-5-000000"
    assert syn.family_vocab_texts("reasoning") is syn.REASONING_VOCAB_TEXTS
    with pytest.raises(ValueError, match="family must be one of"):
        syn.family_vocab_texts("maths")
