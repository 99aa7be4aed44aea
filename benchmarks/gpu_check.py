"""One-command GPU check: DAPO and VPPO steps side by side on a random Qwen2.5-VL of a real size.

Nothing is downloaded. The model is built from a configuration written below (the released 3B or
7B shapes, random weights, bf16) around the tiny tokenizer and image processor of
`vppo.models.build_tiny_vlm`, saved to a temporary folder (vLLM loads from disk) and trained on
the synthetic visual task through the real `VPPOTrainer`: first DAPO, then VPPO (k3), each for
`--steps` optimizer steps after one warm-up step, with the same settings otherwise. Generation
runs in vLLM (colocate) when it can be imported, in transformers otherwise. Printed and written as
JSON (`--json`): median step time, peak GPU memory and trained tokens per second of each method,
and VPPO's ratios to DAPO.

    python benchmarks/gpu_check.py --size 3b --json gpu_check.json     # one 80 GB GPU
    python benchmarks/gpu_check.py --size 7b --optim sgd --json gpu_check_7b.json
    python benchmarks/gpu_check.py --cpu-smoke                         # the same code, tiny, CPU

On a machine without internet where only torch, transformers and accelerate are installed, carry
the rest as wheels from a machine with internet (same Python version and platform):

    pip download -d wheels -c constraints.txt trl==1.16.0 datasets peft pyyaml jinja2 sympy \
        pylatexenc tqdm matplotlib . --no-deps        # then on the GPU machine:
    pip install --no-index --find-links wheels --no-deps wheels/*.whl
    python benchmarks/gpu_check.py --size 3b --json gpu_check.json

The test suite runs `--cpu-smoke`, so the script keeps working.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

# Released Qwen2.5-VL text and vision shapes (config.json of the Instruct checkpoints).
SIZES: dict[str, dict[str, Any]] = {
    "3b": {"text": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                        num_attention_heads=16, num_key_value_heads=2, vocab_size=151_936),
           "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                          out_hidden_size=2048)},
    "7b": {"text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                        num_attention_heads=28, num_key_value_heads=4, vocab_size=152_064),
           "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                          out_hidden_size=3584)},
}
METHODS = {"dapo": {"token_selection": "none", "use_tas": False}, "vppo": {}}


def size_config(size: str, tiny_config: Any) -> Any:
    """The Qwen2.5-VL configuration of a released `size`, on the tiny model's token ids."""
    from transformers import Qwen2_5_VLConfig

    shape = SIZES[size]
    base = tiny_config.to_dict()
    text = {**base["text_config"], **shape["text"], "max_position_embeddings": 32768}
    text.pop("layer_types", None)  # the tiny model's per-layer list; rebuilt for the new depth
    head_dim = shape["text"]["hidden_size"] // shape["text"]["num_attention_heads"]
    text["rope_parameters"] = {**text["rope_parameters"], "mrope_section": [16, 24, 24]}
    assert sum(text["rope_parameters"]["mrope_section"]) * 2 == head_dim
    vision = {**base["vision_config"], **shape["vision"], "fullatt_block_indexes": [7, 15, 23, 31]}
    ids = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **{k: base[k] for k in ids})


def build_model(size: str, folder: Path, cpu_smoke: bool) -> None:
    """Save a random Qwen2.5-VL of `size` (or the tiny one) and its processor to `folder`, once:
    every method then starts from the same weights."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from vppo.data.synthetic import SYNTHETIC_VOCAB_TEXTS
    from vppo.models import build_tiny_vlm

    tiny, processor = build_tiny_vlm("qwen2_5_vl", vocab_texts=SYNTHETIC_VOCAB_TEXTS)
    if cpu_smoke:
        model = tiny
    else:
        config = size_config(size, tiny.config)
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)  # build in bf16: no fp32 copy of the weights
        try:
            torch.manual_seed(0)
            with torch.device("cuda"):
                model = Qwen2_5_VLForConditionalGeneration(config)
        finally:
            torch.set_default_dtype(default)
        model.generation_config = tiny.generation_config
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


class _StepTimer:
    """Wall time of each optimizer step (a TrainerCallback, imported lazily)."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Timer(TrainerCallback):
            def __init__(self):
                self.times: list[float] = []
                self._start = 0.0

            def on_step_begin(self, args, state, control, **kwargs):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                self.times.append(time.perf_counter() - self._start)

        return Timer()


