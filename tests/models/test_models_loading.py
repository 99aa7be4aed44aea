"""Saving tiny models and reloading them through load_model_and_processor / load_processor."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from transformers.utils import is_torchvision_available

from vppo.models import (
    ImageOnlyQwen2_5_VLProcessor,
    ImageOnlyQwen3VLProcessor,
    ImageOnlySmolVLMProcessor,
    build_tiny_vlm,
    check_vision_language_model,
    load_model_and_processor,
    load_processor,
    resolve_dtype,
)
from vppo.models.processors import image_only_processor_class

ARCHS = ["qwen2_5_vl", "qwen3_vl", "qwen3_5", "smolvlm"]
UPSTREAM = {
    "qwen2_5_vl": ("Qwen2_5_VLProcessor", ImageOnlyQwen2_5_VLProcessor),
    "qwen3_vl": ("Qwen3VLProcessor", ImageOnlyQwen3VLProcessor),
    "qwen3_5": ("Qwen3VLProcessor", ImageOnlyQwen3VLProcessor),  # Qwen3.5 reuses it
    "smolvlm": ("SmolVLMProcessor", ImageOnlySmolVLMProcessor),
}


def _messages() -> list[dict]:
    image = Image.new("RGB", (56, 56), (10, 200, 40))
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": "What colour?"},
            ],
        }
    ]


@pytest.fixture(scope="module", params=ARCHS)
def saved(request, tmp_path_factory):
    arch = request.param
    path = tmp_path_factory.mktemp(arch)
    model, processor = build_tiny_vlm(arch, path, seed=7)
    return arch, path, model, processor


def test_saved_files_name_upstream_classes(saved):
    arch, path, model, _ = saved
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (path / name).is_file(), name
    processor_config = json.loads((path / "processor_config.json").read_text())
    assert processor_config["processor_class"] == UPSTREAM[arch][0]
    # A video processor entry lets stock AutoProcessor load the directory where torchvision exists.
    assert processor_config["video_processor"]["video_processor_type"].endswith("VideoProcessor")
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text())
    assert tokenizer_config.get("processor_class") == UPSTREAM[arch][0]
    info = json.loads((path / "vppo_tiny.json").read_text())
    assert info["arch"] == arch and info["seed"] == 7
    assert info["num_parameters"] == sum(p.numel() for p in model.parameters())


def test_reload_roundtrip(saved):
    arch, path, model, processor = saved
    loaded, loaded_proc = load_model_and_processor(path, dtype="float32")
    assert type(loaded) is type(model)
    assert not loaded.training
    if not is_torchvision_available():
        assert type(loaded_proc) is UPSTREAM[arch][1]
    assert loaded_proc.tokenizer.padding_side == "left"
    assert loaded_proc.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert loaded.generation_config.eos_token_id == model.generation_config.eos_token_id
    original = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, original[key]), key

    messages = _messages()
    kwargs = {"tokenize": True, "add_generation_prompt": True, "return_dict": True}
    enc = processor.apply_chat_template(messages, return_tensors="pt", **kwargs)
    enc2 = loaded_proc.apply_chat_template(messages, return_tensors="pt", **kwargs)
    assert enc.keys() == enc2.keys()
    for key in enc:
        assert torch.equal(enc[key], enc2[key]), key
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, loaded(**enc2).logits)


def test_reload_bfloat16(saved):
    _, path, _, _ = saved
    model, _ = load_model_and_processor(str(path), dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_load_processor_directly(saved):
    arch, path, _, _ = saved
    processor = load_processor(path)
    assert processor.tokenizer.padding_side == "left"
    assert image_only_processor_class(path) is UPSTREAM[arch][1]


def test_processor_class_from_model_config_only(saved, tmp_path):
    arch, path, _, _ = saved
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    assert image_only_processor_class(tmp_path) is UPSTREAM[arch][1]
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert image_only_processor_class(tmp_path) is None


def test_missing_directory(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_model_and_processor(missing)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_model_and_processor(f"{missing}/")


def test_load_processor_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent"):
        load_processor(tmp_path / "absent")


def test_directory_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model_and_processor(tmp_path)


def test_file_instead_of_directory(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="weights.bin"):
        load_model_and_processor(path)


def test_text_only_model_is_refused_in_one_sentence(text_only_model, saved):
    folder = text_only_model
    expected = (
        f"model {folder} is not a vision-language model (model_type 'qwen2'); vppo needs an "
        "image-text-to-text model such as Qwen2.5-VL, Qwen3-VL or SmolVLM."
    )
    with pytest.raises(ValueError) as info:
        check_vision_language_model(folder)
    assert str(info.value) == expected
    with pytest.raises(ValueError) as info:
        load_model_and_processor(folder)
    assert str(info.value) == expected
    assert check_vision_language_model(saved[1]) == str(saved[1])


@pytest.mark.parametrize("command", ["eval", "analyze"])
def test_eval_and_analyze_refuse_a_text_only_model_in_one_line(
    command, tmp_path, capsys, text_only_model
):
    """The same sentence as `vppo train` (tests/e2e/test_train_bad_input.py), exit code 2, no data read."""
    from vppo.cli import main as vppo_main

    folder = text_only_model
    data = tmp_path / "never_read.json"  # the model is checked first: this file does not exist
    argv = {
        "eval": [
            "eval",
            "--model",
            str(folder),
            "--benchmark-path",
            f"digits={data}",
            "--output-dir",
            str(tmp_path / "out"),
        ],
        "analyze": [
            "analyze",
            "--model",
            str(folder),
            "--dataset",
            str(data),
            "--output-dir",
            str(tmp_path / "out"),
        ],
    }[command]
    assert vppo_main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        f"vppo {command}: model {folder} is not a vision-language model (model_type 'qwen2'); vppo "
        "needs an image-text-to-text model such as Qwen2.5-VL, Qwen3-VL or SmolVLM."
    ]
    assert not (tmp_path / "out").exists()


def test_unreachable_hub_name_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="vppo-test/does-not-exist"):
        load_model_and_processor("vppo-test/does-not-exist")


@pytest.mark.parametrize("dtype", ["float64", "int8", torch.int64, "", None])
def test_bad_dtype(dtype):
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype(dtype)


def test_resolve_dtype_names():
    assert resolve_dtype("auto") == "auto"
    assert resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype(torch.float16) is torch.float16


def test_a_qwen3_5_loads_after_vllm_registered_its_own_config_class(tmp_path, vllm_engine_ready):
    """vLLM, once it has loaded a Qwen3.5, puts its own config class in AutoConfig (the real
    registration call below); transformers' model failed on it ("'Qwen3_5VisionConfig' object has
    no attribute 'num_attention_heads'") until loading built transformers' own config."""
    import transformers
    import vllm.transformers_utils.config as vllm_config
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model, processor = build_tiny_vlm("qwen3_5")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    # (An earlier test's vLLM engine may have registered it already in this process.)
    vllm_config._maybe_register_hf_config(SimpleNamespace(model_type="qwen3_5"))
    try:
        assert CONFIG_MAPPING["qwen3_5"] is not transformers.Qwen3_5Config  # vLLM's class now
        loaded, _ = load_model_and_processor(tmp_path, dtype="float32")
    finally:
        AutoConfig.register("qwen3_5", transformers.Qwen3_5Config, exist_ok=True)
    assert type(loaded.config) is transformers.Qwen3_5Config
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
