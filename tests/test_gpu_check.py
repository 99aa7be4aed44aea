"""benchmarks/gpu_check.py keeps working: its --cpu-smoke mode runs the same code on a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def test_gpu_check_cpu_smoke_writes_both_methods_and_ratios(tmp_path, vllm_engine_ready, subprocess_env):
    out = tmp_path / "gpu_check.json"
    env = subprocess_env()
    result = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--json", str(out)],
                            capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "VPPO / DAPO: step time" in result.stdout
    report = json.loads(out.read_text())
    assert report["size"] == "tiny" and report["generation"] == "vllm"
    for method in ("dapo", "vppo"):
        assert report["methods"][method]["step_s"] > 0 and report["methods"][method]["tokens_per_s"] > 0
    assert report["ratios"]["step_time"] > 0 and report["ratios"]["peak_memory"] is None


def test_gpu_check_without_a_gpu_says_so():
    result = subprocess.run([sys.executable, str(SCRIPT), "--size", "3b"], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2 and "--cpu-smoke" in result.stderr


@pytest.mark.parametrize("size, layers", [("3b", 36), ("7b", 28)])
def test_released_shapes_build_a_consistent_config(size, layers):
    """The full-size configuration is valid at its own depth (the tiny model's per-layer lists
    must not leak into it: on the H100 the 3B build failed on `layer_types` of length 2)."""
    import importlib.util

    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vppo.data.synthetic import SYNTHETIC_VOCAB_TEXTS
    from vppo.models import build_tiny_vlm

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    tiny, _ = build_tiny_vlm("qwen2_5_vl", vocab_texts=SYNTHETIC_VOCAB_TEXTS)
    config = gpu_check.size_config(size, tiny.config)
    assert config.text_config.num_hidden_layers == layers
    assert len(config.text_config.layer_types) == layers
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    assert len(model.model.language_model.layers) == layers
    assert len(model.model.visual.blocks) == 32
