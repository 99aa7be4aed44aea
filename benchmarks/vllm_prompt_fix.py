"""vLLM colocate vs the trainer, with each half of the prompt fix switched off, side by side.

    .venv/bin/python benchmarks/vllm_prompt_fix.py        # real vLLM (CPU build), ~1 min

Runs the rollout of tests/trainer/test_vllm_equality.py (a tiny random Qwen2.5-VL, float32; rows with one
image, two images and none) four times: with both fixes, without handing vLLM each image's
placeholder run once (`collapse_placeholder_runs`; the runtime prompt check is switched off with
it), without building the engine in the trainer's dtype, and without either. Prints the image
placeholders vLLM ran per row, the largest and mean |Δ log p| between vLLM's sampled-token
log-probs and the trainer's (biased, like with like) and the range of the raw ratio
exp(old − vLLM) TRL's importance sampling would use. Each configuration runs in its own process.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
MODES = ("fixed", "no_collapse", "no_dtype", "neither")


def measure(mode: str) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "trainer"))
    sys.path.insert(0, str(ROOT / "tests"))
    import conftest  # noqa: F401  (the test environment: 1 GiB KV cache, no compile, offline)
    import test_vllm_equality as equality
    import torch

    import vppo.trainer.trainer as trainer_module

    if mode in ("no_collapse", "neither"):
        trainer_module.collapse_placeholder_runs = lambda ids, token: list(ids)
        trainer_module.check_vllm_prompts = lambda *args: None
    if mode in ("no_dtype", "neither"):
        # vLLM's own "auto" dtype (bfloat16 for a float32 checkpoint), the image options kept.
        engine_options = trainer_module._vllm_engine_options
        trainer_module._vllm_engine_options = lambda dtype, processor=None: engine_options(
            None if dtype is None else "auto", processor
        )

    class Folders:
        root = Path(tempfile.mkdtemp())

        def mktemp(self, name):
            (self.root / name).mkdir()
            return self.root / name

    folders = Folders()
    # The equality test's Qwen2.5-VL case (its `tiny` fixture is parametrised by architecture).
    tiny = equality.tiny.__wrapped__(SimpleNamespace(param="qwen2_5_vl"), folders)
    trainer, _, ran, scored = next(equality.colocate.__wrapped__(tiny, folders))
    ((_, out),) = scored
    mask = out["completion_mask"].bool()
    placeholder = trainer.vision.image_token_id
    gap = (out["sampling_per_token_logps"] - out["biased_logps"])[mask].abs()
    ratio = torch.exp(out["old_per_token_logps"] - out["sampling_per_token_logps"])[mask]
    print(
        f"{mode:<12} placeholders {[ids.count(placeholder) for ids in ran]}  max |dlogp| {gap.max():.2e}  "
        f"mean {gap.mean():.2e}  ratio [{ratio.min():.4f}, {ratio.max():.4f}]",
        flush=True,
    )


def main() -> int:
    if len(sys.argv) > 1:
        measure(sys.argv[1])
        return 0
    print(
        "trainer's rows: placeholders [4, 4, 18, 18, 0, 0]; ratio = 1 - p(banned tokens) when right"
    )
    for mode in MODES:
        result = subprocess.run(
            [sys.executable, __file__, mode], capture_output=True, text=True, cwd=ROOT
        )
        lines = [line for line in result.stdout.splitlines() if line.startswith(mode)]
        print(lines[-1] if lines else f"{mode}: failed\n{result.stderr[-2000:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
