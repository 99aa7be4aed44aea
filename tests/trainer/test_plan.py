"""`vppo plan`: parameter counts of the real configs, the budget's arithmetic by hand, every shipped
GPU recipe fitting its hardware, and the command's output and bad input."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
import torch
import yaml

from vppo.cli import main as vppo_main
from vppo.trainer.cli import RECIPES_DIR, load_recipe, parse
from vppo.trainer.plan import (
    ACCELERATE_DIR,
    BUILTIN_MODELS,
    CARD_GB,
    CUDA_OVERHEAD_GB,
    PROMPT_TEXT_TOKENS,
    RECIPE_DEFAULTS,
    VLLM_SLEEP_RESIDUAL_GB,
    ModelShape,
    build_plan,
    model_shape,
    parameter_counts,
    read_sharding,
    recipe_max_pixels,
)
from vppo.trainer.plan import _needs_dependency as needs_dependency
from vppo.trainer.plan import _needs_perturbed_pass as needs_perturbed_pass

GPU_RECIPES = sorted(
    str(p.relative_to(RECIPES_DIR).with_suffix(""))
    for p in RECIPES_DIR.rglob("*.yaml")
    if p.parent.name != "accelerate" and not p.name.startswith("tiny_")
)
CPU = ["--bf16", "false", "--use_cpu", "true"]


def _hf_config(m: ModelShape):
    """The transformers config of a ModelShape (for counting parameters on the meta device)."""
    from transformers import Qwen2_5_VLConfig, Qwen3_5Config, Qwen3VLConfig

    text = dict(
        hidden_size=m.hidden_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads,
        num_key_value_heads=m.num_kv_heads,
        intermediate_size=m.intermediate_size,
        vocab_size=m.vocab_size,
        head_dim=m.head_dim,
    )
    vision = dict(
        depth=m.vision_depth,
        hidden_size=m.vision_hidden_size,
        num_heads=16,
        intermediate_size=m.vision_intermediate_size,
        out_hidden_size=m.vision_out_hidden_size,
        patch_size=m.patch_size,
        spatial_merge_size=m.spatial_merge_size,
        temporal_patch_size=m.temporal_patch_size,
    )
    if m.family == "qwen3_5":
        layer_types = ["linear_attention"] * m.linear_layers + ["full_attention"] * (
            m.num_layers - m.linear_layers
        )
        text |= dict(
            layer_types=layer_types,
            linear_num_key_heads=m.linear_num_key_heads,
            linear_num_value_heads=m.linear_num_value_heads,
            linear_key_head_dim=m.linear_key_head_dim,
            linear_value_head_dim=m.linear_value_head_dim,
            linear_conv_kernel_dim=m.linear_conv_kernel,
        )
        vision |= dict(num_position_embeddings=m.vision_position_embeddings)
        return Qwen3_5Config(
            text_config=text, vision_config=vision, tie_word_embeddings=m.tie_word_embeddings
        )
    if m.family == "qwen3_vl":
        vision |= dict(
            num_position_embeddings=m.vision_position_embeddings,
            deepstack_visual_indexes=list(range(m.deepstack_layers)),
        )
        return Qwen3VLConfig(
            text_config=text, vision_config=vision, tie_word_embeddings=m.tie_word_embeddings
        )
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=m.tie_word_embeddings
    )


def _meta_counts(config) -> tuple[int, int]:
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters() if ".visual." in f".{n}")
    return total, vision


# Model cards: Qwen2.5-VL-7B "8.29B" (vision ~0.67B), Qwen2.5-VL-32B "33.5B", Qwen3-VL-8B "8.77B".
# Tolerance: 0.5% of the total (the cards round to 3 significant figures).
KNOWN = {
    "Qwen/Qwen2.5-VL-7B-Instruct": (8_292_166_656, 676_550_144, 8.29e9),
    "Qwen/Qwen2.5-VL-32B-Instruct": (33_452_718_336, 688_841_984, 33.5e9),
    "Qwen/Qwen3-VL-8B-Instruct": (8_767_123_696, 576_388_336, 8.77e9),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_parameter_counts_match_the_model_cards_and_transformers(name):
    total, vision, card = KNOWN[name]
    counts = parameter_counts(BUILTIN_MODELS[name])
    assert (counts["total"], counts["vision"]) == (total, vision)
    assert counts["total"] == pytest.approx(card, rel=5e-3)
    # The same numbers as transformers builds the architecture (meta device: no memory, no download).
    assert _meta_counts(_hf_config(BUILTIN_MODELS[name])) == (total, vision)


# A made-up Qwen2.5-VL small enough to count by hand.
SMALL = ModelShape(
    family="qwen2_5_vl",
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    intermediate_size=128,
    vocab_size=1000,
    tie_word_embeddings=False,
    vision_depth=2,
    vision_hidden_size=32,
    vision_intermediate_size=64,
    vision_out_hidden_size=64,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    source="small",
)


def test_parameter_count_of_a_small_config_by_hand():
    # layer: q 64*64+64, k and v 64*32+32, o 64*64, SwiGLU 3*64*128, two RMSNorms 2*64
    layer = 4160 + 2 * 2080 + 4096 + 24576 + 128
    language = 2 * layer + 2 * 1000 * 64 + 64  # untied embedding and head, final norm
    # vision: conv 3*2*14*14*32; block: 2 norms, qkv 3*32*32+96, proj 32*32+32, SwiGLU 3*32*64+2*64+32;
    # merger: norm 32, 128*128+128, 128*64+64
    vision = 37632 + 2 * (64 + 3168 + 1056 + 6304) + (32 + 16512 + 8256)
    assert (layer, language, vision) == (37120, 202304, 83616)
    counts = parameter_counts(SMALL)
    assert (counts["layer"], counts["language"], counts["vision"]) == (layer, language, vision)
    assert _meta_counts(_hf_config(SMALL)) == (language + vision, vision)
    # and a small Qwen3-VL (no q/k/v bias, q/k norms, LayerNorms, plain MLP, DeepStack mergers)
    small3 = ModelShape(
        **{
            **{f.name: getattr(SMALL, f.name) for f in fields(SMALL)},
            "family": "qwen3_vl",
            "patch_size": 16,
            "vision_position_embeddings": 16,
            "deepstack_layers": 2,
        }
    )
    assert _meta_counts(_hf_config(small3)) == (
        parameter_counts(small3)["total"],
        parameter_counts(small3)["vision"],
    )


def _yaml(tmp_path, name, content: dict):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


def test_every_component_of_a_small_plan_by_hand(tmp_path):
    recipe = {
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 3,
        "steps_per_generation": 6,
        "max_completion_length": 100,
        "max_pixels": 3136,
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_gpu_memory_utilization": 0.5,
        "vllm_enable_sleep_mode": True,
        "bf16": True,
        "token_selection": "topk",
        "dependency_estimator": "k3",
        "dynamic_sampling": False,
    }
    zero3 = read_sharding(
        _yaml(
            tmp_path, "z3", {"distributed_type": "DEEPSPEED", "deepspeed_config": {"zero_stage": 3}}
        )
    )
    plan = build_plan(recipe, SMALL, zero3, gpus=4, card_gb=10)
    gb = {line.name: line.gb * 1e9 for line in plan.lines}  # bytes
    n = 285920  # SMALL's parameters
    seq = 4 + PROMPT_TEXT_TOKENS + 100  # 3136 px / 28^2 image tokens + text + completion
    rows, patches = 2 * 6, 3136 // 14**2  # generation batch per GPU, ViT patches per image
    # one layer's activations per token: 4h + q/k/v (64 + 2 * 32) + 4 I (SwiGLU); the vision block's
    text_layer, vision_block = 4 * 64 + 128 + 4 * 128, 4 * 32 + 96 + 4 * 64
    scored = 2 * 100  # completion positions of a 2-row micro-batch: the fused head's tokens
    tile = scored * 32768 * 2  # fewer than 4096 tokens: one [200, 32768] bf16 tile
    expected = {
        "parameters": n * 2 / 4,
        "gradients": n * 2 / 4,
        "optimizer (AdamW)": n * 12 / 4,
        "gathered modules": 3 * 64000 * 2,  # the embedding (1000 x 64) is the largest module
        "vLLM engine (generating)": 0.5 * 10e9,  # a share of the card's total
        "vLLM asleep (level 2)": VLLM_SLEEP_RESIDUAL_GB * 1e9,
        "pixel_values (the rollout)": rows
        * patches
        * (3 * 2 * 14 * 14)
        * 2,  # bf16 under DeepSpeed
        "perturbed pixel_values": rows * patches * 1176 * 2,
        "scoring forward (one layer)": 2 * (seq * text_layer + patches * vision_block) * 2,
        "fused LM head (no grad)": tile + scored * 64 * 2,
        "text checkpoints": 2 * 2 * seq * 64 * 2,
        "vision checkpoints": 2 * 2 * patches * 32 * 2,
        "text layer recompute": 2 * seq * text_layer * 2 * 2,  # x2 for its grads
        "vision block recompute": 2 * patches * vision_block * 2 * 2,
        # float32 grads of the hidden states and of the head's weight, and their bf16 casts
        "fused LM head + its grads": tile + scored * 64 * (4 + 2) + 1000 * 64 * (4 + 2),
        "CUDA / NCCL overhead": CUDA_OVERHEAD_GB * 1e9,
    }
    assert gb.keys() == expected.keys()
    for name, value in expected.items():
        assert gb[name] == pytest.approx(value, rel=1e-12), name
    assert not any("logits" in name for name in gb)  # TRL's fused head builds no [B, T, V] logits
    states = expected["parameters"] + expected["gradients"] + expected["optimizer (AdamW)"]
    common = (
        states
        + expected["gathered modules"]
        + expected["pixel_values (the rollout)"]
        + expected["CUDA / NCCL overhead"]
    )
    assert plan.phase_gb("generation") * 1e9 == pytest.approx(common + 0.5 * 10e9)
    assert plan.phase_gb("merge") * 1e9 == pytest.approx(common + expected["vLLM asleep (level 2)"])
    update = (
        common
        + expected["vLLM asleep (level 2)"]
        + sum(
            expected[k]
            for k in (
                "text checkpoints",
                "vision checkpoints",
                "text layer recompute",
                "vision block recompute",
                "fused LM head + its grads",
            )
        )
    )
    assert plan.phase_gb("update") * 1e9 == pytest.approx(update)
    assert plan.peak_phase == "generation" and plan.fits

    # Without sleep mode the engine's whole share stays through scoring and the update.
    awake = build_plan(
        {**recipe, "vllm_enable_sleep_mode": False}, SMALL, zero3, gpus=4, card_gb=10
    )
    assert awake.phase_gb("update") - plan.phase_gb("update") == pytest.approx(
        5.0 - VLLM_SLEEP_RESIDUAL_GB
    )

    # Dynamic sampling: a refill round is generated beside the rounds kept so far (two rollouts'
    # pixel_values), and merging the kept rows builds the batch once more (three).
    refills = build_plan({**recipe, "dynamic_sampling": True}, SMALL, zero3, gpus=4, card_gb=10)
    pixels = expected["pixel_values (the rollout)"]
    assert refills.phase_gb("generation") * 1e9 == pytest.approx(
        plan.phase_gb("generation") * 1e9 + pixels
    )
    assert refills.phase_gb("merge") * 1e9 == pytest.approx(
        plan.phase_gb("merge") * 1e9 + 2 * pixels
    )
    assert refills.phase_gb("update") == pytest.approx(plan.phase_gb("update"))

    # PAPO with papo_masked_grad (DAPO below it): no no-grad perturbed pass, but the masked images
    # stay through the update, and the masked forward keeps its checkpoints and head inputs beside
    # the loss pass's until their one backward.
    papo = {**recipe, "token_selection": "none", "use_tas": False, "papo_coef": 0.01}
    detached = build_plan(papo, SMALL, zero3, gpus=4, card_gb=10)
    grad = build_plan({**papo, "papo_masked_grad": True}, SMALL, zero3, gpus=4, card_gb=10)
    lines = {line.name: line for line in grad.lines}
    masked = lines["masked pass with grad (PAPO)"]
    assert masked.gb * 1e9 == pytest.approx(
        expected["text checkpoints"] + expected["vision checkpoints"] + scored * 64 * (4 + 2),
        rel=1e-12,
    )
    assert lines["perturbed pixel_values"].phases == ("scoring", "update")
    assert grad.phase_gb("update") * 1e9 == pytest.approx(
        detached.phase_gb("update") * 1e9 + masked.gb * 1e9 + pixels
    )
    assert grad.phase_gb("scoring") == pytest.approx(detached.phase_gb("scoring"))
    no_checkpoints = {**papo, "papo_masked_grad": True, "gradient_checkpointing": False}
    lines = {line.name: line for line in build_plan(no_checkpoints, SMALL, zero3, 4, 10).lines}
    assert lines["masked pass with grad (PAPO)"].gb * 1e9 == pytest.approx(
        2 * (2 * seq * text_layer + 2 * patches * vision_block) * 2 + scored * 64 * 6, rel=1e-12
    )


def test_sharding_of_each_engine(tmp_path):
    recipe = {"use_vllm": True, "max_pixels": 3136, "max_completion_length": 100}

    def states(config: dict) -> dict:
        plan = build_plan(
            recipe, SMALL, read_sharding(_yaml(tmp_path, "acc", config)), gpus=4, card_gb=10
        )
        return {line.name: round(line.gb * 1e9) for line in plan.lines}

    n = 285920
    z2 = states({"distributed_type": "DEEPSPEED", "deepspeed_config": {"zero_stage": 2}})
    assert (z2["parameters"], z2["gradients"], z2["optimizer (AdamW)"]) == (
        n * 2,
        n * 2 / 4,
        n * 12 / 4,
    )
    assert "gathered modules" not in z2
    offload = states(
        {
            "distributed_type": "DEEPSPEED",
            "deepspeed_config": {
                "zero_stage": 3,
                "offload_optimizer_device": "cpu",
                "offload_param_device": "cpu",
            },
        }
    )
    assert offload["parameters"] == offload["gradients"] == offload["optimizer (AdamW)"] == 0
    fsdp2 = states(
        {
            "distributed_type": "FSDP",
            "fsdp_config": {"fsdp_version": 2, "fsdp_reshard_after_forward": True},
        }
    )
    assert fsdp2["parameters"] == n * 2 / 4 and fsdp2["optimizer (AdamW)"] == n * 12 / 4
    assert (
        fsdp2["pixel_values (the rollout)"] == 8 * 16 * 1176 * 4
    )  # float32: only DeepSpeed casts inputs
    ddp = states({"distributed_type": "MULTI_GPU"})
    assert (ddp["parameters"], ddp["optimizer (AdamW)"]) == (n * 2, n * 12)
    shipped = {p.stem: read_sharding(p.stem) for p in ACCELERATE_DIR.glob("*.yaml")}
    assert shipped["zero3_8gpu"].shard_params and not shipped["zero3_8gpu"].offload_optimizer
    assert shipped["zero3_32gpu"].offload_optimizer


def _hardware(recipe: dict) -> tuple[int, int]:
    """(GPUs, nodes) each recipe states: 32B on 4 x 8 GPUs, every other model on one node of 8."""
    return (32, 4) if "32B" in recipe["model_name_or_path"] else (8, 1)


# Allocator fragmentation is not in the plan: every shipped recipe keeps this share of the card free.
MARGIN = 0.05


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_every_gpu_recipe_fits_its_80gb_cards_with_each_shipped_sharded_config(name):
    recipe = load_recipe(name)
    gpus, nodes = _hardware(recipe)
    configs = [
        p.stem
        for p in ACCELERATE_DIR.glob("*.yaml")
        if p.stem.startswith(("zero3_", "fsdp2_"))
        and yaml.safe_load(p.read_text())["num_processes"] == gpus
    ]
    assert configs
    for config in configs:
        plan = build_plan(
            {**recipe, "max_pixels": recipe_max_pixels(recipe)},
            model_shape(recipe["model_name_or_path"]),
            read_sharding(config),
            gpus,
            CARD_GB,
            nodes,
            name=name,
        )
        problems = [note for note in plan.notes if not note.startswith("host memory")]
        assert plan.peak_gb <= (1 - MARGIN) * CARD_GB and not problems, (
            name,
            config,
            plan.peak_gb,
            problems,
        )
    # the official rollout survives: 384 x 8 responses, 3 updates of 1024
    b, ga, spg = (
        recipe[k]
        for k in (
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "steps_per_generation",
        )
    )
    assert b * spg * gpus == 3072 and spg == 3 * ga and b * ga * gpus == 1024


def test_the_previous_7b_settings_did_not_fit():
    # micro-batch 16 with vLLM awake: the settings the tool was written to catch
    recipe = {
        **load_recipe("qwen2_5_vl_7b_vppo"),
        "per_device_train_batch_size": 16,
        "gradient_accumulation_steps": 8,
        "steps_per_generation": 24,
        "vllm_enable_sleep_mode": False,
    }
    plan = build_plan(
        recipe,
        BUILTIN_MODELS["Qwen/Qwen2.5-VL-7B-Instruct"],
        read_sharding("zero3_8gpu"),
        8,
        CARD_GB,
    )
    assert not plan.fits and plan.peak_phase == "update"


def test_defaults_and_dependency_rule_match_the_trainer():
    from vppo.trainer.cli import TrainScriptArguments
    from vppo.trainer.config import VPPOConfig

    defaults = {
        f.name: f.default for cls in (VPPOConfig, TrainScriptArguments) for f in fields(cls)
    }
    for key, value in RECIPE_DEFAULTS.items():
        # bf16: TRL derives it from the device; every GPU recipe sets it.
        if key != "bf16":
            assert defaults[key] == value, key
    for name in [*GPU_RECIPES, "tiny_vppo", "tiny_dapo"]:
        _, config, _ = parse(["--config", name, *CPU])
        recipe = {**RECIPE_DEFAULTS, **load_recipe(name)}
        assert needs_dependency(recipe) == config.needs_dependency, name
        assert needs_perturbed_pass(recipe) == config.needs_perturbed_pass, name
    for name in ("qwen2_5_vl_7b_papo_d", "qwen2_5_vl_7b_vppo"):
        _, config, _ = parse(
            ["--config", name, *CPU, "--papo_coef", "0.01", "--papo_masked_grad", "true"]
        )
        recipe = {
            **RECIPE_DEFAULTS,
            **load_recipe(name),
            "papo_coef": 0.01,
            "papo_masked_grad": True,
        }
        assert needs_perturbed_pass(recipe) == config.needs_perturbed_pass, name


def test_local_model_folder_is_read_with_autoconfig(tmp_path):
    folder = tmp_path / "my_model"
    _hf_config(SMALL).save_pretrained(folder)
    shape = model_shape(str(folder))
    assert parameter_counts(shape)["total"] == 285920


def test_command_prints_the_budget_ending_with_the_peak_line(capsys):
    assert vppo_main(["plan", "--config", "qwen2_5_vl_7b_vppo", "--gpus", "8"]) == 0
    out = capsys.readouterr().out.rstrip("\n").splitlines()
    assert out[-1].startswith("peak per GPU: ") and out[-1].endswith(" GB of 85 GB")
    assert sum(line.startswith("peak per GPU:") for line in out) == 1
    assert any(line.startswith("optimizer (AdamW)") and "/ 8 GPUs" in line for line in out)
    # a card too small: the same table, exit status 1
    assert (
        vppo_main(
            ["plan", "--config", "qwen2_5_vl_7b_vppo", "--gpus", "8", "--gpu-memory-gb", "40"]
        )
        == 1
    )
    out = capsys.readouterr().out.rstrip("\n").splitlines()
    assert out[-1].endswith("GB of 40 GB") and out[-2].startswith("does NOT fit")
    assert (
        vppo_main(
            [
                "plan",
                "--config",
                "qwen2_5_vl_32b_vppo",
                "--gpus",
                "32",
                "--nodes",
                "4",
                "--accelerate-config",
                "fsdp2_32gpu",
            ]
        )
        == 0
    )


def _bad(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        code = vppo_main(["plan", *argv])
        raise SystemExit(code)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vppo plan: "), captured.err
    return lines[0]


def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    assert "no recipe file 'no_such_recipe'" in _bad(
        capsys, "--config", "no_such_recipe", "--gpus", "8"
    )
    assert "--gpus must be a positive" in _bad(
        capsys, "--config", "qwen2_5_vl_7b_vppo", "--gpus", "0"
    )
    assert "--gpus must be a positive" in _bad(
        capsys, "--config", "qwen2_5_vl_7b_vppo", "--gpus", "-8"
    )
    assert "invalid int value" in _bad(capsys, "--config", "qwen2_5_vl_7b_vppo", "--gpus", "eight")
    assert "divide --gpus" in _bad(
        capsys, "--config", "qwen2_5_vl_7b_vppo", "--gpus", "8", "--nodes", "3"
    )
    assert "no shipped accelerate config zero3_6gpu" in _bad(
        capsys, "--config", "qwen2_5_vl_7b_vppo", "--gpus", "6"
    )
    assert "shipped configs are" in _bad(
        capsys, "--config", "qwen2_5_vl_7b_vppo", "--gpus", "8", "--accelerate-config", "zero9"
    )
    # a model whose architecture the plan does not know: a local Llama, an unknown model_type, a tiny model
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    assert "model_type 'llama' is not an architecture" in _bad(
        capsys, "--config", "qwen2_5_vl_7b_vppo", "--gpus", "8", "--model", str(llama)
    )
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "no_such_arch"}))
    assert "model_type 'no_such_arch' is not an architecture" in _bad(
        capsys, "--config", "qwen2_5_vl_7b_vppo", "--gpus", "8", "--model", str(odd)
    )
    assert "neither a built-in model" in _bad(capsys, "--config", "tiny_vppo", "--gpus", "1")


def _train_max_pixels(argv: list[str]) -> int:
    """The max_pixels `vppo train` resizes to for these arguments (its parse, then its prompt settings)."""
    from vppo.data.settings import apply_prompt_settings

    script_args, _, model_args = parse([*argv, *CPU])
    apply_prompt_settings(script_args, model_args.model_name_or_path)
    return script_args.max_pixels


@pytest.mark.parametrize("name", [*GPU_RECIPES, "tiny_vppo", "tiny_dapo", "tiny_grpo"])
def test_plan_and_train_resolve_the_same_image_size(name):
    assert recipe_max_pixels(load_recipe(name)) == _train_max_pixels(["--config", name])


def test_a_recipe_without_pixels_is_planned_at_what_train_reads(tmp_path, capsys):
    from vppo.data.images import DEFAULT_MAX_PIXELS
    from vppo.data.settings import PromptSettings, write_prompt_settings

    base = {
        k: v
        for k, v in load_recipe("qwen2_5_vl_7b_vppo").items()
        if k not in ("min_pixels", "max_pixels")
    }
    bare = _yaml(tmp_path, "bare", base)
    assert (
        recipe_max_pixels(load_recipe(bare))
        == _train_max_pixels(["--config", bare])
        == DEFAULT_MAX_PIXELS
    )
    # a model folder that records its pixel range (vppo_prompt.json): both read it
    folder = tmp_path / "my_model"
    _hf_config(BUILTIN_MODELS["Qwen/Qwen2.5-VL-7B-Instruct"]).save_pretrained(folder)
    write_prompt_settings(folder, PromptSettings("vppo_math", None, 3136, 200704))
    recorded = _yaml(tmp_path, "recorded", {**base, "model_name_or_path": str(folder)})
    assert (
        recipe_max_pixels(load_recipe(recorded))
        == _train_max_pixels(["--config", recorded])
        == 200704
    )
    assert vppo_main(["plan", "--config", recorded, "--gpus", "8"]) == 0
    assert "256 image (200,704 px / 28^2)" in capsys.readouterr().out


# Qwen3.5-9B: not on the Hub offline; the built-in shape is transformers' "Qwen3.5-9B style"
# defaults (src/vppo/trainer/plan.py), counted here as transformers builds it.
def test_qwen3_5_parameter_counts_equal_transformers_and_its_9b_size():
    m = BUILTIN_MODELS["Qwen/Qwen3.5-9B"]
    counts = parameter_counts(m)
    assert (counts["total"], counts["vision"]) == (9_409_813_744, 456_010_480)
    assert _meta_counts(_hf_config(m)) == (counts["total"], counts["vision"])
    assert (m.linear_layers, m.full_attention_layers) == (24, 8)
    # and a small hybrid: two linear-attention layers and one full-attention layer
    small = ModelShape(
        **{
            **{f.name: getattr(SMALL, f.name) for f in fields(SMALL)},
            "family": "qwen3_5",
            "num_layers": 3,
            "patch_size": 16,
            "vision_position_embeddings": 16,
            "linear_layers": 2,
            "linear_num_key_heads": 2,
            "linear_num_value_heads": 4,
            "linear_key_head_dim": 16,
            "linear_value_head_dim": 8,
            "linear_conv_kernel": 4,
        }
    )
    assert _meta_counts(_hf_config(small)) == (
        parameter_counts(small)["total"],
        parameter_counts(small)["vision"],
    )


def _qwen3_5_recipe() -> dict:
    """The Qwen3.5-9B VPPO settings: the Qwen3-VL-8B recipe with vLLM's share at 0.38 (0.42 leaves
    fsdp2_8gpu under 5% of the card: the 248k vocabulary's gathered embedding and head gradient).
    Not shipped as a recipe yet: its scaled-down CPU run needs vLLM in bfloat16 (docs/testing.md)."""
    return {
        **load_recipe("qwen3_vl_8b_vppo"),
        "model_name_or_path": "Qwen/Qwen3.5-9B",
        "vllm_gpu_memory_utilization": 0.38,
    }


@pytest.mark.parametrize("config", ["zero3_8gpu", "fsdp2_8gpu"])
def test_qwen3_5_9b_settings_fit_80gb_cards(config):
    recipe = _qwen3_5_recipe()
    recipe["max_pixels"] = recipe_max_pixels(recipe)
    plan = build_plan(
        recipe, model_shape("Qwen/Qwen3.5-9B"), read_sharding(config), 8, CARD_GB, name="qwen3_5"
    )
    assert plan.peak_gb <= (1 - MARGIN) * CARD_GB and not plan.notes, (plan.peak_gb, plan.notes)
    at_042 = build_plan(
        {**recipe, "vllm_gpu_memory_utilization": 0.42},
        model_shape("Qwen/Qwen3.5-9B"),
        read_sharding(config),
        8,
        CARD_GB,
    )
    assert (at_042.peak_gb > (1 - MARGIN) * CARD_GB) == (config == "fsdp2_8gpu")


def test_qwen3_5_generation_counts_recurrent_state_for_its_linear_layers():
    """Transformers generation: a KV cache for the 8 full-attention layers only, and per row one
    conv state [conv_dim, kernel] (bf16) plus one [heads, k_dim, v_dim] float32 state per
    gated-delta-net layer; vLLM: one pool holding both, the state at kernel - 1 positions."""
    m = BUILTIN_MODELS["Qwen/Qwen3.5-9B"]
    recipe = {**_qwen3_5_recipe(), "use_vllm": False}
    plan = build_plan(recipe, m, read_sharding("zero3_8gpu"), 8, CARD_GB)
    lines = {line.name: line for line in plan.lines}
    rows = recipe["per_device_train_batch_size"] * recipe["steps_per_generation"]
    seq = recipe_max_pixels(recipe) // 32**2 + PROMPT_TEXT_TOKENS + recipe["max_completion_length"]
    kv = lines["KV cache (transformers generate)"].gb
    assert kv == pytest.approx(rows * seq * 2 * 8 * (4 * 256) * 2 / 1e9)
    conv_dim = 2 * 16 * 128 + 32 * 128
    state = 24 * (conv_dim * 4 * 2 + 32 * 128 * 128 * 4)
    assert lines["recurrent state (transformers generate)"].gb == pytest.approx(rows * state / 1e9)

    colocate = build_plan(_qwen3_5_recipe(), m, read_sharding("zero3_8gpu"), 8, CARD_GB)
    (header,) = [line for line in colocate.header if line.startswith("vLLM")]
    per_sequence = seq * 2 * 8 * 1024 * 2 + 24 * (conv_dim * 3 * 2 + 32 * 128 * 128 * 4)
    pool = 0.38 * CARD_GB - parameter_counts(m)["total"] * 2 / 1e9
    assert f"KV cache {pool:.1f} GB" in header
    assert f"= {pool * 1e9 / per_sequence:,.0f} sequences of {seq:,} tokens" in header
    # a Qwen3-VL plan has no recurrent state line
    plain = build_plan(
        {**load_recipe("qwen3_vl_8b_vppo"), "use_vllm": False},
        BUILTIN_MODELS["Qwen/Qwen3-VL-8B-Instruct"],
        read_sharding("zero3_8gpu"),
        8,
        CARD_GB,
    )
    assert not any(line.name.startswith("recurrent state") for line in plain.lines)


def test_a_local_qwen3_5_folder_is_read_with_its_layer_types(tmp_path):
    from vppo.models import build_tiny_vlm

    model, _ = build_tiny_vlm("qwen3_5", save_dir=tmp_path, num_layers=4)
    m = model_shape(str(tmp_path))
    assert (m.family, m.linear_layers, m.full_attention_layers) == ("qwen3_5", 2, 2)
    assert m.linear_conv_dim == 2 * 1 * 128 + 2 * 128
    counts = parameter_counts(m)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["vision"] == sum(p.numel() for p in model.model.visual.parameters())
