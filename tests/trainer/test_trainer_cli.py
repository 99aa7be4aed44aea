"""`vppo train`: recipes, YAML inheritance, the command end to end, resume, and bad input."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from vppo.cli import main as vppo_main
from vppo.trainer.cli import RECIPES_DIR, load_recipe, parse

RECIPES = sorted(
    str(p.relative_to(RECIPES_DIR).with_suffix(""))
    for p in RECIPES_DIR.rglob("*.yaml")
    if p.parent.name != "accelerate"
)
CPU = ["--bf16", "false", "--use_cpu", "true"]


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_parses_into_a_valid_config(name):
    script_args, config, model_args = parse(["--config", name, *CPU])
    assert model_args.model_name_or_path
    assert config.output_dir.startswith("runs/")
    assert script_args.reward_funcs


def test_official_7b_recipe_matches_the_paper():
    _, config, _ = parse(["--config", "qwen2_5_vl_7b_vppo", *CPU])
    assert (config.token_ratio, config.tas_beta_min, config.tas_beta_max) == (0.4, 0.9, "dynamic")
    assert (config.epsilon, config.epsilon_high, config.beta, config.loss_type) == (
        0.2,
        0.28,
        0.0,
        "dapo",
    )
    assert (config.nll_coef, config.dependency_estimator, config.perturbation_prob) == (
        0.06,
        "k3",
        0.5,
    )
    assert (config.learning_rate, config.num_generations, config.max_completion_length) == (
        1e-6,
        8,
        2048,
    )
    assert config.top_p == 0.99 and config.dynamic_sampling
    # 384 prompts x 8 responses per rollout on 8 GPUs, 3 optimizer steps per rollout
    assert config.per_device_train_batch_size * 8 * config.steps_per_generation == 384 * 8
    assert config.steps_per_generation // config.gradient_accumulation_steps == 3
    assert config.delta == 3.0 and not config.vllm_importance_sampling_correction


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_uses_the_official_clipping_and_no_vllm_is_correction(name):
    _, config, _ = parse(["--config", name, *CPU])
    # TRL's delta is EasyR1's dual clip C only while it lies above the upper PPO clip edge.
    assert config.delta == 3.0 and config.delta > 1 + config.epsilon_high
    if config.use_vllm:
        # The official run has no vLLM importance-sampling correction; TRL's default turns it on.
        assert config.vllm_importance_sampling_correction is False


# Rollout (generation) steps of the official runs, for the recipes that stop at max_steps.
# qwen3_5_9b_vppo inherits the Qwen3-VL-8B schedule.
OFFICIAL_ROLLOUTS = {"qwen3_vl_8b_vppo": 130, "qwen3_5_9b_vppo": 130}


@pytest.mark.parametrize("name", RECIPES)
def test_max_steps_counts_the_official_rollouts_in_optimizer_steps(name):
    _, config, _ = parse(["--config", name, *CPU])
    if config.max_steps <= 0 or name.startswith("tiny_"):
        assert name not in OFFICIAL_ROLLOUTS
        return
    # TRL's max_steps counts optimizer steps; one rollout feeds steps_per_generation micro-batches,
    # i.e. steps_per_generation / gradient_accumulation_steps optimizer steps.
    updates = config.max_steps * config.gradient_accumulation_steps
    assert updates % config.steps_per_generation == 0
    assert updates // config.steps_per_generation == OFFICIAL_ROLLOUTS[name]


def test_baselines_differ_from_vppo_in_the_algorithm_only():
    vppo, dapo, grpo = (
        load_recipe(n) for n in ("qwen2_5_vl_7b_vppo", "qwen2_5_vl_7b_dapo", "qwen2_5_vl_7b_grpo")
    )
    changed = {k for k in vppo.keys() | dapo.keys() if vppo.get(k) != dapo.get(k)}
    assert changed == {"token_selection", "use_tas", "output_dir"}
    changed = {k for k in dapo.keys() | grpo.keys() if dapo.get(k) != grpo.get(k)}
    assert changed == {"epsilon_high", "loss_type", "dynamic_sampling", "output_dir"}
    assert grpo["nll_coef"] == vppo["nll_coef"] == 0.06


def test_a_users_recipe_extends_a_built_in_one_by_name(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: qwen2_5_vl_7b_papo_d\npapo_masked_grad: true\n")
    assert load_recipe(str(mine)) == {
        **load_recipe("qwen2_5_vl_7b_papo_d"),
        "papo_masked_grad": True,
    }
    # A file next to it wins over the built-in name.
    (tmp_path / "qwen2_5_vl_7b_papo_d").write_text("seed: 7\n")
    assert load_recipe(str(mine)) == {"seed": 7, "papo_masked_grad": True}


def test_recipe_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="built-in recipes are .*qwen2_5_vl_7b_vppo"):
        load_recipe("no_such_recipe")
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\nseed: 1\n")
    with pytest.raises(ValueError, match="includes itself"):
        load_recipe(str(loop))
    missing = tmp_path / "missing_base.yaml"
    missing.write_text("base: no_such_base\n")
    with pytest.raises(
        FileNotFoundError, match=r"has base: 'no_such_base', which is neither.*tiny_vppo"
    ):
        load_recipe(str(missing))
    with pytest.raises(SystemExit):
        parse(["--config", "tiny_vppo", "--dependency_estimator", "l2"])
    assert "--dependency_estimator" in capsys.readouterr().err
    with pytest.raises(ValueError, match="VPPOConfig.token_ratio"):
        parse(["--config", "tiny_vppo", "--token_ratio", "0"])


def _image_rows(tmp_path, modes):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = []
    for i, mode in enumerate(modes):
        image = Image.new("RGB", (56, 56), (40 * i, 120, 200)).convert(mode)
        image.save(folder / f"img{i}.png")
        rows.append(
            {
                "images": [f"img{i}.png"],
                "problem": f"<image>How many shapes are there {i}?",
                "answer": str(i % 3),
            }
        )
    path = folder / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


TINY = [
    "--max_completion_length",
    "8",
    "--per_device_train_batch_size",
    "4",
    "--num_generations",
    "2",
    "--min_pixels",
    "3136",
    "--max_pixels",
    "3136",
    "--save_steps",
    "1",
]


@pytest.mark.slow
def test_train_command_runs_resumes_and_accepts_rgba_and_grayscale(tmp_path):
    data = _image_rows(tmp_path, ["RGB", "RGBA", "L", "P", "RGB", "RGBA", "L", "RGB"])
    out = tmp_path / "run"
    common = [
        "train",
        "--config",
        "tiny_vppo",
        "--dataset_name",
        str(data),
        "--output_dir",
        str(out),
        *TINY,
    ]
    assert vppo_main([*common, "--max_steps", "1"]) == 0
    assert (out / "checkpoint-1").is_dir() and (out / "model.safetensors").is_file()
    assert vppo_main([*common, "--max_steps", "2", "--resume_from_checkpoint", "last"]) == 0
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert any("vppo/kept_token_frac" in entry for entry in state["log_history"])
    # every checkpoint records the prompt settings, as the final folder does (vppo_prompt.json)
    final = (out / "vppo_prompt.json").read_text()
    assert json.loads(final) == {
        "template": "vppo_math",
        "system_prompt": None,
        "min_pixels": 3136,
        "max_pixels": 3136,
    }
    assert (out / "checkpoint-1" / "vppo_prompt.json").read_text() == final
    assert (out / "checkpoint-2" / "vppo_prompt.json").read_text() == final


# Bad data (missing, unreadable or truncated images, placeholder mismatches) and every other bad
# input of the command: tests/e2e/test_train_bad_input.py.


@pytest.mark.slow
def test_report_to_tensorboard_logs_the_vppo_metrics(tmp_path):
    """`--report_to tensorboard`: every logged step's `vppo/*` metrics land in a local event file
    under <output_dir>/runs/ (transformers' default folder), read back with tensorboard's reader."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = _image_rows(tmp_path, ["RGB"] * 8)
    out = tmp_path / "run"
    assert (
        vppo_main(
            [
                "train",
                "--config",
                "tiny_vppo",
                "--dataset_name",
                str(data),
                "--output_dir",
                str(out),
                *TINY,
                "--max_steps",
                "2",
                "--save_strategy",
                "no",
                "--report_to",
                "tensorboard",
            ]
        )
        == 0
    )
    event_files = list((out / "runs").rglob("events.out.tfevents.*"))
    assert len(event_files) == 1
    events = EventAccumulator(str(event_files[0].parent))
    events.Reload()
    tags = events.Tags()["scalars"]
    vppo_tags = [t for t in tags if t.startswith("train/vppo/")]
    assert "train/vppo/kept_token_frac" in vppo_tags, tags
    for tag in vppo_tags:
        assert [s.step for s in events.Scalars(tag)] == [1, 2], tag
    assert "train/reward" in tags


def test_resume_restores_the_weights_saved_under_original_key_names(tmp_path):
    """save_pretrained writes Qwen2.5-VL's original key names (model.layers.*, visual.*); resuming
    maps them back, where transformers' own loader would leave the initial weights in place."""
    import torch
    from safetensors.torch import load_file

    from vppo.models import build_tiny_vlm, load_model_and_processor
    from vppo.trainer.resume import load_renamed_checkpoint

    build_tiny_vlm("qwen2_5_vl", tmp_path / "init", seed=0)
    model, _ = load_model_and_processor(
        tmp_path / "init", dtype="float32"
    )  # as vppo train loads it
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    model.save_pretrained(tmp_path / "checkpoint-1")
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    fresh, _ = load_model_and_processor(tmp_path / "init", dtype="float32")
    # what transformers 5.23's Trainer does on resume: almost no saved key matches
    result = fresh.load_state_dict(
        load_file(tmp_path / "checkpoint-1" / "model.safetensors"), strict=False
    )
    assert len(result.missing_keys) > len(saved) // 2
    assert load_renamed_checkpoint(fresh, tmp_path / "checkpoint-1")
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())


