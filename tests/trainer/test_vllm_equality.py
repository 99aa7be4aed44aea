"""Real vLLM (CPU build, float32) computes what the trainer computes, on the same rows.

A batch mixes rows with one image, two images of other sizes and none. For TRL's colocate
training path and for `vppo eval --backend vllm`:

- the prompt ids vLLM ran equal the trainer's (the processor's) prompt ids, row for row;
- the log-probability vLLM reports for every sampled token equals the trainer's recomputation.

Compared like with like: the trainer bans the vision placeholder ids with a logit bias of -100,
and TRL asks vLLM for *processed* log-probs (after that bias), while the trainer's old log-probs are
over the whole vocabulary. So the training check compares vLLM with the model's log-softmax of
the biased logits, and the importance-sampling ratio TRL computes is compared with
1 − p(banned tokens), what the bias alone makes it; the evaluation backend reports raw log-probs,
compared with the plain log-softmax. Measured on this machine: max |Δ log p| ≈ 1e-6 (tolerance
TOLERANCE); without the prompt fix the same check fails by 0.1-1 nats.

The canary test pins the upstream behaviour the fix works around (huggingface/trl#6294): TRL's
own colocate path hands vLLM pre-expanded ids, which vLLM 0.30 expands again (2N − 1 per image).
"""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from PIL import Image
from trl import GRPOTrainer

from vppo.evaluation import GenerationRequest, SamplingConfig, VLLMBackend
from vppo.models import build_tiny_vlm, load_model_and_processor
from vppo.trainer import VPPOConfig, VPPOTrainer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("vllm_engine_ready")]

# float32 on both sides; vLLM's CPU kernels and transformers' differ in summation order only.
TOLERANCE = 1e-4
MAX_NEW_TOKENS = 12


def _images():
    """Three images of three sizes (Qwen2.5-VL: 4, 6 and 12 image tokens)."""
    return (
        Image.new("RGB", (56, 56), (10, 200, 30)),
        Image.new("RGB", (84, 56), (200, 20, 30)),
        Image.new("RGB", (112, 84), (1, 2, 250)),
    )


def _rows():
    """(messages, images) of a one-image, a two-image and a text-only question."""
    one, two_a, two_b = _images()
    image = {"type": "image"}
    return [
        ([{"role": "user", "content": [image, {"type": "text", "text": "Colour?"}]}], [one]),
        (
            [
                {
                    "role": "user",
                    "content": [image, image, {"type": "text", "text": "Which is larger?"}],
                }
            ],
            [two_a, two_b],
        ),
        ([{"role": "user", "content": [{"type": "text", "text": "What is 2 + 3?"}]}], []),
    ]


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def tiny(request, tmp_path_factory):
    """A tiny random Qwen2.5-VL or Qwen3-VL saved to disk (vLLM loads it from there)."""
    folder = tmp_path_factory.mktemp(f"tiny_{request.param}")
    model, processor = build_tiny_vlm(
        request.param, save_dir=folder, min_pixels=56 * 56, max_pixels=112 * 112
    )
    model.name_or_path = model.config._name_or_path = str(folder)
    return folder, model, processor


