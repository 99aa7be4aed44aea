"""Image-only processors and vision_layout."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from PIL import Image

from vppo.models import build_tiny_vlm, make_processor, vision_layout
from vppo.models.processors import VideoInputsUnsupported

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def built():
    return {arch: build_tiny_vlm(arch) for arch in ("qwen2_5_vl", "qwen3_vl", "qwen3_5", "smolvlm")}


def _ids(processor, *tokens: str) -> set[int]:
    return {processor.tokenizer.convert_tokens_to_ids(t) for t in tokens}


def test_layout_qwen2_5_vl(built):
    model, processor = built["qwen2_5_vl"]
    layout = vision_layout(processor, model.config)
    assert (layout.layout, layout.patch_size, layout.temporal_patch_size, layout.merge_size) == (
        "qwen_flat",
        14,
        2,
        2,
    )
    assert layout.image_mean == pytest.approx(CLIP_MEAN)
    assert layout.image_std == pytest.approx(CLIP_STD)
    assert layout.black_value == pytest.approx((-1.7923, -1.7521, -1.4802), abs=1e-4)
    assert layout.image_token_id == model.config.image_token_id
    assert layout.video_token_id == model.config.video_token_id
    qwen_vision = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    assert _ids(processor, *qwen_vision) <= set(layout.pad_token_ids_to_ban)
    # Without the model config the processor alone gives the same answer.
    assert vision_layout(processor) == layout


def test_layout_qwen3_vl(built):
    model, processor = built["qwen3_vl"]
    layout = vision_layout(processor, model.config)
    assert (layout.layout, layout.patch_size, layout.temporal_patch_size, layout.merge_size) == (
        "qwen_flat",
        16,
        2,
        2,
    )
    assert layout.image_mean == (0.5, 0.5, 0.5) and layout.black_value == (-1.0, -1.0, -1.0)
    assert layout.image_token_id == model.config.image_token_id


def test_layout_qwen3_5(built):
    """Qwen3.5: Qwen3-VL's processor and geometry, the same placeholder tokens."""
    model, processor = built["qwen3_5"]
    layout = vision_layout(processor, model.config)
    assert (layout.layout, layout.patch_size, layout.temporal_patch_size, layout.merge_size) == (
        "qwen_flat",
        16,
        2,
        2,
    )
    assert layout.image_mean == (0.5, 0.5, 0.5) and layout.black_value == (-1.0, -1.0, -1.0)
    assert layout.image_token_id == model.config.image_token_id
    assert layout.video_token_id == model.config.video_token_id
    qwen_vision = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    assert _ids(processor, *qwen_vision) <= set(layout.pad_token_ids_to_ban)
    assert vision_layout(processor) == layout


def test_layout_smolvlm(built):
    model, processor = built["smolvlm"]
    layout = vision_layout(processor, model.config)
    assert (layout.layout, layout.patch_size, layout.merge_size) == ("bnchw", 16, 2)
    assert layout.image_std == (0.5, 0.5, 0.5) and layout.black_value == (-1.0, -1.0, -1.0)
    assert layout.image_token_id == model.config.image_token_id
    expected = _ids(
        processor,
        "<image>",
        "<fake_token_around_image>",
        "<global-img>",
        "<row_1_col_1>",
        "<row_4_col_4>",
    )
    assert expected <= set(layout.pad_token_ids_to_ban)
    with pytest.raises(ValueError, match="model_config"):
        vision_layout(processor)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl", "qwen3_5", "smolvlm"])
def test_ban_list_spares_text_tokens(built, arch):
    model, processor = built[arch]
    layout = vision_layout(processor, model.config)
    tok = processor.tokenizer
    ordinary = tok("The answer is \\boxed{4}.", add_special_tokens=False)["input_ids"]
    for keep in [tok.eos_token_id, tok.pad_token_id, *ordinary]:
        assert keep not in layout.pad_token_ids_to_ban
    assert len(set(layout.pad_token_ids_to_ban)) == len(layout.pad_token_ids_to_ban)
    with pytest.raises(dataclasses.FrozenInstanceError):
        layout.patch_size = 1  # type: ignore[misc]