@pytest.mark.slow
def test_resumed_run_equals_the_uninterrupted_run_without_dynamic_sampling(
    tmp_path, interrupt_training
):
    """Interrupted after checkpoint-1 and resumed: the same losses, metrics and final weights as one
    uninterrupted run (CPU, dynamic sampling off; docs/trainer.md says what differs with it on)."""
    import torch
    from safetensors.torch import load_file

    data = _image_rows(tmp_path, ["RGB"] * 8)
    common = [
        "train",
        "--config",
        "tiny_vppo",
        "--dataset_name",
        str(data),
        *TINY,
        "--max_steps",
        "3",
        "--dynamic_sampling",
        "false",
    ]
    assert vppo_main([*common, "--output_dir", str(tmp_path / "a")]) == 0
    interrupt_training(2)
    assert vppo_main([*common, "--output_dir", str(tmp_path / "b")]) == 130
    interrupt_training(None)
    assert (
        vppo_main(
            [*common, "--output_dir", str(tmp_path / "b"), "--resume_from_checkpoint", "last"]
        )
        == 0
    )

    def history(run):
        log = json.loads((tmp_path / run / "checkpoint-3" / "trainer_state.json").read_text())[
            "log_history"
        ]
        return [
            {
                k: v
                for k, v in entry.items()
                if "time" not in k and "per_second" not in k and k != "train_runtime"
            }
            for entry in log
        ]

    assert history("a") == history("b")
    assert [e["step"] for e in history("a") if "loss" in e] == [1, 2, 3]
    wa, wb = (
        load_file(tmp_path / "a" / "model.safetensors"),
        load_file(tmp_path / "b" / "model.safetensors"),
    )
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
