"""Tiny real-architecture VLM builders: structure, chat template, forward/generate, determinism."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from vppo.models import build_tiny_vlm, supported_architectures, vision_layout
from vppo.models.tiny import train_bpe_tokenizer

ARCHS = ["qwen2_5_vl", "qwen3_vl", "qwen3_5", "smolvlm"]
MODEL_CLASS = {
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "qwen3_5": "Qwen3_5ForConditionalGeneration",
    "smolvlm": "SmolVLMForConditionalGeneration",
}
IMAGE_TOKEN = {
    "qwen2_5_vl": "<|image_pad|>",
    "qwen3_vl": "<|image_pad|>",
    "qwen3_5": "<|image_pad|>",
    "smolvlm": "<image>",
}
# Head sizes vLLM's CPU attention backend serves (`CPUAttentionBackend.get_supported_head_sizes`
# in vllm/v1/attention/backends/cpu_attn.py; newer releases add 512). 16 is not among them, so a
# decoder with 16-wide heads cannot be served by vLLM on CPU.
VLLM_CPU_HEAD_SIZES = frozenset({32, 64, 80, 96, 112, 128, 160, 192, 224, 256})


def _image(width: int = 56, height: int = 56, colour=(200, 30, 30)) -> Image.Image:
    return Image.new("RGB", (width, height), colour)


def _messages(image: Image.Image, text: str = "How many red squares are there?") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": text}],
        }
    ]


def _encode(processor, messages) -> dict:
    return processor.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request):
    model, processor = build_tiny_vlm(request.param, seed=0)
    return request.param, model, processor


def test_supported_architectures():
    assert supported_architectures() == ARCHS


def _text_head_dim(text_config) -> int:
    return getattr(text_config, "head_dim", None) or (
        text_config.hidden_size // text_config.num_attention_heads
    )


def test_text_head_dim_is_served_by_vllm_cpu(tiny):
    arch, model, _ = tiny
    text = model.config.text_config
    head_dim = _text_head_dim(text)
    assert head_dim in VLLM_CPU_HEAD_SIZES, (arch, head_dim)
    assert head_dim * text.num_attention_heads == text.hidden_size
    # GQA at the default width 64: two query heads share one key/value head.
    assert (text.num_attention_heads, text.num_key_value_heads) == (2, 1)


@pytest.mark.parametrize("hidden_size", [32, 96, 128])
def test_text_head_dim_at_other_widths(hidden_size):
    model, _ = build_tiny_vlm("qwen3_vl", hidden_size=hidden_size, num_layers=1)
    text = model.config.text_config
    assert _text_head_dim(text) == 32
    assert text.num_attention_heads == hidden_size // 32
    assert text.num_attention_heads % text.num_key_value_heads == 0
    assert sum(text.rope_parameters["mrope_section"]) == 16


def test_build_is_real_tiny_architecture(tiny):
    arch, model, processor = tiny
    assert type(model).__name__ == MODEL_CLASS[arch]
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert not model.training
    tokenizer = processor.tokenizer
    assert len(tokenizer) <= 512
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids(IMAGE_TOKEN[arch])
    if arch != "smolvlm":
        text = model.config.text_config
        head_dim = _text_head_dim(text)
        rotary_dim = int(head_dim * text.rope_parameters.get("partial_rotary_factor", 1.0))
        assert sum(text.rope_parameters["mrope_section"]) == rotary_dim // 2
        for field, token in [
            ("video_token_id", "<|video_pad|>"),
            ("vision_start_token_id", "<|vision_start|>"),
            ("vision_end_token_id", "<|vision_end|>"),
        ]:
            assert getattr(model.config, field) == tokenizer.convert_tokens_to_ids(token)
    # Every special token is a single, distinct id.
    for token in tokenizer.all_special_tokens:
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1
    assert tokenizer.padding_side == "left"
    assert tokenizer.eos_token_id in model.generation_config.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id


def test_chat_template_text(tiny):
    arch, _, processor = tiny
    text = processor.apply_chat_template(
        _messages(_image(), "Count."), tokenize=False, add_generation_prompt=True
    )
    if arch == "smolvlm":
        assert text == "<|im_start|>User:<image>Count.<end_of_utterance>\nAssistant:"
    else:
        assert text == (
            "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Count.<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
    # String content and a system turn render too (TRL passes both forms).
    plain = processor.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        tokenize=False,
        add_generation_prompt=False,
    )
    assert "Be brief." in plain and "Hi" in plain and not plain.rstrip().endswith(":")


# Expected image tokens per arch for a 56x56 and a 112x112 image. Qwen2.5-VL: 28-px merged
# patches, 56x56 is 2x2 and 112x112 is 4x4. Qwen3-VL: 32-px merged patches, 56 rounds to 64 (2x2)
# and 112 to 128 (4x4). SmolVLM: one 64x64 view, (64/16)^2 patches / 2^2 pixel shuffle = 4.
EXPECTED_IMAGE_TOKENS = {
    "qwen2_5_vl": (4, 16),
    "qwen3_vl": (4, 16),
    "qwen3_5": (4, 16),  # Qwen3-VL's geometry and processor
    "smolvlm": (4, 4),
}


@pytest.mark.parametrize("which, side", [(0, 56), (1, 112)])
def test_image_token_count(tiny, which, side):
    arch, model, processor = tiny
    enc = _encode(processor, _messages(_image(side, side)))
    n_image_tokens = int((enc["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == EXPECTED_IMAGE_TOKENS[arch][which]
    layout = vision_layout(processor, model.config)
    if arch == "smolvlm":
        assert tuple(enc["pixel_values"].shape) == (1, 1, 3, 64, 64)
    else:
        grid = enc["image_grid_thw"][0]
        assert int(grid.prod()) == n_image_tokens * layout.merge_size**2
        assert tuple(enc["pixel_values"].shape) == (
            int(grid.prod()),
            3 * layout.temporal_patch_size * layout.patch_size**2,
        )


def test_forward_and_generate(tiny):
    _, model, processor = tiny
    enc = _encode(processor, _messages(_image()))
    length = enc["input_ids"].shape[1]
    with torch.no_grad():
        logits = model(**enc).logits
    assert tuple(logits.shape) == (1, length, len(processor.tokenizer))
    assert torch.isfinite(logits).all()
    out = model.generate(**enc, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert tuple(out.shape) == (1, length + 4)
    assert torch.equal(out[:, :length], enc["input_ids"])


def test_logits_depend_on_image(tiny):
    _, model, processor = tiny
    with torch.no_grad():
        red = model(**_encode(processor, _messages(_image(colour=(220, 20, 20))))).logits
        blue = model(**_encode(processor, _messages(_image(colour=(20, 20, 220))))).logits
    assert red.shape == blue.shape
    assert (red - blue).abs().max() > 0


def test_left_padding_in_batches(tiny):
    _, model, processor = tiny
    batch = [_messages(_image(), "Hi"), _messages(_image(), "How many red squares are there now?")]
    enc = processor.apply_chat_template(
        batch,
        tokenize=True,
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
    mask = enc["attention_mask"]
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()
    assert (enc["input_ids"][0][mask[0] == 0] == processor.tokenizer.pad_token_id).all()
    with torch.no_grad():
        assert torch.isfinite(model(**enc).logits).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_build_is_deterministic_and_leaves_global_rng(arch):
    state = torch.random.get_rng_state()
    model_a, proc_a = build_tiny_vlm(arch, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    model_b, proc_b = build_tiny_vlm(arch, seed=3)
    model_c, _ = build_tiny_vlm(arch, seed=4)
    assert proc_a.tokenizer.get_vocab() == proc_b.tokenizer.get_vocab()
    sd_a, sd_b, sd_c = model_a.state_dict(), model_b.state_dict(), model_c.state_dict()
    assert sd_a.keys() == sd_b.keys()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert any(not torch.equal(sd_a[k], sd_c[k]) for k in sd_a)


def test_tokenizer_properties():
    _, processor = build_tiny_vlm("qwen2_5_vl")
    tok = processor.tokenizer
    ids = tok("<think> 12 </think> \\boxed{305}", add_special_tokens=False)["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    assert "<think>" in tokens and "</think>" in tokens
    # Digits are one token each, so numbers tokenize uniformly.
    assert [t for t in tokens if t.strip("Ġ").isdigit()] == ["1", "2", "3", "0", "5"]
    text = tok.decode(ids + [tok.eos_token_id], skip_special_tokens=True)
    assert text == "<think> 12 </think> \\boxed{305}"


def test_custom_corpus_and_sizes():
    texts = ["alpha beta gamma " * 5, "delta 123"]
    model, processor = build_tiny_vlm(
        "smolvlm", vocab_texts=texts, vocab_size=300, hidden_size=32, num_layers=1, seed=1
    )
    assert len(processor.tokenizer) <= 300
    assert model.config.text_config.hidden_size == 32
    assert model.config.text_config.num_hidden_layers == 1
    enc = _encode(processor, _messages(_image(), "alpha"))
    with torch.no_grad():
        assert model(**enc).logits.shape[-1] == len(processor.tokenizer)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"arch": "llava"}, "arch"),
        ({"arch": "qwen2_5_vl", "hidden_size": 40}, "hidden_size"),
        ({"arch": "smolvlm", "hidden_size": 48}, "hidden_size"),  # 16-wide heads: no vLLM kernel
        ({"arch": "qwen3_vl", "vision_hidden_size": 40}, "vision_hidden_size"),
        ({"arch": "qwen2_5_vl", "num_layers": 0}, "num_layers"),
        ({"arch": "qwen3_vl", "vocab_size": 100}, "vocab_size"),
        ({"arch": "qwen3_vl", "vocab_texts": ["", "  "]}, "vocab_texts"),
        ({"arch": "qwen2_5_vl", "min_pixels": 20000, "max_pixels": 10000}, "min_pixels"),
        ({"arch": "smolvlm", "image_size": 50}, "image_size"),
    ],
)
def test_bad_build_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        build_tiny_vlm(**kwargs)


def test_train_bpe_tokenizer_rejects_unknown_role_token():
    with pytest.raises(ValueError, match="eos_token"):
        train_bpe_tokenizer(
            ["abc"],
            300,
            ["<a>"],
            bos_token=None,
            eos_token="<b>",
            pad_token="<a>",
            chat_template="",
        )


def test_arch_spec_table_drives_the_build(tiny):
    import dataclasses

    from vppo.models.tiny import _ARCH_SPECS

    arch, model, processor = tiny
    spec = _ARCH_SPECS[arch]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.patch_size = 1  # type: ignore[misc]
    tok = processor.tokenizer
    assert type(model).__name__ == spec.model_class == MODEL_CLASS[arch]
    assert type(model.config).__name__ == spec.config_class
    assert type(processor.image_processor).__name__.removesuffix("Pil") == (
        spec.image_processor_class
    )
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (
        spec.bos_token,
        spec.eos_token,
        spec.pad_token,
    )
    text = model.config.text_config
    assert text.bos_token_id == tok.convert_tokens_to_ids(spec.model_bos_token)
    assert model.generation_config.bos_token_id == text.bos_token_id
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids(list(spec.stop_tokens))
    for field, token in spec.config_token_ids:
        assert getattr(model.config, field) == tok.convert_tokens_to_ids(token)
    layout = vision_layout(processor, model.config)
    assert (layout.patch_size, layout.merge_size, layout.temporal_patch_size) == (
        spec.patch_size,
        spec.merge_size,
        spec.temporal_patch_size,
    )
    assert layout.image_mean == pytest.approx(spec.image_mean)
    assert layout.image_std == pytest.approx(spec.image_std)
    if spec.family == "qwen":
        vision = model.config.vision_config
        assert text.rope_parameters["rope_theta"] == spec.rope_theta
        assert bool(text.rope_parameters.get("mrope_interleaved")) == spec.mrope_interleaved
        if spec.window_size is not None:
            assert vision.window_size == spec.window_size
            assert vision.fullatt_block_indexes == [vision.depth - 1]
        if spec.deepstack_visual_indexes is not None:
            assert vision.deepstack_visual_indexes == list(spec.deepstack_visual_indexes)
            assert vision.num_position_embeddings == spec.num_position_embeddings
    else:
        assert model.config.scale_factor == spec.merge_size
        assert processor.image_seq_len == (64 // spec.patch_size) ** 2 // spec.merge_size**2


def test_supported_architectures_are_the_spec_table():
    from vppo.models.tiny import _ARCH_SPECS

    assert supported_architectures() == list(_ARCH_SPECS)
    assert {spec.family for spec in _ARCH_SPECS.values()} == {"qwen", "idefics3"}


# vLLM's CPU gated-delta-net kernel (`chunk_gated_delta_rule_cpu`) takes 128-wide heads only.
VLLM_CPU_LINEAR_HEAD_SIZES = frozenset({128})


@pytest.mark.parametrize("num_layers", [2, 4])
def test_qwen3_5_mixes_linear_and_full_attention_layers(num_layers):
    model, _ = build_tiny_vlm("qwen3_5", num_layers=num_layers)
    text = model.config.text_config
    expected = ["linear_attention", "full_attention"] * (num_layers // 2)
    assert text.layer_types == expected
    layers = model.model.language_model.layers
    for layer, kind in zip(layers, expected, strict=True):
        assert hasattr(layer, "linear_attn" if kind == "linear_attention" else "self_attn")
    assert {text.linear_key_head_dim, text.linear_value_head_dim} <= VLLM_CPU_LINEAR_HEAD_SIZES
    assert text.linear_num_value_heads % text.linear_num_key_heads == 0
    # A quarter of each full-attention head is rotated, as in the released models.
    assert text.rope_parameters["partial_rotary_factor"] == 0.25
    assert text.rope_parameters["mrope_interleaved"] is True
    assert not hasattr(model.config.vision_config, "deepstack_visual_indexes")