def test_banned_ids_are_never_generated(built):
    model, processor = built["qwen2_5_vl"]
    layout = vision_layout(processor, model.config)
    banned = list(layout.pad_token_ids_to_ban)
    image = Image.new("RGB", (56, 56), (0, 0, 255))
    messages = [{"role": "user", "content": [{"type": "image", "image": image}]}]
    enc = processor.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    prompt_len = enc["input_ids"].shape[1]
    # Make the vision placeholders the most likely next tokens, then check that banning them works.
    biased = copy.deepcopy(model)
    with torch.no_grad():
        head = biased.get_output_embeddings().weight
        head[banned] = head[banned] * 50 + 1.0
    free = biased.generate(**enc, max_new_tokens=6, do_sample=False)
    assert set(free[0, prompt_len:].tolist()) & set(banned)
    out = biased.generate(
        **enc, max_new_tokens=6, do_sample=False, bad_words_ids=[[i] for i in banned]
    )
    assert not set(out[0, prompt_len:].tolist()) & set(banned)


def test_video_inputs_are_refused(built):
    _, processor = built["smolvlm"]
    assert processor.video_processor.num_frames is None and processor.video_processor.fps is None
    with pytest.raises(ValueError, match="videos"):
        VideoInputsUnsupported()([])
    _, qwen = built["qwen2_5_vl"]
    assert not hasattr(qwen, "video_processor")
    assert "video_processor" not in type(qwen).get_attributes()


def test_make_processor_validates(built):
    _, processor = built["smolvlm"]
    with pytest.raises(ValueError, match="arch"):
        make_processor("llava", processor.image_processor, processor.tokenizer)
    with pytest.raises(ValueError, match="image_seq_len"):
        make_processor("smolvlm", processor.image_processor, processor.tokenizer)


def test_smolvlm_tiling_when_enabled(built):
    model, processor = built["smolvlm"]
    processor.image_processor.do_image_splitting = True
    try:
        image = Image.new("RGB", (128, 96), (255, 255, 0))
        messages = [{"role": "user", "content": [{"type": "image", "image": image}]}]
        enc = processor.apply_chat_template(
            messages,
            tokenize=True,
            add_generation_prompt=True,
            return_dict=True,
            return_tensors="pt",
        )
    finally:
        processor.image_processor.do_image_splitting = False
    # 2x2 tiles plus the global view, 4 image tokens each, in the (B, N_img, C, H, W) layout.
    assert tuple(enc["pixel_values"].shape) == (1, 5, 3, 64, 64)
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == 20
    layout = vision_layout(processor, model.config)
    tokens = processor.tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    grid_ids = {
        i
        for i, t in zip(enc["input_ids"][0].tolist(), tokens, strict=True)
        if t.startswith("<row_")
    }
    assert len(grid_ids) == 4 and grid_ids <= set(layout.pad_token_ids_to_ban)
    with torch.no_grad():
        assert torch.isfinite(model(**enc).logits).all()


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl", "qwen3_5"])
def test_pixel_limits_are_set_read_and_handed_to_vllm(arch):
    from vppo.models.processors import (
        image_pixel_limits,
        set_image_pixel_limits,
        vllm_image_options,
    )

    _, processor = build_tiny_vlm(arch)
    unit = processor.image_processor.patch_size * processor.image_processor.merge_size
    big = Image.new("RGB", (4 * unit, 4 * unit))
    assert processor.image_processor(images=[big])["image_grid_thw"].prod() == 16 * 4  # 4x4 units
    set_image_pixel_limits(processor, 1024, unit * unit)
    assert image_pixel_limits(processor) == (1024, unit * unit)
    # the processor now resizes the image down to one merged unit (2x2 patches)
    assert processor.image_processor(images=[big])["image_grid_thw"].tolist() == [[1, 2, 2]]
    set_image_pixel_limits(processor, None, 4 * unit * unit)  # None keeps that bound
    assert image_pixel_limits(processor) == (1024, 4 * unit * unit)
    assert vllm_image_options(processor) == {
        "mm_processor_kwargs": {"size": {"shortest_edge": 1024, "longest_edge": 4 * unit * unit}},
        "limit_mm_per_prompt": {"video": 0},
    }


def test_processors_without_a_pixel_range_are_left_alone(built):
    from vppo.models.processors import (
        image_pixel_limits,
        set_image_pixel_limits,
        vllm_image_options,
    )

    _, processor = built["smolvlm"]
    before = dict(processor.image_processor.size)
    set_image_pixel_limits(processor, 1024, 4096)
    assert image_pixel_limits(processor) is None and dict(processor.image_processor.size) == before
    assert vllm_image_options(processor) == {} and vllm_image_options(None) == {}


