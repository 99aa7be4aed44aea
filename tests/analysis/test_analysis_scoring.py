"""vppo.analysis.scoring on tiny real VLMs: log-probs, perturbations, estimators, generation."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vppo.analysis import (
    ESTIMATORS,
    ResponseRecord,
    generate_responses,
    perturb_pixel_values,
    pixel_value_slices,
    records_to_tensors,
    response_seed,
    score_responses,
    token_strings,
)
from vppo.models import build_tiny_vlm, vision_layout
from vppo.perception import (
    blacken_image_patches,
    blacken_patches,
    dependency_from_passes,
    distribution_dependency,
    solid_grey,
)

ARCHS = ("qwen2_5_vl", "qwen3_vl", "smolvlm")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Tiny matmuls on a shared 2-core machine run far faster without intra-op threads.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def models():
    return {arch: build_tiny_vlm(arch, seed=1) for arch in ARCHS}


def _image(seed: int, size: int = 64) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy(), "RGB")


def _prompt(text: str, num_images: int = 1) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "image"}] * num_images + [{"type": "text", "text": text}],
        }
    ]


def _direct_logits(model, processor, prompt, images, ids, pixel_values=None):
    """Full logits over the response positions from one plain forward (the reference)."""
    text = processor.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[images] if images else None, return_tensors="pt")
    response = torch.tensor([ids])
    kwargs = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    for key in ("mm_token_type_ids", "token_type_ids"):
        if key in kwargs:
            kwargs[key] = torch.cat([kwargs[key], torch.zeros_like(response)], dim=1)
    if pixel_values is not None:
        kwargs["pixel_values"] = pixel_values
    input_ids = torch.cat([inputs["input_ids"], response], dim=1)
    with torch.no_grad():
        logits = model(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs
        ).logits
    return logits[0, -len(ids) - 1 : -1].float(), inputs


def _ids(processor, text: str) -> list[int]:
    tok = processor.tokenizer
    return tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


@pytest.mark.parametrize("arch", ARCHS)
def test_logprobs_and_entropy_equal_the_models_own_logits(models, arch):
    model, processor = models[arch]
    image = _image(0)
    ids = _ids(processor, "I see 3 red circles, so the answer is 3.")
    (record,) = score_responses(
        model, processor, [_prompt("How many?")], [[image]], [ids], progress=False
    )
    logits, _ = _direct_logits(model, processor, _prompt("How many?"), [image], ids)
    logp = logits.log_softmax(-1)
    expected = logp.gather(1, torch.tensor(ids)[:, None]).squeeze(1)
    entropy = -(logp.exp() * logp).sum(-1)
    assert torch.allclose(torch.tensor(record.logp_real), expected, atol=1e-4)
    assert torch.allclose(torch.tensor(record.entropy), entropy, atol=1e-4)
    assert record.token_ids == ids and len(record.tokens) == len(ids)
    assert all(d >= 0 for d in record.dependency) and max(record.dependency) > 0


def test_perturbed_logprobs_use_the_responses_own_seeded_blackening(models):
    model, processor = models["qwen2_5_vl"]
    image = _image(1)
    ids = _ids(processor, "the shape is blue")
    records = score_responses(
        model,
        processor,
        [_prompt("Colour?")] * 2,
        [[image]] * 2,
        [ids, ids],
        seed=7,
        progress=False,
    )
    layout = vision_layout(processor, model.config)
    _, inputs = _direct_logits(model, processor, _prompt("Colour?"), [image], ids)
    for k, record in enumerate(records):
        generator = torch.Generator().manual_seed(response_seed(7, k))
        perturbed, _ = blacken_patches(
            inputs["pixel_values"],
            "qwen_flat",
            layout.image_mean,
            layout.image_std,
            prob=0.5,
            generator=generator,
        )
        logits, _ = _direct_logits(model, processor, _prompt("Colour?"), [image], ids, perturbed)
        expected = logits.log_softmax(-1).gather(1, torch.tensor(ids)[:, None]).squeeze(1)
        assert torch.allclose(torch.tensor(record.logp_perturbed), expected, atol=1e-4)
    # two responses to the same prompt get different masks, hence different scores
    assert records[0].logp_perturbed != records[1].logp_perturbed
    assert records[0].logp_real == pytest.approx(records[1].logp_real, abs=1e-6)


@pytest.mark.parametrize("arch", ["qwen3_vl", "smolvlm"])
def test_scores_do_not_depend_on_batching_and_repeat_with_the_seed(models, arch):
    model, processor = models[arch]
    prompts = [_prompt("How many shapes?"), _prompt("Which side?"), _prompt("Sum of digits?")]
    images = [[_image(2)], [_image(3, 48)], [_image(4)]]
    responses = ["there are 2 shapes", "left", "1 + 3 = 4 so \\boxed{4}"]
    one = score_responses(
        model,
        processor,
        prompts,
        images,
        responses,
        batch_size=1,
        seed=3,
        answers=["2", "right", "4"],
        progress=False,
    )
    three = score_responses(
        model, processor, prompts, images, responses, batch_size=3, seed=3, progress=False
    )
    other = score_responses(
        model, processor, prompts, images, responses, batch_size=3, seed=4, progress=False
    )
    a, b, c = (records_to_tensors(r) for r in (one, three, other))
    assert torch.allclose(a["dep"], b["dep"], atol=1e-6)
    assert torch.allclose(a["logp_real"], b["logp_real"], atol=1e-5)
    assert not torch.allclose(a["dep"], c["dep"])
    assert [r.correct for r in one] == [False, False, True]
    assert all(r.correct is None for r in three)


@pytest.mark.parametrize("arch, estimator", [("smolvlm", "kl"), ("qwen2_5_vl", "jsd")])
def test_exact_estimators_equal_the_full_logit_divergence(models, arch, estimator):
    model, processor = models[arch]
    image = _image(5)
    ids = _ids(processor, "a green square on the left")
    (record,) = score_responses(
        model,
        processor,
        [_prompt("Where?")],
        [[image]],
        [ids],
        estimator=estimator,
        seed=11,
        progress=False,
    )
    layout = vision_layout(processor, model.config)
    real, inputs = _direct_logits(model, processor, _prompt("Where?"), [image], ids)
    generator = torch.Generator().manual_seed(response_seed(11, 0))
    perturbed = perturb_pixel_values(
        inputs["pixel_values"],
        layout,
        "blacken",
        0.5,
        generator,
        inputs.get("pixel_attention_mask"),
    )
    pert, _ = _direct_logits(model, processor, _prompt("Where?"), [image], ids, perturbed)
    mask = torch.ones(1, len(ids), dtype=torch.bool)
    expected = distribution_dependency(real[None], pert[None], mask, estimator=estimator)[0]
    assert torch.allclose(torch.tensor(record.dependency), expected, atol=1e-5)


def test_text_only_responses_have_zero_dependency(models):
    model, processor = models["qwen2_5_vl"]
    records = score_responses(
        model,
        processor,
        ["What is 2 + 2?", _prompt("Count.")],
        [[], [_image(6)]],
        ["4", "3"],
        batch_size=2,
        progress=False,
    )
    text_only, with_image = records
    assert text_only.num_images == 0 and with_image.num_images == 1
    assert text_only.dependency == [0.0] * len(text_only.token_ids)
    assert text_only.logp_perturbed == text_only.logp_real
    assert text_only.trajectory_dependency == 0.0
    assert with_image.trajectory_dependency > 0.0


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_every_estimator_goes_through_the_shared_dispatch(models, monkeypatch, estimator):
    import vppo.analysis.scoring as scoring

    calls = []

    def spy(name, **passes):
        calls.append((name, sorted(k for k, v in passes.items() if v is not None)))
        out = dependency_from_passes(name, **passes)
        calls[-1] += (out,)
        return out

    monkeypatch.setattr(scoring, "dependency_from_passes", spy)
    model, processor = models["qwen2_5_vl"]
    records = score_responses(
        model,
        processor,
        [_prompt("Count."), "What is 2 + 2?"],
        [[_image(6)], []],
        ["3", "4"],
        estimator=estimator,
        batch_size=2,
        progress=False,
    )
    (call,) = calls  # the text-only batch has nothing to perturb
    name, passed, out = call
    assert name == estimator
    assert {
        "mask",
        "logp_real",
        "logp_perturbed",
        "hidden_real",
        "hidden_perturbed",
        "lm_head_weight",
    } <= set(passed)
    assert records[0].dependency == out[0, : len(records[0].token_ids)].float().tolist()
    assert records[1].dependency == [0.0] * len(records[1].token_ids)


def test_text_responses_are_tokenised_with_one_eos_and_equal_their_ids(models):
    model, processor = models["qwen2_5_vl"]
    tok = processor.tokenizer
    text = "I count 4 shapes."
    ids = _ids(processor, text)
    by_text, by_ids, already = score_responses(
        model,
        processor,
        [_prompt("Count.")] * 3,
        [[_image(7)]] * 3,
        [text, ids, text + tok.eos_token],
        progress=False,
    )
    assert by_text.token_ids == ids == already.token_ids
    assert by_text.logp_real == pytest.approx(by_ids.logp_real, abs=1e-6)
    (alone,) = score_responses(
        model, processor, [_prompt("Count.")], [[_image(7)]], [ids], progress=False
    )
    assert alone.dependency == pytest.approx(by_text.dependency, abs=1e-7)  # same index, same mask
    assert by_ids.response == text  # decoded without special tokens


def test_token_strings_concatenate_to_the_decoded_response(models):
    _, processor = models["qwen2_5_vl"]
    tok = processor.tokenizer
    text = "Ångström: 3 × 4 = 12 ✓\nnext line"
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    pieces = token_strings(tok, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=False)
    assert pieces[-1] == tok.eos_token
    assert "" in pieces  # a multi-byte character split over byte tokens shows on its last byte


def test_multi_image_rows_are_split_per_response(models):
    model, processor = models["qwen2_5_vl"]
    images = [[_image(8), _image(9, 32)], [_image(10)]]
    text = [
        processor.apply_chat_template(
            _prompt("Compare.", len(i)), tokenize=False, add_generation_prompt=True
        )
        for i in images
    ]
    inputs = processor(text=text, images=images, padding=True, return_tensors="pt")
    layout = vision_layout(processor, model.config)
    slices = pixel_value_slices(layout, [2, 1], inputs["image_grid_thw"])
    sizes = inputs["image_grid_thw"].prod(-1).tolist()
    assert slices == [slice(0, sizes[0] + sizes[1]), slice(sizes[0] + sizes[1], sum(sizes))]
    records = score_responses(
        model,
        processor,
        [_prompt("Compare.", 2), _prompt("Compare.")],
        images,
        ["same", "different"],
        batch_size=2,
        progress=False,
    )
    alone = score_responses(
        model, processor, [_prompt("Compare.")], [images[1]], ["different"], progress=False
    )
    assert records[0].num_images == 2
    assert records[1].logp_real == pytest.approx(alone[0].logp_real, abs=1e-5)


def test_image_space_perturbations_re_run_the_processor(models):
    model, processor = models["qwen2_5_vl"]
    layout = vision_layout(processor, model.config)
    image = _image(11)
    pv = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    grey = perturb_pixel_values(
        pv, layout, "grey", images=[[image]], image_processor=processor.image_processor
    )
    expected = processor.image_processor(images=[solid_grey(image)], return_tensors="pt")[
        "pixel_values"
    ]
    assert torch.equal(grey, expected)
    blackened = perturb_pixel_values(pv, layout, "blacken", prob=1.0)
    black = torch.tensor(layout.black_value).repeat_interleave(pv.shape[1] // 3)
    assert torch.allclose(blackened, black.expand_as(pv))
    assert torch.equal(perturb_pixel_values(pv, layout, "blacken", prob=0.0), pv)
    ids = _ids(processor, "red")
    (record,) = score_responses(
        model,
        processor,
        [_prompt("Colour?")],
        [[image]],
        [ids],
        perturbation="blacken_image",
        seed=2,
        progress=False,
    )
    generator = torch.Generator().manual_seed(response_seed(2, 0))
    official = blacken_image_patches(image, patch_size=14, prob=0.5, generator=generator)
    reprocessed = processor.image_processor(images=[official], return_tensors="pt")["pixel_values"]
    logits, _ = _direct_logits(model, processor, _prompt("Colour?"), [image], ids, reprocessed)
    expected = logits.log_softmax(-1).gather(1, torch.tensor(ids)[:, None]).squeeze(1)
    assert torch.allclose(torch.tensor(record.logp_perturbed), expected, atol=1e-4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, p, v, pv: perturb_pixel_values(pv, v, "shuffle"), "perturbation is 'shuffle'"),
        (lambda m, p, v, pv: perturb_pixel_values(pv, v, "blacken", patch_size=7), "patch_size=7"),
        (
            lambda m, p, v, pv: perturb_pixel_values(pv, v, "noise"),
            "pass images= and image_processor=",
        ),
        (
            lambda m, p, v, pv: score_responses(
                m, p, [_prompt("q")], [[_image(0)]], [""], progress=False
            ),
            "response 0 is empty",
        ),
        (
            lambda m, p, v, pv: score_responses(
                m, p, [_prompt("q")], [[_image(0)]], [[]], progress=False
            ),
            "response 0 has no tokens",
        ),
        (
            lambda m, p, v, pv: score_responses(
                m, p, [_prompt("q")], [[_image(0)]], ["a <|image_pad|>"], progress=False
            ),
            "vision placeholder",
        ),
        (
            lambda m, p, v, pv: score_responses(
                m, p, [_prompt("q")], [[_image(0)]], ["a"], estimator="l2", progress=False
            ),
            "estimator is 'l2'",
        ),
        (
            lambda m, p, v, pv: score_responses(
                m, p, [_prompt("q")] * 2, [[_image(0)]], ["a", "b"], progress=False
            ),
            "images has 1 entries",
        ),
        (
            lambda m, p, v, pv: score_responses(
                m, p, [_prompt("q")], [["x.png"]], ["a"], progress=False
            ),
            r"images\[0\]\[0\] is a str",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(models, call, match):
    model, processor = models["qwen2_5_vl"]
    layout = vision_layout(processor, model.config)
    pv = processor.image_processor(images=[_image(0)], return_tensors="pt")["pixel_values"]
    with pytest.raises(ValueError, match=match):
        call(model, processor, layout, pv)


def test_generation_is_seeded_prompt_major_and_free_of_vision_tokens(models):
    model, processor = models["smolvlm"]
    prompts = [_prompt("How many?"), _prompt("Colour?")]
    images = [[_image(12)], [_image(13)]]
    first = generate_responses(
        model,
        processor,
        prompts,
        images,
        num_generations=2,
        max_new_tokens=6,
        seed=5,
        batch_size=3,
        progress=False,
    )
    again = generate_responses(
        model,
        processor,
        prompts,
        images,
        num_generations=2,
        max_new_tokens=6,
        seed=5,
        batch_size=3,
        progress=False,
    )
    assert first == again and len(first) == 4
    banned = set(vision_layout(processor, model.config).pad_token_ids_to_ban)
    eos = set(
        model.generation_config.eos_token_id
        if isinstance(model.generation_config.eos_token_id, list)
        else [model.generation_config.eos_token_id]
    )
    for ids in first:
        assert 1 <= len(ids) <= 6 and not set(ids) & banned
        assert all(t not in eos for t in ids[:-1])  # cut right after the first EOS
    records = score_responses(
        model,
        processor,
        [prompts[0]] * 2 + [prompts[1]] * 2,
        [images[0]] * 2 + [images[1]] * 2,
        first,
        progress=False,
    )
    assert [r.token_ids for r in records] == first


def test_record_round_trip_and_length_check():
    record = ResponseRecord(
        index=0,
        row=2,
        sample=1,
        question="q",
        response="ab",
        answer="a",
        correct=False,
        num_images=1,
        token_ids=[5, 6],
        tokens=["a", "b"],
        logp_real=[-1.0, -2.0],
        logp_perturbed=[-1.5, -2.0],
        dependency=[0.1, 0.0],
        entropy=[0.5, 0.4],
    )
    data = record.to_dict()
    assert data["trajectory_dependency"] == pytest.approx(0.05)
    assert ResponseRecord.from_dict(data) == record
    assert record.token_records()[0].dependency == pytest.approx(0.1)
    with pytest.raises(ValueError, match="field 'tokens' has 1 entries"):
        ResponseRecord(
            index=3,
            row=0,
            sample=0,
            question="",
            response="",
            answer=None,
            correct=None,
            num_images=0,
            token_ids=[1, 2],
            tokens=["x"],
            logp_real=[0, 0],
            logp_perturbed=[0, 0],
            dependency=[0, 0],
            entropy=[0, 0],
        )


# Qwen3.5 (gated-delta-net linear attention mixed with full attention): the same checks as the
# architectures above, on its own tiny model.
@pytest.fixture(scope="module")
def qwen3_5_models():
    return {"qwen3_5": build_tiny_vlm("qwen3_5", seed=1)}


def test_qwen3_5_logprobs_and_entropy_equal_the_models_own_logits(qwen3_5_models):
    test_logprobs_and_entropy_equal_the_models_own_logits(qwen3_5_models, "qwen3_5")


def test_qwen3_5_scores_do_not_depend_on_batching_and_repeat_with_the_seed(qwen3_5_models):
    # Left padding through the recurrent layers: one row at a time equals three padded together.
    test_scores_do_not_depend_on_batching_and_repeat_with_the_seed(qwen3_5_models, "qwen3_5")


@pytest.mark.parametrize("estimator", ["kl", "jsd"])
def test_qwen3_5_exact_estimators_equal_the_full_logit_divergence(qwen3_5_models, estimator):
    test_exact_estimators_equal_the_full_logit_divergence(qwen3_5_models, "qwen3_5", estimator)


# perturbation="none": the reference is the prompt without its image and placeholder tokens.
def _text_only_logits(model, processor, arch, prompt, ids):
    """Full logits over the response positions of one unpadded forward of the text-only prompt.

    Qwen: the prompt the chat template makes without the image. SmolVLM: the templated prompt
    with its "<image>" placeholders cut out (its template writes "User:<image>..." with an image
    first but "User: ..." without one; the removed tokens leave the first form)."""
    if arch == "smolvlm":
        text = processor.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        text = text.replace("<image>", "")
    else:
        no_image = [
            {**m, "content": [p for p in m["content"] if p["type"] != "image"]} for m in prompt
        ]
        text = processor.apply_chat_template(no_image, tokenize=False, add_generation_prompt=True)
    prompt_ids = processor(text=[text], return_tensors="pt")["input_ids"]
    input_ids = torch.cat([prompt_ids, torch.tensor([ids])], dim=1)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
    return logits[0, -len(ids) - 1 : -1].float()


class _NoGradForwards:
    def __init__(self, model):
        self.calls = []
        self.handle = model.register_forward_pre_hook(self._keep, with_kwargs=True)

    def _keep(self, module, args, kwargs):
        self.calls.append(dict(kwargs))


@pytest.mark.parametrize("arch", ARCHS)
def test_no_image_reference_is_the_text_only_prompt(models, arch):
    """Rows with one and two images batched together (left padding); k3 and the exact KL."""
    model, processor = models[arch]
    prompts = [_prompt("How many?"), _prompt("Which is larger?", 2)]
    images = [[_image(10)], [_image(11), _image(12)]]
    ids = [_ids(processor, "three circles"), _ids(processor, "the left one, clearly")]
    vision_ids = torch.tensor(vision_layout(processor, model.config).pad_token_ids_to_ban)
    forwards = _NoGradForwards(model)
    try:
        by_estimator = {
            estimator: score_responses(
                model,
                processor,
                prompts,
                images,
                ids,
                estimator=estimator,
                perturbation="none",
                batch_size=2,
                progress=False,
            )
            for estimator in ("k3", "kl")
        }
    finally:
        forwards.handle.remove()
    # per batch: the real forward with the images, then one with neither images nor their tokens
    assert len(forwards.calls) == 4
    for real, none in (forwards.calls[0:2], forwards.calls[2:4]):
        assert "pixel_values" in real
        assert not any(
            k in none for k in ("pixel_values", "image_grid_thw", "pixel_attention_mask")
        )
        assert not torch.isin(none["input_ids"], vision_ids).any()
        assert none["input_ids"].size(1) < real["input_ids"].size(1)
        for key in ("mm_token_type_ids", "token_type_ids"):
            if key in none:
                assert none[key].shape == none["input_ids"].shape and not none[key].any()
    worst = 0.0
    for k, (prompt, row_images, row_ids) in enumerate(zip(prompts, images, ids, strict=True)):
        tokens = torch.tensor(row_ids)[:, None]
        none = _text_only_logits(model, processor, arch, prompt, row_ids).log_softmax(-1)
        real = _direct_logits(model, processor, prompt, row_images, row_ids)[0].log_softmax(-1)
        k3, kl = by_estimator["k3"][k], by_estimator["kl"][k]
        expected = none.gather(1, tokens).squeeze(1)
        worst = max(worst, float((torch.tensor(k3.logp_perturbed) - expected).abs().max()))
        assert torch.allclose(torch.tensor(kl.logp_perturbed), torch.tensor(k3.logp_perturbed))
        mask = torch.ones(1, len(row_ids), dtype=torch.bool)
        expected_k3 = dependency_from_passes(
            "k3",
            mask=mask,
            logp_real=torch.tensor([k3.logp_real]),
            logp_perturbed=expected[None],
            clip=10.0,
        )[0]
        assert torch.allclose(torch.tensor(k3.dependency), expected_k3, atol=1e-5)
        expected_kl = (real.exp() * (real - none)).sum(-1)
        assert torch.allclose(torch.tensor(kl.dependency), expected_kl, atol=1e-5)
        assert max(kl.dependency) > 0
    assert worst <= 1e-5, worst


def test_no_image_scores_do_not_depend_on_batching_and_text_only_rows_score_zero(models):
    model, processor = models["qwen2_5_vl"]
    prompts = [_prompt("Count.", 2), "What is 2 + 2?", _prompt("Colour?")]
    images = [[_image(13), _image(14)], [], [_image(15)]]
    responses = ["2", "4", "blue"]
    runs = [
        score_responses(
            model,
            processor,
            prompts,
            images,
            responses,
            perturbation="none",
            batch_size=size,
            progress=False,
        )
        for size in (1, 3)
    ]
    for one, together in zip(*runs, strict=True):
        assert torch.allclose(
            torch.tensor(one.logp_perturbed), torch.tensor(together.logp_perturbed), atol=1e-5
        )
        assert torch.allclose(
            torch.tensor(one.dependency), torch.tensor(together.dependency), atol=1e-5
        )
    text_only = runs[1][1]
    assert text_only.num_images == 0 and text_only.dependency == [0.0] * len(text_only.token_ids)
    assert text_only.logp_perturbed == text_only.logp_real
    assert all(r.trajectory_dependency > 0 for r in (runs[1][0], runs[1][2]))


def test_analyze_accepts_perturbation_none():
    from vppo.analysis.cli import build_parser

    args = build_parser().parse_args(
        ["--model", "m", "--dataset", "synthetic", "--perturbation", "none"]
    )
    assert args.perturbation == "none"


def test_qwen3_5_no_image_reference_is_the_text_only_prompt(qwen3_5_models):
    test_no_image_reference_is_the_text_only_prompt(qwen3_5_models, "qwen3_5")
