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
