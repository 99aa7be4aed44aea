"""The CPU-engine patches load in test processes only, never in a user's run from the same venv.

The test install brings a torchvision wheel that cannot import beside the CPU torch; the repair that
lets it import applies everywhere in that environment (``make demo`` must start), the vLLM and
accelerate patches only under the test switch.
"""

from __future__ import annotations

import os
import subprocess
import sys

import vppo_cpu_engine_patches

PROBE = """
import sys
import vppo_cpu_engine_patches as patches
import transformers.models.qwen2_vl.image_processing_qwen2_vl  # imports torchvision
import vppo.trainer  # transformers, TRL
import vllm.model_executor.layers.utils as layer_utils
print(patches.engine_patches_on(), getattr(layer_utils.dispatch_cpu_unquantized_gemm, "vppo_patched", False))
"""


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)


def test_the_engine_patches_load_only_under_the_test_switch(vllm_engine_ready):
    assert (
        vppo_cpu_engine_patches.engine_patches_on() and os.environ["VPPO_CPU_ENGINE_PATCHES"] == "1"
    )
    user = {k: v for k, v in os.environ.items() if k != "VPPO_CPU_ENGINE_PATCHES"}
    unpatched = _run([sys.executable, "-c", PROBE], user)
    assert unpatched.returncode == 0, unpatched.stderr[-2000:]
    assert unpatched.stdout.split() == [
        "False",
        "False",
    ]  # `make demo`, `vppo train`: engines unpatched
    patched = _run([sys.executable, "-c", PROBE], dict(os.environ))
    assert patched.returncode == 0, patched.stderr[-2000:]
    assert patched.stdout.split() == ["True", "True"]  # a process a test starts inherits the switch


def test_the_demo_and_train_commands_start_in_the_test_environment_unpatched(vllm_engine_ready):
    user = {k: v for k, v in os.environ.items() if k != "VPPO_CPU_ENGINE_PATCHES"}
    vppo = [sys.executable, "-m", "vppo.cli"]
    for command in (["demo", "--help"], ["train", "--help"]):
        result = _run([*vppo, *command], user)
        assert result.returncode == 0, f"vppo {' '.join(command)}: {result.stderr[-2000:]}"
        assert "usage" in result.stdout.lower()
