"""Recipes: the YAML files behind `vppo train --config`, their `base:` inheritance, `--scaled_down`.

A recipe is a mapping of field: value over the three dataclasses `vppo train` parses
(`TrainScriptArguments`, `VPPOConfig`, TRL's `ModelConfig`). `load_recipe` reads one, with the
recipes it names under `base:` merged underneath; `scale_down` replaces its size fields with
CPU-sized ones; `parse_with_recipe` hands the merged mapping to the argument parser as its
defaults, so that `--field value` flags still override it. The mapping goes to the parser as a
dict: nothing is written to disk.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "RECIPES_DIR",
    "SCALED_DOWN",
    "SCALED_DOWN_MODELS",
    "flag_value",
    "load_recipe",
    "parse_with_recipe",
    "recipe_from_argv",
    "recipe_path",
    "scale_down",
    "truthy",
]

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"

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
    # GPU memory only: vLLM's sleep mode needs the CUDA/ROCm/XPU allocator; on CPU vLLM refuses to
    # start ("Sleep mode is not supported on current platform.", vllm/config/model.py)
    "vllm_enable_sleep_mode": False,
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
SCALED_DOWN_MODELS = {
    "Qwen3-VL": "tiny:qwen3_vl",
    "Qwen3.5": "tiny:qwen3_5",
    "Qwen2.5-VL": "warmstart",
    "tiny:": None,
}

# Tiny models whose layers vLLM's CPU build runs in bfloat16 only: their scaled-down vLLM runs train
# with bf16 autocast so that vLLM gets a bfloat16 engine (Qwen3.5's gated delta nets:
# vllm/model_executor/layers/mamba/ops/cpu/gdn_attention.py, "CPU GDN attention requires BF16.").
BF16_ONLY_ON_CPU_VLLM = frozenset({"tiny:qwen3_5"})


def recipe_path(name: str) -> Path:
    """A recipe file from a path, or a built-in name such as `qwen2_5_vl_7b_vppo` or `ablations/tas_only`."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (RECIPES_DIR / name, RECIPES_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"--config: no recipe file {name!r}; built-in recipes are {_built_in_names()}."
    )


def _built_in_names() -> str:
    """The built-in recipes' names, comma-separated (accelerate configs excluded)."""
    return ", ".join(
        sorted(
            str(p.relative_to(RECIPES_DIR).with_suffix(""))
            for p in RECIPES_DIR.rglob("*.yaml")
            if p.parent.name != "accelerate"
        )
    )


def _read_yaml(path: Path):
    """A recipe file's YAML (safe_load), or ValueError naming the file, the line and what to do."""
    from vppo.data.settings import read_yaml_file

    return read_yaml_file(
        path, f"--config: recipe {path}", "give a YAML file of field: value lines"
    )


def load_recipe(name: str, _seen: tuple[Path, ...] = ()) -> dict:
    """A recipe as a dict, with `base:` recipes merged underneath: a path relative to the file, or
    a built-in name (so a user's own YAML can say `base: qwen2_5_vl_7b_vppo`)."""
    path = recipe_path(name).resolve()
    if path in _seen:
        raise ValueError(f"--config: recipe {path} includes itself through `base:`.")
    values = _read_yaml(path) or {}
    if not isinstance(values, dict):
        raise ValueError(f"--config: recipe {path} must be a mapping of field: value.")
    base = values.pop("base", None)
    if base is None:
        return values
    base_path = Path(base) if Path(base).is_absolute() else path.parent / base
    if not base_path.is_file():
        try:
            base_path = recipe_path(str(base))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"--config: recipe {path} has base: {base!r}, which is neither a file next to it nor "
                f"a built-in recipe; built-in recipes are {_built_in_names()}."
            ) from None
    return {**load_recipe(str(base_path), (*_seen, path)), **values}


def scale_down(recipe: dict) -> dict:
    """`recipe` with the SCALED_DOWN size fields replaced (and its model by a tiny one)."""
    model = str(recipe.get("model_name_or_path", ""))
    family = next((f for f in SCALED_DOWN_MODELS if f in model), None)
    if family is None:
        raise ValueError(
            f"--scaled_down: no tiny model stands in for model_name_or_path={model!r}; "
            f"known families: {', '.join(f for f in SCALED_DOWN_MODELS if f != 'tiny:')}."
        )
    tiny = SCALED_DOWN_MODELS[family]
    scaled = {**recipe, **SCALED_DOWN, **({"model_name_or_path": tiny} if tiny else {})}
    if tiny in BF16_ONLY_ON_CPU_VLLM and scaled.get("use_vllm"):
        scaled["bf16"] = True
    # Never into the full run's folder (its checkpoints, its `--resume_from_checkpoint last`).
    scaled["output_dir"] = f"{recipe.get('output_dir', 'runs/recipe')}_scaled_down"
    return scaled


def flag_value(argv: list[str], name: str) -> tuple[str | None, list[str]]:
    """The value of `--name value` / `--name=value` / bare `--name`, and argv without it."""
    for i, arg in enumerate(argv):
        if arg == name:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                return argv[i + 1], argv[:i] + argv[i + 2 :]
            return "true", argv[:i] + argv[i + 1 :]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1 :]
    return None, argv


def truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("true", "1", "yes", "on")


def recipe_from_argv(argv: list[str]) -> tuple[dict | None, list[str]]:
    """The recipe `--config NAME [--scaled_down]` asks for (merged over its bases, scaled down if
    asked), and argv without those two flags; (None, argv) without `--config`."""
    scaled, argv = flag_value(list(argv), "--scaled_down")
    scaled = truthy(scaled)
    if scaled and "--config" not in argv:
        raise ValueError("--scaled_down scales a recipe: give one with --config.")
    if "--config" not in argv:
        return None, argv
    i = argv.index("--config")
    if i + 1 >= len(argv):
        raise ValueError("--config needs a recipe name or path.")
    recipe = load_recipe(argv[i + 1])
    if scaled:
        recipe = {**scale_down(recipe), "scaled_down": True}
    return recipe, argv[:i] + argv[i + 2 :]


def parse_with_recipe(parser, recipe: dict | None, argv: list[str]) -> tuple:
    """The parser's dataclasses from `argv`, with `recipe`'s values as the defaults that the flags
    override.

    What TRL's `TrlParser.parse_args_and_config` does with a `--config` file, from the dict: an
    `env:` mapping is set in the environment, every other key becomes its field's default (string
    values are converted by the field's type, as a flag's would be), and a key that is no field
    is refused.
    """
    if recipe:
        recipe = dict(recipe)
        if "env" in recipe:
            env = recipe.pop("env", {})
            if not isinstance(env, dict):
                raise ValueError("`env` field should be a dict in the YAML file.")
            for key, value in env.items():
                os.environ[key] = str(value)
        unknown = parser.set_defaults_with_config(**recipe)
        if unknown:
            raise ValueError(
                f"Unknown arguments from config file: {unknown}. Please remove them, add them to the "
                "dataclass, or set `fail_with_unknown_args=False`."
            )
    return parser.parse_args_into_dataclasses(args=argv)
