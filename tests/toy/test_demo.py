"""`vppo demo`: method switches from the recipes, the shared CPU config, the quick end-to-end run."""

from __future__ import annotations

import json
import re

import pytest

from vppo.analysis import ResponseRecord
from vppo.toy.demo import (
    METHODS,
    QUICK_SETTINGS,
    DemoSettings,
    default_checkpoint,
    load_policy,
    main,
    method_overrides,
    rl_config,
)


def test_method_overrides_are_the_recipe_differences():
    assert method_overrides("vppo") == {}
    assert method_overrides("dapo") == {"token_selection": "none", "use_tas": False}
    grpo = method_overrides("grpo")
    assert grpo["token_selection"] == "none" and grpo["use_tas"] is False
    assert grpo["loss_type"] == "grpo" and grpo["epsilon_high"] == 0.2
    assert grpo["dynamic_sampling"] is False
    assert method_overrides("tas_only") == {"token_selection": "none"}
    assert method_overrides("tgf_only") == {"use_tas": False}
    assert method_overrides("entropy_80_20") == {
        "token_selection": "none",
        "use_tas": False,
        "top_entropy_quantile": 0.2,
    }
    papo = method_overrides("papo")
    assert papo["token_selection"] == "none" and papo["use_tas"] is False
    assert papo["papo_coef"] == 0.01 and papo["papo_entropy_coef"] == 0.03
    assert papo["perturbation"] == "blacken_image" and papo["perturbation_prob"] == 0.6
    with pytest.raises(ValueError, match="method"):
        method_overrides("ppo")


def test_every_method_shares_the_cpu_setup_and_keeps_vppo_defaults(tmp_path):
    settings = DemoSettings(prompts_per_step=3, num_generations=4, steps=7, seed=5)
    configs = {m: rl_config(m, settings, tmp_path / m) for m in METHODS}
    for config in configs.values():
        assert config.per_device_train_batch_size == 12 and config.num_generations == 4
        assert config.max_steps == 7 and config.seed == 5 and config.perturbation_seed == 5
        assert config.learning_rate == settings.learning_rate
        assert config.nll_coef == settings.nll_coef
        assert config.use_cpu and not config.bf16
    vppo = configs["vppo"]
    # The algorithm keeps the paper's defaults.
    assert (vppo.token_selection, vppo.token_ratio, vppo.use_tas) == ("topk", 0.4, True)
    assert (vppo.tas_beta_min, vppo.tas_beta_max) == (0.9, "dynamic")
    assert (vppo.dependency_estimator, vppo.perturbation, vppo.perturbation_prob) == (
        "k3",
        "blacken",
        0.5,
    )
    assert (vppo.epsilon, vppo.epsilon_high, vppo.loss_type, vppo.beta) == (0.2, 0.28, "dapo", 0.0)
    assert vppo.needs_dependency and vppo.dynamic_sampling
    assert not configs["dapo"].needs_dependency and configs["dapo"].dynamic_sampling
    assert not configs["grpo"].needs_dependency and not configs["grpo"].dynamic_sampling
    assert configs["tas_only"].use_tas and configs["tas_only"].token_selection == "none"
    assert not configs["tgf_only"].use_tas and configs["tgf_only"].token_selection == "topk"
    assert configs["entropy_80_20"].top_entropy_quantile == 0.2
    assert (
        configs["entropy_80_20"].token_selection == "none" and not configs["entropy_80_20"].use_tas
    )


def test_highlight_brackets_the_tgf_selected_tokens():
    from vppo.toy.demo import _highlight

    tokens = ["<think>", "I", " see", " 3", " shapes", "</think>", " \\boxed{", "3", "}"]
    dep = [0.0, 0.0, 0.1, 4.0, 0.5, 0.0, 0.0, 2.0, 0.0]
    record = ResponseRecord(
        index=0,
        row=0,
        sample=0,
        question="q",
        response="r",
        answer="3",
        correct=True,
        num_images=1,
        token_ids=list(range(9)),
        tokens=tokens,
        logp_real=[0.0] * 9,
        logp_perturbed=[0.0] * 9,
        dependency=dep,
        entropy=[0.0] * 9,
    )
    # ceil(0.4 * 9) = 4 tokens: the four largest dependencies.
    assert _highlight(record, 0.4) == "<think>I[ see][ 3][ shapes]</think> \\boxed{[3]}"


def test_curve_keeps_the_steps_with_a_reward():
    from vppo.toy.demo import _curve

    history = [
        {"step": 1, "reward": 0.5, "loss": 0.1, "vppo/dependency_mean": 0.2, "note": "x"},
        {"step": 2, "loss": 0.05},
        {"step": 3, "reward": 0.75},
        {"train_runtime": 9.0, "step": 3},
    ]
    assert _curve(history) == [
        {"step": 1.0, "reward": 0.5, "loss": 0.1, "vppo/dependency_mean": 0.2},
        {"step": 3.0, "reward": 0.75},
    ]


def test_settings_validation_names_the_field():
    with pytest.raises(ValueError, match="num_generations"):
        DemoSettings(num_generations=1)
    with pytest.raises(ValueError, match="learning_rate"):
        DemoSettings(learning_rate=-1.0)
    with pytest.raises(ValueError, match="steps"):
        DemoSettings(steps=0)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_policy(tmp_path)


def test_shipped_warm_start_is_small_and_loads():
    path = default_checkpoint()
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 6 * 2**20
    info = json.loads((path / "vppo_warmstart.json").read_text())
    assert 0.3 <= info["pass_rate"] <= 0.6  # RL needs signal: well between 0 and 1
    model, processor = load_policy()
    assert model.config.model_type == "qwen2_5_vl"
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 5e6


@pytest.mark.slow
def test_quick_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--quick", "--output-dir", str(out), "--no-progress", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    k, steps = QUICK_SETTINGS.eval_k, QUICK_SETTINGS.steps
    before = re.search(rf"validation avg@{k} before training: ([0-9.]+)%", text)
    after = re.search(
        rf"validation avg@{k} after {steps} VPPO steps: ([0-9.]+)% \(([-+][0-9.]+) points\)", text
    )
    assert before and after, text
    assert float(after.group(1)) - float(before.group(1)) == pytest.approx(
        float(after.group(2)), abs=0.11
    )
    # The token-perception summary of the analysis layer, and highlighted responses.
    assert "token dependency: mean" in text and "TGF top 40%" in text
    assert re.search(r"  A: .*\[.+\]", text)
    results = json.loads((out / "demo_results.json").read_text())
    assert results["method"] == "vppo" and results["steps"] == steps
    # Two optimizer steps per generation batch (num_iterations=2): rewards on steps 1 and 3.
    assert [row["step"] for row in results["curve"]] == [1.0, 3.0]
    assert all("vppo/dependency_mean" in row for row in results["curve"])
    assert results["before"] == pytest.approx(float(before.group(1)), abs=0.051)
    assert (out / "eval" / "before" / "synthetic-validation.samples.jsonl").is_file()
    assert "token dependency: mean" in (out / "perception.txt").read_text()
    model, _ = load_policy(out / "model")  # the trained policy reloads
    assert model.config.model_type == "qwen2_5_vl"
