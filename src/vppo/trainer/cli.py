"""`vppo train --config recipe.yaml [--field value ...]` (also under `accelerate launch`).

Arguments are parsed TRL-style: a YAML recipe supplies defaults and `--field value` flags override
it. Three dataclasses share the namespace: `TrainScriptArguments` (data, rewards, model source),
TRL's `ModelConfig` (dtype, attention, LoRA) and `VPPOConfig` (everything about training).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

logger = logging.getLogger(__name__)


@dataclass
class TrainScriptArguments:
    """Data, rewards and where the model comes from."""

    dataset_name: str = field(
        default="synthetic",
        metadata={
            "help": "Training data: a Hub dataset name, a local file or folder (parquet, JSON/JSONL, "
            "arrow, image folder) in the ViRL39K schema, or 'synthetic' for the built-in visual task."
        },
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of the training data."})
    eval_dataset_name: str | None = field(
        default=None, metadata={"help": "Optional validation data (same forms as dataset_name)."}
    )
    eval_dataset_split: str = field(default="validation", metadata={"help": "Split of the validation data."})
    image_column: str = field(default="images", metadata={"help": "Column holding the image(s)."})
    problem_column: str = field(default="problem", metadata={"help": "Column holding the question text."})
    answer_column: str = field(default="answer", metadata={"help": "Column holding the ground truth."})
    prompt_template: str | None = field(
        default=None,
        metadata={"help": "Prompt template: a built-in name, a .jinja path or an inline template; None: official."},
    )
    system_prompt: str | None = field(default=None, metadata={"help": "System message; None: the chat template's."})
    min_pixels: int | None = field(default=256 * 28 * 28, metadata={"help": "Images are upscaled to at least this."})
    max_pixels: int | None = field(default=1280 * 28 * 28, metadata={"help": "Images are downscaled to at most this."})
    max_samples: int | None = field(default=None, metadata={"help": "Train on a random subset of N rows (seeded by --seed)."})
    synthetic_train_size: int = field(default=512, metadata={"help": "Rows of the synthetic task's train split."})
    synthetic_eval_size: int = field(default=64, metadata={"help": "Rows of the synthetic task's validation split."})
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy"],
        metadata={
            "help": "Reward functions: built-in names ('accuracy', 'format', 'accuracy_with_format') or "
            "'path/to/file.py:function' / 'module:function'."
        },
    )
    tiny_model_seed: int = field(default=0, metadata={"help": "Seed for `tiny:<arch>` models."})
    scaled_down: bool = field(
        default=False,
        metadata={
            "help": "Run the recipe at CPU scale: only the size fields listed in "
            "vppo.trainer.cli.SCALED_DOWN change (model -> a tiny model of the same family, batch "
            "sizes, lengths, steps, data -> synthetic, device -> CPU); every algorithm and engine "
            "switch (vLLM, dynamic sampling, estimator, selection, TAS, delta, NLL) stays."
        },
    )


# The one list of what `--scaled_down` changes. Keys are recipe fields; everything else in the
# recipe (every algorithm and engine switch) is kept. Ratios that define the official structure
# survive: steps_per_generation = 3 x gradient_accumulation_steps (3 updates per rollout).
SCALED_DOWN: dict[str, object] = {
    # model: a tiny one of the recipe's family (SCALED_DOWN_MODELS), float32, PyTorch attention
    "dtype": "float32",
    "attn_implementation": "sdpa",
    # data: the synthetic visual task, its 56-px pictures, bare questions (what the demo model knows)
    "dataset_name": "synthetic",
    "dataset_split": "train",
    "eval_dataset_name": None,
    "synthetic_train_size": 64,
    "prompt_template": "plain",
    "min_pixels": 3136,
    "max_pixels": 3136,
    # batch sizes and lengths
    "num_generations": 2,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "steps_per_generation": 3,
    "max_completion_length": 48,
    "vllm_max_model_length": 1024,
    "vllm_gpu_memory_utilization": 0.1,
    "dynamic_sampling_max_rounds": 2,
    # steps and bookkeeping: 4 optimizer steps = 2 rollouts, the second by the updated policy
    "max_steps": 4,
    "save_strategy": "no",
    "eval_strategy": "no",
    "logging_steps": 1,
    "report_to": "none",
    # device: one CPU process (vLLM tensor parallelism needs as many GPUs per engine)
    "vllm_tensor_parallel_size": 1,
    "bf16": False,
    "use_cpu": True,
}
# model family (a substring of the recipe's model name) -> the tiny model that stands in for it.
# "warmstart" is the demo's warm-started Qwen2.5-VL: its rewards are mixed, so dynamic sampling
# keeps some groups and refills others, as in real training.
SCALED_DOWN_MODELS = {"Qwen3-VL": "tiny:qwen3_vl", "Qwen2.5-VL": "warmstart", "tiny:": None}


def _load_model(model_args, script_args, training_args):
    from vppo.models import build_tiny_vlm, load_model_and_processor

    name = model_args.model_name_or_path
    if name is None:
        raise ValueError("model_name_or_path is required (a Hub name, a local folder or tiny:<arch>).")
    if name == "warmstart":
        from vppo.demo import default_checkpoint

        name = str(default_checkpoint())
    if name.startswith("tiny:"):
        arch = name.split(":", 1)[1]
        target = Path(training_args.output_dir) / "tiny_model"
        if (target / "config.json").exists():
            return load_model_and_processor(target, dtype="float32")
        from vppo.data import render_prompt
        from vppo.data.synthetic import SYNTHETIC_VOCAB_TEXTS

        # The tokenizer learns the task's words and the prompt template's instruction sentence.
        instruction = render_prompt("", template=script_args.prompt_template or "vppo_math")
        model, processor = build_tiny_vlm(arch, target, seed=script_args.tiny_model_seed,
                                          vocab_texts=[*SYNTHETIC_VOCAB_TEXTS, instruction])
        # As if loaded from `target`: vLLM (colocate) starts its engine from the model's path.
        model.name_or_path = model.config._name_or_path = str(target)
        return model, processor
    return load_model_and_processor(
        name, dtype=model_args.dtype or "auto", attn_implementation=model_args.attn_implementation
    )


def _load_data(script_args, split: str, name: str, size: int, seed: int):
    from vppo.data import load_training_dataset

    kwargs = dict(
        split=split,
        image_column=script_args.image_column,
        problem_column=script_args.problem_column,
        answer_column=script_args.answer_column,
        prompt_template=script_args.prompt_template,
        system_prompt=script_args.system_prompt,
        min_pixels=script_args.min_pixels,
        max_pixels=script_args.max_pixels,
        max_samples=script_args.max_samples if split == script_args.dataset_split else None,
    )
    if name == "synthetic":
        from vppo.data.synthetic import make_synthetic_dataset

        raw = make_synthetic_dataset(size, split=split, seed=seed)
        return load_training_dataset(raw, **kwargs)
    return load_training_dataset(name, **kwargs)


def build_trainer(script_args, training_args, model_args):
    """Everything `vppo train` does before `trainer.train()`; returns the VPPOTrainer."""
    from trl import get_peft_config

    from vppo.rewards import load_reward_function
    from vppo.trainer.trainer import VPPOTrainer

    model, processor = _load_model(model_args, script_args, training_args)
    train = _load_data(script_args, script_args.dataset_split, script_args.dataset_name,
                       script_args.synthetic_train_size, training_args.seed)
    evaluation = None
    if script_args.eval_dataset_name:
        evaluation = _load_data(script_args, script_args.eval_dataset_split, script_args.eval_dataset_name,
                                script_args.synthetic_eval_size, training_args.seed + 1)
    rewards = [load_reward_function(spec) for spec in script_args.reward_funcs]
    return VPPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=processor,
        peft_config=get_peft_config(model_args),
    )


def resolve_resume(value: str | None, output_dir: str) -> str | bool | None:
    """`resume_from_checkpoint`: a path, or 'last'/'true' for the newest checkpoint in output_dir."""
    from transformers.trainer_utils import get_last_checkpoint

    if value is None or str(value).lower() in ("", "false", "none"):
        return None
    if str(value).lower() in ("last", "true", "auto"):
        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            logger.warning("No checkpoint in %s to resume from; starting from scratch.", output_dir)
        return last
    if not os.path.isdir(value):
        raise FileNotFoundError(f"resume_from_checkpoint: {value} is not a checkpoint folder.")
    return value


RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def recipe_path(name: str) -> Path:
    """A recipe file from a path, or a built-in name such as `qwen2_5_vl_7b_vppo` or `ablations/tas_only`."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (RECIPES_DIR / name, RECIPES_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    known = sorted(str(p.relative_to(RECIPES_DIR).with_suffix("")) for p in RECIPES_DIR.rglob("*.yaml")
                   if p.parent.name != "accelerate")
    raise FileNotFoundError(f"--config: no recipe file {name!r}; built-in recipes are {', '.join(known)}.")