def test_trainer_builds_vllm_in_its_dtype_with_the_processors_range(monkeypatch):
    import trl.generation.vllm_generation as vllm_generation

    from vppo.models.processors import set_image_pixel_limits
    from vppo.trainer.trainer import _vllm_engine_options

    _, processor = build_tiny_vlm("qwen2_5_vl")
    set_image_pixel_limits(processor, 3136, 3136)
    seen = []
    monkeypatch.setattr(vllm_generation, "LLM", lambda *a, **kw: seen.append(kw))
    with _vllm_engine_options("float32", processor):
        vllm_generation.LLM(model="m", dtype="bfloat16")  # TRL's own keywords win
        vllm_generation.LLM(model="m")
    assert seen[0]["dtype"] == "bfloat16" and seen[1]["dtype"] == "float32"
    assert seen[1]["mm_processor_kwargs"] == {"size": {"shortest_edge": 3136, "longest_edge": 3136}}
    assert seen[1]["limit_mm_per_prompt"] == {"video": 0}
    vllm_generation.LLM(model="m")  # outside the block: untouched
    assert seen[2] == {"model": "m"}


def test_image_only_subclass_is_one_class_per_upstream_base():
    import pickle

    from transformers import (
        ProcessorMixin,
        Qwen2_5_VLProcessor,
        Qwen2VLProcessor,
        Qwen3VLProcessor,
        SmolVLMProcessor,
    )

    from vppo import models
    from vppo.models import processors

    for base in (Qwen2VLProcessor, Qwen2_5_VLProcessor, Qwen3VLProcessor, SmolVLMProcessor):
        cls = processors.image_only_subclass(base)
        name = f"ImageOnly{base.__name__}"
        # cached per base, and the public names are the factory's products
        assert cls is processors.image_only_subclass(base)
        assert getattr(processors, name) is cls and getattr(models, name) is cls
        assert (cls.__name__, cls.__qualname__, cls.__module__) == (
            name,
            name,
            "vppo.models.processors",
        )
        assert issubclass(cls, base) and cls.upstream_class_name == base.__name__
        assert cls.get_attributes() == ["image_processor", "tokenizer"]
        # a pickled class resolves to the same object (instances pickle by module + qualname)
        assert pickle.loads(pickle.dumps(cls)) is cls
    for bad in (ProcessorMixin, type("Qwen2VLProcessor", (Qwen2VLProcessor,), {})):
        with pytest.raises(ValueError, match="base"):
            processors.image_only_subclass(bad)


def test_model_types_map_to_the_upstream_table():
    from vppo.models import processors

    assert processors._UPSTREAM_BY_MODEL_TYPE == {
        "qwen2_vl": "Qwen2VLProcessor",
        "qwen2_5_vl": "Qwen2_5_VLProcessor",
        "qwen3_vl": "Qwen3VLProcessor",
        "qwen3_vl_moe": "Qwen3VLProcessor",
        "qwen3_5": "Qwen3VLProcessor",
        "qwen3_5_moe": "Qwen3VLProcessor",
        "smolvlm": "SmolVLMProcessor",
    }
    assert {k: v.__name__ for k, v in processors._IMAGE_ONLY_BY_UPSTREAM.items()} == {
        name: f"ImageOnly{name}" for name in processors._UPSTREAM_BY_MODEL_TYPE.values()
    }


@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen3_vl_moe"])
def test_processors_without_a_tiny_builder_save_as_upstream_and_reload(built, arch, tmp_path):
    import json

    from vppo.models.processors import image_only_processor_class, load_processor

    _, source = built["qwen2_5_vl"]
    processor = make_processor(arch, source.image_processor, source.tokenizer)
    upstream = type(processor).upstream_class_name
    assert type(processor).__name__ == f"ImageOnly{upstream}"
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text(encoding="utf-8"))
    assert saved["processor_class"] == upstream
    assert saved["video_processor"]["patch_size"] == 14
    assert image_only_processor_class(tmp_path) is type(processor)
    image = Image.new("RGB", (56, 56), (0, 0, 255))
    messages = [{"role": "user", "content": [{"type": "image", "image": image}]}]
    kwargs = dict(tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    want = processor.apply_chat_template(messages, **kwargs)
    got = load_processor(tmp_path).apply_chat_template(messages, **kwargs)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