def run_method(method: str, folder: Path, args: argparse.Namespace, use_vllm: bool) -> dict[str, float]:
    from vppo.data import load_training_dataset
    from vppo.data.synthetic import make_synthetic_dataset
    from vppo.evaluation.generation import shutdown_vllm_engine
    from vppo.models import load_model_and_processor
    from vppo.rewards import accuracy_reward
    from vppo.trainer import VPPOConfig, VPPOTrainer

    model, processor = load_model_and_processor(
        folder / "model", dtype="float32" if args.cpu_smoke else "bfloat16",
        device_map=None if args.cpu_smoke else "cuda")

    data = load_training_dataset(make_synthetic_dataset(64, split="train", seed=0),
                                 prompt_template="plain", min_pixels=3136, max_pixels=3136)
    config = VPPOConfig(
        output_dir=str(folder / f"run_{method}"), max_steps=args.steps + 1, learning_rate=1e-6,
        per_device_train_batch_size=args.batch, num_generations=4, gradient_accumulation_steps=1,
        steps_per_generation=1, max_completion_length=args.completion_tokens,
        dynamic_sampling=False, save_strategy="no", report_to="none", logging_steps=1,
        bf16=not args.cpu_smoke, use_cpu=args.cpu_smoke, gradient_checkpointing=not args.cpu_smoke,
        use_vllm=use_vllm, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3,
        vllm_max_model_length=1024, vllm_importance_sampling_correction=False, seed=0,
        optim=args.optim,
        **METHODS[method],
    )
    trainer = VPPOTrainer(model=model, reward_funcs=[accuracy_reward], args=config,
                          train_dataset=data, processing_class=processor)
    timer = _StepTimer()
    trainer.add_callback(timer)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    logs = [e for e in trainer.state.log_history if "num_tokens" in e]
    steps = timer.times[1:]  # the first step warms up kernels and the engine
    tokens = logs[-1]["num_tokens"] - logs[0]["num_tokens"]  # after the warm-up step
    result = {
        "step_s": statistics.median(steps),
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0,
        "tokens_per_s": tokens / sum(steps),
    }
    # Free the engine before the next method starts its own.
    shutdown_vllm_engine(getattr(getattr(trainer, "vllm_generation", None), "llm", None))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="3b", help="released shape to build")
    parser.add_argument("--steps", type=int, default=3, choices=range(1, 1001), metavar="STEPS",
                        help="timed optimizer steps per method (1-1000)")
    parser.add_argument("--batch", type=int, default=8, help="responses per step")
    parser.add_argument("--completion-tokens", type=int, default=256, help="max new tokens")
    parser.add_argument("--optim", default="adamw_torch",
                        help="optimizer (TrainingArguments.optim); 7b on one 80 GB card needs a "
                        "stateless one such as sgd: AdamW state alone is 30 GB in bf16")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="the same code on a tiny model on CPU (what the test suite runs)")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        args.steps, args.batch, args.completion_tokens = 2, 4, 16
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device; run with --cpu-smoke for the CPU version.", file=sys.stderr)
        return 2
    import importlib.util

    use_vllm = importlib.util.find_spec("vllm") is not None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results = {}
        build_model(args.size, folder / "model", args.cpu_smoke)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        for method in METHODS:  # each method starts from the same saved random weights
            results[method] = run_method(method, folder, args, use_vllm)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    report = {
        "device": device, "size": "tiny" if args.cpu_smoke else args.size,
        "generation": "vllm" if use_vllm else "transformers", "torch": torch.__version__,
        "methods": results,
        "ratios": {
            "step_time": results["vppo"]["step_s"] / results["dapo"]["step_s"],
            "peak_memory": (results["vppo"]["peak_mb"] / results["dapo"]["peak_mb"]
                            if results["dapo"]["peak_mb"] else None),
            "tokens_per_s": results["vppo"]["tokens_per_s"] / results["dapo"]["tokens_per_s"],
        },
    }
    print(f"{report['size']} Qwen2.5-VL on {device}, generation: {report['generation']}")
    print(f"{'method':<8}{'step s':>10}{'peak MB':>12}{'tokens/s':>12}")
    for method, r in results.items():
        print(f"{method:<8}{r['step_s']:>10.3f}{r['peak_mb']:>12.0f}{r['tokens_per_s']:>12.1f}")
    ratios = report["ratios"]
    memory = f"{ratios['peak_memory']:.3f}" if ratios["peak_memory"] else "n/a (CPU)"
    print(f"VPPO / DAPO: step time {ratios['step_time']:.3f}, peak memory {memory}, "
          f"tokens/s {ratios['tokens_per_s']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