def load_recipe(name: str, _seen: tuple[Path, ...] = ()) -> dict:
    """A recipe as a dict, with `base:` recipes (paths relative to the file) merged underneath."""
    path = recipe_path(name).resolve()
    if path in _seen:
        raise ValueError(f"--config: recipe {path} includes itself through `base:`.")
    with open(path) as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise ValueError(f"--config: recipe {path} must be a mapping of field: value.")
    base = values.pop("base", None)
    if base is None:
        return values
    base_path = Path(base) if Path(base).is_absolute() else path.parent / base
    return {**load_recipe(str(base_path), (*_seen, path)), **values}


def scale_down(recipe: dict) -> dict:
    """`recipe` with the SCALED_DOWN size fields replaced (and its model by a tiny one)."""
    model = str(recipe.get("model_name_or_path", ""))
    family = next((f for f in SCALED_DOWN_MODELS if f in model), None)
    if family is None:
        raise ValueError(f"--scaled_down: no tiny model stands in for model_name_or_path={model!r}; "
                         f"known families: {', '.join(f for f in SCALED_DOWN_MODELS if f != 'tiny:')}.")
    tiny = SCALED_DOWN_MODELS[family]
    scaled = {**recipe, **SCALED_DOWN, **({"model_name_or_path": tiny} if tiny else {})}
    # Never into the full run's folder (its checkpoints, its `--resume_from_checkpoint last`).
    scaled["output_dir"] = f"{recipe.get('output_dir', 'runs/recipe')}_scaled_down"
    return scaled


