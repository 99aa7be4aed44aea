"""`TransformersBackend` on a tiny real Qwen3.5 (gated-delta-net and full-attention layers)."""

from __future__ import annotations

import pytest
from PIL import Image

from vppo.evaluation import GenerationRequest, SamplingConfig, TransformersBackend
from vppo.models import build_tiny_vlm, vision_layout

pytestmark = pytest.mark.slow


def _requests() -> list[GenerationRequest]:
    image = {"type": "image"}
    one = [{"role": "user", "content": [image, {"type": "text", "text": "Colour?"}]}]
    two = [{"role": "user", "content": [image, image, {"type": "text", "text": "Which?"}]}]
    text = [{"role": "user", "content": "What is 2 + 3?"}]
    return [
        GenerationRequest("one", 0, one, [Image.new("RGB", (64, 64), (200, 20, 30))], seed=1),
        GenerationRequest(
            "two",
            0,
            two,
            [Image.new("RGB", (96, 64), (10, 200, 30)), Image.new("RGB", (64, 128), (1, 2, 250))],
            seed=2,
        ),
        GenerationRequest("text", 0, text, seed=3),
    ]


@pytest.fixture(scope="module")
def backend():
    model, processor = build_tiny_vlm("qwen3_5", seed=2)
    return TransformersBackend(model, processor)


def test_greedy_batch_equals_one_request_at_a_time(backend):
    """Left padding through the linear-attention layers changes nothing: each request's greedy
    completion is the same alone and in a batch with other image counts and lengths."""
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=12)
    requests = _requests()
    batched = backend.generate(requests, greedy)
    alone = [backend.generate([request], greedy)[0] for request in requests]
    assert batched == alone
    assert all(isinstance(text, str) and text for text in batched)


def test_sampling_repeats_with_the_seeds_and_never_emits_vision_tokens(backend):
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=16)
    requests = _requests()
    first, again = backend.generate(requests, sampling), backend.generate(requests, sampling)
    assert first == again
    tokenizer = backend.processor.tokenizer
    banned = set(vision_layout(backend.processor, backend.model.config).pad_token_ids_to_ban)
    assert banned == set(backend.banned_token_ids)
    for text in first:
        assert not banned & set(tokenizer(text, add_special_tokens=False)["input_ids"])