def _processor_ids(processor, messages, images) -> list[int]:
    conversation = [{**m, "content": [dict(p) for p in m["content"]]} for m in messages]
    it = iter(images)
    for message in conversation:
        for part in message["content"]:
            if part["type"] == "image":
                part["image"] = next(it)
    out = processor.apply_chat_template(
        [conversation], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(out["input_ids"][0])


@pytest.fixture(scope="module")
def colocate(tiny, tmp_path_factory):
    """One VPPO step with vLLM colocate on the mixed rows; what vLLM ran and what the trainer scored."""
    folder, model, processor = tiny
    rows = _rows()
    data = Dataset.from_list([{"prompt": messages, "images": images} for messages, images in rows])
    args = VPPOConfig(
        output_dir=str(tmp_path_factory.mktemp("colocate")),
        use_vllm=True,
        vllm_mode="colocate",
        vllm_max_model_length=512,
        vllm_importance_sampling_correction=True,
        vllm_importance_sampling_mode="token_truncate",  # per-token ratios, to compare token by token
        per_device_train_batch_size=6,
        num_generations=2,
        max_completion_length=MAX_NEW_TOKENS,
        max_steps=1,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        dynamic_sampling=False,
        seed=0,
        temperature=1.0,
        top_p=1.0,
        shuffle_dataset=False,
    )
    trainer = VPPOTrainer(
        model=model,
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        args=args,
        train_dataset=data,
        processing_class=processor,
    )
    llm = trainer.vllm_generation.llm
    ran, scored = [], []
    llm_generate, score = llm.generate, trainer._generate_and_score_completions

    def recording_generate(prompts, *a, **kw):
        outputs = llm_generate(prompts, *a, **kw)
        ran.extend(list(out.prompt_token_ids) for out in outputs)
        return outputs

    def recording_score(inputs):
        output = score(inputs)
        kept = {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in output.items()}
        # the model's own distributions, before the update changes it
        kept["biased_logps"], kept["full_logps"] = _biased_and_full_logps(trainer, kept)
        scored.append((inputs, kept))
        return output

    llm.generate = recording_generate
    trainer._generate_and_score_completions = recording_score
    trainer.train()
    del llm.generate, trainer._generate_and_score_completions
    yield trainer, rows, ran, scored
    from conftest import shutdown_vllm

    shutdown_vllm(trainer)


def test_colocate_vllm_runs_the_trainers_prompt_ids(colocate, tiny):
    _, _, processor = tiny
    trainer, rows, ran, scored = colocate
    ((inputs, output),) = scored
    prompt_ids, prompt_mask = output["prompt_ids"], output["prompt_mask"].bool()
    trainer_ids = [prompt_ids[i][prompt_mask[i]].tolist() for i in range(prompt_ids.size(0))]
    assert len(ran) == len(trainer_ids) == 6
    assert ran == trainer_ids
    # ...and those are the processor's ids for each row, whichever order the sampler chose
    expected = {
        len(_processor_ids(processor, m, im)): _processor_ids(processor, m, im) for m, im in rows
    }
    assert sorted(len(ids) for ids in trainer_ids) == sorted(list(expected) * 2)
    for ids in trainer_ids:
        assert ids == expected[len(ids)]
    placeholder = trainer.vision.image_token_id
    counts = sorted(ids.count(placeholder) for ids in ran)
    assert counts == sorted(ids.count(placeholder) for ids in expected.values() for _ in range(2))
    assert counts[0] == 0 and counts[2] > 0 and counts[4] > counts[2]  # none, one image, two images


def _biased_and_full_logps(trainer, output):
    """Per sampled token: log-softmax of the biased logits (what vLLM samples from) and of the plain
    logits (the trainer's old log-probs), from one float32 forward of the trainer's model."""
    ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
    attention = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
    kwargs = {
        k: output[k] for k in ("pixel_values", "image_grid_thw", "mm_token_type_ids") if k in output
    }
    width = output["completion_ids"].size(1)
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=attention, **kwargs).logits.float()
    logits = logits[:, -width - 1 : -1] / trainer.temperature
    bias = torch.zeros(logits.size(-1))
    bias[list(trainer.vision.pad_token_ids_to_ban)] = -100.0
    token = output["completion_ids"].unsqueeze(-1)
    full = torch.log_softmax(logits, -1).gather(-1, token).squeeze(-1)
    biased = torch.log_softmax(logits + bias, -1).gather(-1, token).squeeze(-1)
    return biased, full


def test_colocate_sampled_logprobs_equal_the_trainers(colocate):
    trainer, _, _, scored = colocate
    ((_, output),) = scored
    mask = output["completion_mask"].bool()
    assert mask.sum() >= 6  # tokens were sampled in every row
    biased, full = output["biased_logps"], output["full_logps"]
    vllm_logps = output["sampling_per_token_logps"]
    old = output["old_per_token_logps"]
    # vLLM's processed log-probs = the trainer model's biased distribution
    assert (vllm_logps - biased)[mask].abs().max() < TOLERANCE
    # the trainer's old log-probs (TRL's fused head, full vocabulary) = the plain distribution
    assert (old - full)[mask].abs().max() < TOLERANCE
    # so TRL's importance-sampling ratio is 1 but for what the ban removes from the normaliser
    ratio = output["importance_sampling_ratio"]
    expected = torch.exp(full - biased)  # = 1 - p(banned) at each position
    assert ratio.shape == mask.shape
    assert (ratio - expected)[mask].abs().max() < TOLERANCE
    assert ((expected[mask] > 0.9) & (expected[mask] <= 1.0)).all()


def test_upstream_colocate_path_still_expands_twice(colocate):
    """Canary: TRL's own `_generate_single_turn` hands vLLM pre-expanded ids, which vLLM expands
    again. When this fails, upstream changed (huggingface/trl PR #6718, or vLLM): re-check
    VPPOTrainer._vllm_runs_trainer_prompts and this file."""
    trainer, rows, _, _ = colocate
    prompts = [
        [{**m, "content": [dict(p) for p in m["content"]]} for m in messages]
        for messages, _ in rows
    ]
    from trl.data_utils import prepare_multimodal_messages

    prompts = [
        prepare_multimodal_messages(p, images=im) for p, (_, im) in zip(prompts, rows, strict=True)
    ]
    prompt_ids, images, fields = trainer._tokenize_prompts(prompts)
    llm = trainer.vllm_generation.llm
    ran = []
    llm_generate = llm.generate

    def recording_generate(batch, *a, **kw):
        outputs = llm_generate(batch, *a, **kw)
        ran.extend(list(out.prompt_token_ids) for out in outputs)
        return outputs

    llm.generate = recording_generate
    try:
        GRPOTrainer._generate_single_turn(trainer, prompt_ids, images, fields, 1)
    finally:
        del llm.generate
    placeholder = trainer.vision.image_token_id
    counts = [ids.count(placeholder) for ids in ran]
    # every image of N tokens arrives as 2N - 1 (Qwen2.5-VL: 4 -> 7; 6 + 12 -> 11 + 23); none -> 0
    wanted = [list(ids).count(placeholder) for ids in prompt_ids]
    assert counts == [2 * n - len(images) for n, (_, images) in zip(wanted, rows, strict=True)]
    assert wanted[0] > 0 and ran[2] == list(prompt_ids[2])