def _flag_value(argv: list[str], name: str) -> tuple[str | None, list[str]]:
    """The value of `--name value` / `--name=value` / bare `--name`, and argv without it."""
    for i, arg in enumerate(argv):
        if arg == name:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                return argv[i + 1], argv[:i] + argv[i + 2:]
            return "true", argv[:i] + argv[i + 1:]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return None, argv


def parse(argv: list[str] | None):
    from trl import ModelConfig, TrlParser

    from vppo.trainer.config import VPPOConfig

    argv = list(sys.argv[1:] if argv is None else argv)
    scaled, argv = _flag_value(argv, "--scaled_down")
    scaled = scaled is not None and scaled.lower() in ("true", "1", "yes")
    if scaled and "--config" not in argv:
        raise ValueError("--scaled_down scales a recipe: give one with --config.")
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ValueError("--config needs a recipe name or path.")
        merged = load_recipe(argv[i + 1])
        if scaled:
            merged = {**scale_down(merged), "scaled_down": True}
        handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="vppo_recipe_", delete=False)
        with handle:
            yaml.safe_dump(merged, handle)
        argv[i + 1] = handle.name
    parser = TrlParser((TrainScriptArguments, VPPOConfig, ModelConfig), prog="vppo train")
    return parser.parse_args_and_config(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    script_args, training_args, model_args = parse(argv)
    if not torch.cuda.is_available() and training_args.bf16:
        logger.warning("No CUDA device: training in float32 on CPU (bf16=False, use_cpu=True).")
        training_args.bf16 = False
        training_args.use_cpu = True
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    trainer = build_trainer(script_args, training_args, model_args)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(training_args.output_dir)
    return 0
