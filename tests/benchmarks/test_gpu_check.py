"""benchmarks/gpu_check.py keeps working: its --cpu-smoke mode runs the same code on a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_gpu_check_cpu_smoke_reports_phases_numerics_and_ratios(tmp_path, subprocess_env):
    out = tmp_path / "gpu_check.json"
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu-smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=subprocess_env(),
        cwd=tmp_path,
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert elapsed < 120, f"--cpu-smoke took {elapsed:.0f} s"
    assert (
        "VPPO / DAPO: rollout time" in result.stdout
        and "numerics (VPPO's first rollout" in result.stdout
    )
    assert "{'loss'" not in result.stdout  # the trainer's own log lines are not printed
    report = json.loads(out.read_text())
    assert report["size"] == "tiny" and report["dtype"] == "float32"
    assert report["generation"].startswith("synthetic") and "vLLM" in report["generation"]
    structure = report["structure"]
    assert structure["updates_per_rollout"] == 3 and structure["gradient_accumulation_steps"] > 1
    assert structure["steps_per_generation"] == 3 * structure["gradient_accumulation_steps"]
    assert report["timed_rollouts"] == 1 and report["timed_optimizer_steps"] == 3
    passes = {
        "dapo": 1,
        "vppo": 2,
    }  # old log-probs; VPPO's real-image pass gives them, plus the perturbed one
    for method in ("dapo", "vppo"):
        row = report["methods"][method]
        assert set(row["phases"]) == {"scoring", "passes", "update"}
        for phase in row["phases"].values():
            assert phase["s"] > 0 and phase["peak_mb"] is None  # no allocator statistics on CPU
        assert row["peak_mb"] is None and row["tokens_per_s"] > 0
        assert row["rollout_s"] == pytest.approx(sum(p["s"] for p in row["phases"].values()))
        assert row["nograd_passes"] == passes[method]
        assert row["generation_rounds"] >= 2  # a third of the prompts are dropped and refilled
        assert 4 <= row["image_tokens"]["min"] < row["image_tokens"]["max"] <= 16
        assert 0 < row["completion_tokens_mean"] <= structure["max_completion_length"]
        assert len(row["rollouts"]) == 2  # the warm-up and the timed one
        assert row["memory_mb"] == {"before": None, "after_free": None}
    ratios = report["ratios"]
    for key in ("rollout_time", "scoring", "passes", "update", "tokens_per_s"):
        assert ratios[key] > 0, key
    assert ratios["peak_memory"] is None
    numerics = report["numerics"]
    assert numerics["logps_trimmed_vs_full_width_max_abs_diff"] < 1e-4  # float32 on CPU
    assert numerics["k3_dependency_mean"] > 0
    assert 0 <= numerics["k3_noise_floor_mean"] < numerics["k3_dependency_mean"]
    assert numerics["kl_dependency_mean"] > 0
    assert -1 <= numerics["kl_vs_k3_trajectory_pearson"] <= 1
    assert 0 <= numerics["kl_vs_k3_tgf_jaccard"] <= 1
    assert numerics["tgf_jaccard_if_independent"] == pytest.approx(0.25)


def test_gpu_check_without_a_gpu_says_so():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--size", "3b"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert result.returncode == 2 and "--cpu-smoke" in result.stderr


@pytest.mark.parametrize("size, layers", [("3b", 36), ("7b", 28)])
def test_released_shapes_build_a_consistent_config(size, layers, benchmark_script):
    """The full-size configuration is valid at its own depth (the tiny model's per-layer lists
    must not leak into it: on the H100 the 3B build failed on `layer_types` of length 2)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vppo.data.synthetic import SYNTHETIC_VOCAB_TEXTS
    from vppo.models import build_tiny_vlm

    gpu_check = benchmark_script("gpu_check")
    tiny, _ = build_tiny_vlm("qwen2_5_vl", vocab_texts=SYNTHETIC_VOCAB_TEXTS)
    config = gpu_check.size_config(size, tiny.config)
    assert config.text_config.num_hidden_layers == layers
    assert len(config.text_config.layer_types) == layers
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    assert len(model.model.language_model.layers) == layers
    assert len(model.model.visual.blocks) == 32


def test_the_gpu_scale_has_the_recipes_structure(benchmark_script):
    """3 updates per rollout of whole groups, images of 256-1,280 tokens, the recipe's length cap."""
    scale = benchmark_script("gpu_check").SCALES["gpu"]
    rows = scale["per_device_train_batch_size"] * scale["gradient_accumulation_steps"] * 3
    assert rows % scale["num_generations"] == 0 and scale["gradient_accumulation_steps"] > 1
    tokens = [h * w for h, w in scale["grids"]]
    assert min(tokens) == 256 and max(tokens) == 1280 and len(set(tokens)) == len(tokens)
    assert scale["max_completion_length"] == 2048
    # enough prompts for the warm-up and a few timed rollouts with their refill rounds
    assert scale["prompts"] >= 4 * 2 * rows // scale["num_generations"]
