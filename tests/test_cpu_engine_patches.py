"""The CPU-engine patches load in test processes only, never in a user's run from the same venv."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = "import sys; print('vppo_cpu_engine_patches' in sys.modules)"


def _loaded(env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                            timeout=120, check=True)
    return result.stdout.strip()


def test_the_patches_load_only_under_the_test_switch(vllm_engine_ready):
    assert "vppo_cpu_engine_patches" in sys.modules and os.environ["VPPO_CPU_ENGINE_PATCHES"] == "1"
    user = {k: v for k, v in os.environ.items() if k != "VPPO_CPU_ENGINE_PATCHES"}
    assert _loaded(user) == "False"  # `make demo`, `vppo train`: unpatched
    assert _loaded(dict(os.environ)) == "True"  # a process a test starts inherits the switch