def test_vllm_prompt_check_names_the_row():
    from vppo.trainer.trainer import check_vllm_prompts

    check_vllm_prompts([[1, 5, 5, 2]], [[1, 5, 5, 2]], 5)
    with pytest.raises(
        RuntimeError, match=r"row 1: 5 tokens \(3 image placeholders\) instead of 4 \(2\)"
    ):
        check_vllm_prompts([[1, 2], [1, 5, 5, 5, 2]], [[1, 2], [1, 5, 5, 2]], 5)


def test_eval_backend_runs_the_processors_prompt_and_logprobs(tiny, close_vllm):
    """`vppo eval --backend vllm`: same prompt ids as the processor, sampled-token log-probs equal
    to the transformers model's (raw log-probs: the eval engine reports them before the bias)."""
    folder, _, processor = tiny
    model, _ = load_model_and_processor(
        folder, dtype="float32"
    )  # the saved weights (the fixture's trained)
    backend = VLLMBackend(folder, processor=processor, dtype="float32", max_model_len=512)
    close_vllm(backend)
    requests = [
        GenerationRequest(f"q{i}", 0, messages, list(images), seed=7 + i)
        for i, (messages, images) in enumerate(_rows())
    ]
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=MAX_NEW_TOKENS)
    params = []
    for request in requests:
        p = backend.sampling_params(request, sampling)
        p.logprobs = 0
        params.append(p)
    outputs = backend.llm.generate(
        [backend.vllm_prompt(r) for r in requests], params, use_tqdm=False
    )
    banned = torch.tensor(backend.banned_token_ids)
    for request, out in zip(requests, outputs, strict=True):
        expected = _processor_ids(processor, request.messages, request.images)
        assert list(out.prompt_token_ids) == expected
        sample = out.outputs[0]
        completion = list(sample.token_ids)
        assert completion and not set(completion) & set(banned.tolist())
        vllm_logps = torch.tensor(
            [lp[t].logprob for lp, t in zip(sample.logprobs, completion, strict=True)]
        )
        conversation = [{**m, "content": [dict(p) for p in m["content"]]} for m in request.messages]
        text = processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False
        )
        inputs = processor(text=[text], images=request.images or None, return_tensors="pt")
        ids = torch.cat([inputs["input_ids"], torch.tensor([completion])], dim=1)
        forward = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        if "mm_token_type_ids" in forward:
            forward["mm_token_type_ids"] = torch.cat(
                [forward["mm_token_type_ids"], torch.zeros(1, len(completion), dtype=torch.long)],
                dim=1,
            )
        with torch.no_grad():
            logits = model(input_ids=ids, **forward).logits.float()[0, -len(completion) - 1 : -1]
        hf_logps = (
            torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)
        )
        assert (vllm_logps - hf_logps).abs().max() < TOLERANCE


def test_colocate_vllm_resizes_images_with_the_trainers_processor(tmp_path, close_vllm):
    """The trainer's processor resizes into the run's pixel range, narrower than the checkpoint's
    saved one: vLLM must be handed that range (`vllm_image_options`), or it runs the 84x112 image
    as 12 image tokens where the trainer scores 2, and the prompt check stops training."""
    from vppo.models.processors import set_image_pixel_limits

    folder = tmp_path / "tiny"
    model, processor = build_tiny_vlm(
        "qwen2_5_vl", save_dir=folder, min_pixels=56 * 56, max_pixels=112 * 112
    )
    model.name_or_path = model.config._name_or_path = str(folder)
    set_image_pixel_limits(
        processor, 56 * 56, 56 * 56
    )  # the run's range; the saved config keeps 112^2
    image = {"type": "image"}
    data = Dataset.from_list(
        [
            {
                "prompt": [
                    {"role": "user", "content": [image, {"type": "text", "text": "Colour?"}]}
                ],
                "images": [Image.new("RGB", (112, 84), (1, 2, 250))],
            }
        ]
    )
    args = VPPOConfig(
        output_dir=str(tmp_path / "run"),
        use_vllm=True,
        vllm_mode="colocate",
        vllm_max_model_length=256,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=4,
        max_steps=1,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        dynamic_sampling=False,
        seed=0,
    )
    trainer = VPPOTrainer(
        model=model,
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        args=args,
        train_dataset=data,
        processing_class=processor,
    )
    close_vllm(trainer)
    llm = trainer.vllm_generation.llm
    ran, llm_generate = [], llm.generate

    def recording_generate(prompts, *a, **kw):
        outputs = llm_generate(prompts, *a, **kw)
        ran.extend(list(out.prompt_token_ids) for out in outputs)
        return outputs

    llm.generate = recording_generate
    trainer.train()  # the prompt check (check_vllm_prompts) raises on any difference
    del llm.generate
    assert [ids.count(trainer.vision.image_token_id) for ids in ran] == [2, 2]
