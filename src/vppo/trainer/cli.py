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

from vppo.data.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS

# Recipe loading and scaling down live in recipes.py; these names stay importable from here.
from vppo.trainer.recipes import (  # noqa: F401
    RECIPES_DIR,
    SCALED_DOWN,
    SCALED_DOWN_MODELS,
    load_recipe,
    parse_with_recipe,
    recipe_from_argv,
    recipe_path,
    scale_down,
)
from vppo.trainer.recipes import flag_value as _flag_value
from vppo.trainer.recipes import truthy as _truthy

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
    eval_dataset_split: str = field(
        default="validation", metadata={"help": "Split of the validation data."}
    )
    image_column: str = field(default="images", metadata={"help": "Column holding the image(s)."})
    problem_column: str = field(
        default="problem", metadata={"help": "Column holding the question text."}
    )
    answer_column: str = field(
        default="answer", metadata={"help": "Column holding the ground truth."}
    )
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "Prompt template: a built-in name, a .jinja path or an inline template. None: the "
            "model folder's recorded one (vppo_prompt.json / vppo_warmstart.json), else vppo_math "
            "(official). Same option and default in vppo eval and vppo analyze."
        },
    )
    system_prompt: str | None = field(
        default=None,
        metadata={
            "help": "System message. None: the model folder's recorded one, else the chat template's."
        },
    )
    min_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Images are upscaled to at least this. None: the model folder's recorded value, "
            f"else {DEFAULT_MIN_PIXELS} (every command's default; the official recipes set 200704)."
        },
    )
    max_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Images are downscaled to at most this. None: the model folder's recorded value, "
            f"else {DEFAULT_MAX_PIXELS} (every command's default; the official recipes set 1003520)."
        },
    )
    max_samples: int | None = field(
        default=None, metadata={"help": "Train on a random subset of N rows (seeded by --seed)."}
    )
    synthetic_train_size: int = field(
        default=512, metadata={"help": "Rows of the synthetic task's train split."}
    )
    synthetic_eval_size: int = field(
        default=64, metadata={"help": "Rows of the synthetic task's validation split."}
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy"],
        metadata={
            "help": "Reward functions: built-in names ('accuracy', 'format', 'accuracy_with_format') or "
            "'path/to/file.py:function' / 'module:function'."
        },
    )
    max_prompt_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Rows whose prompt text (system prompt + rendered problem, image tokens not "
            "counted) has more tokens are skipped, with a count in the log. None: the model's "
            "context (max_position_embeddings) minus max_completion_length; 0: no cap."
        },
    )
    validate_images: str = field(
        default="header",
        metadata={
            "help": "Image checks before training: 'header' (open every image's header: missing "
            "files, non-images, sizes; fast) or 'full' (also decode every image: catches truncated "
            "files before training; slow on large sets). An image that still fails to decode "
            "during training is replaced by the first readable row, with a warning naming it.",
            "choices": ["header", "full"],
        },
    )
    skip_bad_rows: bool = field(
        default=False,
        metadata={
            "help": "Skip rows that fail the checks (with a count per field) instead of stopping at the first."
        },
    )
    tiny_model_seed: int = field(default=0, metadata={"help": "Seed for `tiny:<arch>` models."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start a new run in an output_dir that holds another run's checkpoints, deleting "
            "them first (without it such a folder is refused; --resume_from_checkpoint last continues it)."
        },
    )
    scaled_down: bool = field(
        default=False,
        metadata={
            "help": "Run the recipe at CPU scale: only the size fields listed in "
            "vppo.trainer.recipes.SCALED_DOWN change (model -> a tiny model of the same family, batch "
            "sizes, lengths, steps, data -> synthetic, device -> CPU); every algorithm and engine "
            "switch (vLLM, dynamic sampling, estimator, selection, TAS, delta, NLL) stays."
        },
    )


def check_output_dir(path: str) -> None:
    """Fail before training, not at the first save: the folder must be creatable and writable."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output_dir {path} exists and is a file, not a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"output_dir {path} is not writable ({err.strerror or err}).") from err


def resolve_model_name(name: str | None) -> str:
    """`model_name_or_path` with the `warmstart` alias resolved to the shipped demo checkpoint."""
    if name is None:
        raise ValueError(
            "model_name_or_path is required (a Hub name, a local folder or tiny:<arch>)."
        )
    if name == "warmstart":
        from vppo.models.checkpoints import default_checkpoint

        return str(default_checkpoint())
    return name


def _load_model(model_args, script_args, training_args):
    from vppo.models import build_tiny_vlm, load_model_and_processor

    name = resolve_model_name(model_args.model_name_or_path)
    if name.startswith("tiny:"):
        arch = name.split(":", 1)[1]
        target = Path(training_args.output_dir) / "tiny_model"
        # Several processes: the first of each node builds and saves, the others then load it.
        with training_args.main_process_first(local=True, desc="building the tiny model"):
            if (target / "config.json").exists():
                return load_model_and_processor(target, dtype="float32")
            from vppo.data import render_prompt
            from vppo.data.synthetic import SYNTHETIC_VOCAB_TEXTS

            # The tokenizer learns the task's words and the prompt template's instruction sentence.
            instruction = render_prompt("", template=script_args.prompt_template or "vppo_math")
            model, processor = build_tiny_vlm(
                arch,
                target,
                seed=script_args.tiny_model_seed,
                vocab_texts=[*SYNTHETIC_VOCAB_TEXTS, instruction],
            )
            # As if loaded from `target`: vLLM (colocate) starts its engine from the model's path.
            model.name_or_path = model.config._name_or_path = str(target)
            return model, processor
    return load_model_and_processor(
        name,
        dtype=model_args.dtype or "auto",
        attn_implementation=model_args.attn_implementation,
        trust_remote_code=bool(getattr(model_args, "trust_remote_code", False)),
        label="model_name_or_path",
    )


def prompt_token_cap(script_args, training_args, model) -> int | None:
    """`max_prompt_tokens`, defaulting to the model's context minus the completion budget."""
    cap = script_args.max_prompt_tokens
    if cap is not None:
        if cap < 0:
            raise ValueError(
                f"max_prompt_tokens must be a positive number of tokens or 0 (no cap), got {cap}."
            )
        return cap or None
    context = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if not context:
        return None
    cap = int(context) - int(training_args.max_completion_length or 0)
    if cap < 1:
        raise ValueError(
            f"max_completion_length={training_args.max_completion_length} leaves no room for a prompt "
            f"in the model's context of {context} tokens."
        )
    return cap


def _load_data(
    script_args, split: str, name: str, size: int, seed: int, tokenizer=None, max_prompt_tokens=None
):
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
        validate=script_args.validate_images,
        on_error="skip" if script_args.skip_bad_rows else "raise",
        max_prompt_tokens=max_prompt_tokens,
        tokenizer=tokenizer if max_prompt_tokens else None,
        skip_long_prompts=True,
    )
    if name == "synthetic":
        from vppo.data.synthetic import make_synthetic_dataset

        raw = make_synthetic_dataset(size, split=split, seed=seed)
        return load_training_dataset(raw, **kwargs)
    return load_training_dataset(name, **kwargs)


def build_trainer(script_args, training_args, model_args):
    """Everything `vppo train` does before `trainer.train()`; returns the VPPOTrainer."""
    from trl import get_peft_config

    from vppo.models.processors import set_image_pixel_limits
    from vppo.rewards import load_reward_function
    from vppo.trainer.trainer import VPPOTrainer

    rewards = [load_reward_function(spec) for spec in script_args.reward_funcs]
    check_dynamic_sampling_reward(training_args, [f.__name__ for f in rewards])
    apply_prompt_settings(script_args, model_args.model_name_or_path)
    model, processor = _load_model(model_args, script_args, training_args)
    # The processor resizes into the run's pixel range (the loader's), and vLLM is handed the same.
    set_image_pixel_limits(processor, script_args.min_pixels, script_args.max_pixels)
    cap = prompt_token_cap(script_args, training_args, model)
    train = _load_data(
        script_args,
        script_args.dataset_split,
        script_args.dataset_name,
        script_args.synthetic_train_size,
        training_args.seed,
        processor,
        cap,
    )
    evaluation = None
    if script_args.eval_dataset_name:
        evaluation = _load_data(
            script_args,
            script_args.eval_dataset_split,
            script_args.eval_dataset_name,
            script_args.synthetic_eval_size,
            training_args.seed + 1,
            processor,
            cap,
        )
    trainer = VPPOTrainer(
        model=model,
        reward_funcs=rewards,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=processor,
        peft_config=get_peft_config(model_args),
    )
    trainer.add_callback(prompt_settings_callback(prompt_settings(script_args)))
    return trainer


def prompt_settings(script_args):
    """The prompt options this run trains with, as `vppo_prompt.json` records them."""
    from vppo.data.settings import PromptSettings

    return PromptSettings(
        script_args.prompt_template,
        script_args.system_prompt,
        script_args.min_pixels,
        script_args.max_pixels,
    )


def prompt_settings_callback(settings):
    """A TrainerCallback writing `vppo_prompt.json` into each `checkpoint-N` the Trainer saves, so
    that `vppo eval` / `analyze` given an intermediate checkpoint prompt as training did."""
    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    from vppo.data.settings import write_prompt_settings

    class WritePromptSettings(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                write_prompt_settings(folder, settings)

    return WritePromptSettings()


def check_dynamic_sampling_reward(training_args, names: list[str]) -> None:
    """A misspelt `dynamic_sampling_reward` would silently filter on the total reward."""
    wanted = training_args.dynamic_sampling_reward
    if not training_args.dynamic_sampling or wanted in names or wanted == "total":
        return
    if wanted == "accuracy":  # the default: runs without an accuracy reward filter on the total
        logger.info(
            "No reward function named 'accuracy': dynamic sampling filters on the weighted total."
        )
        return
    raise ValueError(
        f"dynamic_sampling_reward {wanted!r} is not a reward function of this run; choose one of "
        f"{', '.join([*names, 'total'])} ('total': the weighted sum of all rewards)."
    )


def apply_prompt_settings(script_args, model_name: str | None) -> None:
    """Fill unset template / system prompt / pixel limits from the model folder, else the defaults."""
    from vppo.data.settings import apply_prompt_settings as apply

    name = resolve_model_name(model_name)
    settings = apply(script_args, None if name.startswith("tiny:") else name)
    logger.info("Prompts: %s.", settings.describe())


def resolve_resume(value: str | None, output_dir: str) -> str | bool | None:
    """`resume_from_checkpoint`: a path, or 'last'/'true' for the newest complete checkpoint in
    output_dir (newer incomplete or corrupt ones are skipped, one line each)."""
    from vppo.trainer.resume import checkpoint_problem, last_complete_checkpoint

    if value is None or str(value).lower() in ("", "false", "none"):
        return None
    if str(value).lower() in ("last", "true", "auto"):
        last, skipped = last_complete_checkpoint(output_dir)
        for problem in skipped:
            logger.warning("Skipping %s", problem[0].lower() + problem[1:])
        if last is None:
            logger.warning(
                "No complete checkpoint in %s to resume from; starting from scratch.", output_dir
            )
            return None
        if skipped:
            logger.warning("Resuming from %s instead.", last)
        return str(last)
    if not os.path.isdir(value):
        raise FileNotFoundError(f"resume_from_checkpoint: {value} is not a checkpoint folder.")
    problem = checkpoint_problem(value)
    if problem is not None:
        raise ValueError(f"resume_from_checkpoint: {problem}")
    return value


def claim_output_dir(output_dir: str, resume: str | None, overwrite: bool) -> None:
    """One run per folder: refuse a new run into a folder holding another run's checkpoints
    (unless `overwrite`, which deletes them), before anything is written."""
    import shutil

    from vppo.trainer.resume import numbered_checkpoints

    found = [path.name for path in numbered_checkpoints(output_dir)]
    if not found or resume is not None:
        return
    if not overwrite:
        shown = ", ".join(found[:3]) + (f", ... ({len(found)} in all)" if len(found) > 3 else "")
        raise ValueError(
            f"output_dir {output_dir} holds another run's checkpoints ({shown}): continue that run with "
            "--resume_from_checkpoint last, or start over in it with --overwrite_output_dir true (deletes them)."
        )
    if _is_main_process():
        for name in found:
            shutil.rmtree(os.path.join(output_dir, name))
        logger.warning(
            "Deleted %d checkpoints of an earlier run in %s (--overwrite_output_dir).",
            len(found),
            output_dir,
        )


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


LOCK_FILE = ".vppo_train.lock"


class OutputDirLock:
    """`output_dir/.vppo_train.lock` while a run trains there (held by the main process): a second
    `vppo train` into the folder is refused; a lock whose process is gone (a crash, kill -9) is
    taken over, saying so."""

    def __init__(self, output_dir: str):
        self.path = Path(output_dir) / LOCK_FILE
        self.held = False

    def __enter__(self) -> OutputDirLock:
        import json
        import socket
        import time

        if not _is_main_process():
            return self
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    owner = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    owner = {}
                if _process_alive(owner):
                    raise ValueError(
                        f"output_dir {self.path.parent} is in use by another vppo train (pid {owner.get('pid')} "
                        f"on {owner.get('host')}, since {owner.get('since')}); wait for it or choose another "
                        f"output_dir (if that run is gone, delete {self.path})."
                    ) from None
                logger.warning(
                    "Taking over %s, left by a run that no longer runs (pid %s on %s).",
                    self.path,
                    owner.get("pid"),
                    owner.get("host"),
                )
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(me, handle)
            self.held = True
            return self
        raise ValueError(f"could not take the lock {self.path}.")

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _process_alive(owner: dict) -> bool:
    """Whether the lock's process still runs: on another host it is assumed to; here, asked."""
    import socket

    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    if owner.get("host") != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


USAGE = (
    "vppo train [--accelerate_config NAME] [--config RECIPE] [--scaled_down] [--debug] "
    "[--FIELD VALUE ...]"
)
DESCRIPTION = """\
Train a vision-language model with VPPO (or the DAPO / GRPO baselines) through TRL.
A YAML recipe (--config: a built-in name such as tiny_vppo or qwen2_5_vl_7b_vppo, or a path) sets
the defaults; every --FIELD VALUE flag overrides it. Bad input (a missing file, a bad row, a field
out of range) ends with one line and exit code 2; --debug (or VPPO_DEBUG=1) shows the traceback.
Ctrl-C says which checkpoint was saved; --resume_from_checkpoint last continues from it.

  vppo train --config tiny_vppo --model_name_or_path warmstart \\
      --dataset_name data/train.parquet --output_dir runs/mine

Several GPUs or nodes: --accelerate_config NAME (a shipped config: fsdp2_8gpu, fsdp2_32gpu,
zero3_8gpu, zero3_32gpu; or a YAML path) runs `accelerate launch` with it; --num_processes,
--num_machines, --machine_rank, --main_process_ip, --main_process_port, --mixed_precision and
--cpu go to the launcher:

  vppo train --accelerate_config zero3_8gpu --config qwen2_5_vl_7b_vppo
"""
# Fields shown first in `--help`, before TRL's and transformers' ~450 flags.
HELP_COMMON = (
    "model_name_or_path",
    "dtype",
    "output_dir",
    "max_steps",
    "num_train_epochs",
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "steps_per_generation",
    "num_generations",
    "max_completion_length",
    "temperature",
    "top_p",
    "loss_type",
    "epsilon",
    "epsilon_high",
    "beta",
    "use_vllm",
    "vllm_mode",
    "bf16",
    "use_cpu",
    "gradient_checkpointing",
    "save_strategy",
    "save_steps",
    "logging_steps",
    "report_to",
    "resume_from_checkpoint",
    "seed",
)


def format_help() -> str:
    """`vppo train --help`: the recipe, data and VPPO options first, then TRL's full list."""
    import argparse
    from dataclasses import fields

    from vppo.trainer.config import VPPOConfig

    parser = build_parser()
    actions = {a.dest: a for a in parser._actions}
    inherited = {f.name for f in fields(VPPOConfig.__mro__[1])}
    sections = [
        (
            "recipe",
            [
                argparse.Action(
                    ["--config"],
                    "config",
                    metavar="RECIPE",
                    default=argparse.SUPPRESS,
                    help="a built-in recipe name or a YAML path (see docs/trainer.md)",
                ),
                argparse.Action(
                    ["--scaled_down"],
                    "scaled_down",
                    nargs=0,
                    default=argparse.SUPPRESS,
                    help=actions["scaled_down"].help,
                ),
                argparse.Action(
                    ["--debug"],
                    "debug",
                    nargs=0,
                    default=argparse.SUPPRESS,
                    help="show the traceback of an error (also VPPO_DEBUG=1)",
                ),
            ],
        ),
        (
            "data, rewards and model source",
            [actions[f.name] for f in fields(TrainScriptArguments) if f.name != "scaled_down"],
        ),
        (
            "VPPO algorithm (VPPOConfig)",
            [actions[f.name] for f in fields(VPPOConfig) if f.name not in inherited],
        ),
        ("common TRL / transformers options", [actions[n] for n in HELP_COMMON if n in actions]),
    ]

    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    formatter = Formatter(prog="vppo train")
    formatter.add_usage(USAGE, [], [])
    formatter.add_text(DESCRIPTION)
    for title, group in sections:
        formatter.start_section(title)
        formatter.add_arguments(group)
        formatter.end_section()
    formatter.add_text(
        "Every other field of TRL's GRPOConfig, transformers' TrainingArguments and "
        "TRL's ModelConfig follows (the full list)."
    )
    full = parser.format_help()
    full = full.split("\n", 1)[1] if full.startswith("usage") else full
    return formatter.format_help() + "\nall options:\n" + full


def _quiet_parser_errors(parser) -> None:
    """argparse errors as one line (its usage line would list ~450 TRL flags)."""

    def error(message: str):
        print(f"vppo train: {message} (see vppo train --help)", file=sys.stderr)
        raise SystemExit(2)

    parser.error = error


def build_parser():
    from trl import ModelConfig, TrlParser

    from vppo.trainer.config import VPPOConfig

    parser = TrlParser(
        (TrainScriptArguments, VPPOConfig, ModelConfig), prog="vppo train", usage=USAGE
    )
    _quiet_parser_errors(parser)
    return parser


def parse(argv: list[str] | None):
    argv = list(sys.argv[1:] if argv is None else argv)
    recipe, argv = recipe_from_argv(argv)
    # A scaled-down recipe has chosen its CPU settings already (use_cpu, and bf16 where it needs it).
    chosen = recipe is not None and recipe.get("use_cpu") is True
    if not (torch.cuda.is_available() or chosen) and not any(
        a.split("=")[0] in ("--bf16", "--use_cpu") for a in argv
    ):
        # TrainingArguments refuses its bf16 default (and the recipes' bf16: true) without a GPU.
        logger.warning("No CUDA device: training in float32 on CPU (bf16=False, use_cpu=True).")
        argv += ["--bf16", "false", "--use_cpu", "true"]
    return parse_with_recipe(build_parser(), recipe, argv)


def _interrupted_message(
    trainer, output_dir: str, argv: list[str], how: str = "interrupted"
) -> str:
    """What an interruption leaves behind, and the command that continues from it."""
    from vppo.trainer.resume import last_complete_checkpoint

    step = trainer.state.global_step if trainer is not None else 0
    last, _ = last_complete_checkpoint(output_dir)
    if last is None:
        return (
            f"vppo train: {how} at step {step}; no checkpoint was saved yet in {output_dir} "
            "(see save_strategy / save_steps), so a rerun starts from scratch."
        )
    resume = (
        "" if "--resume_from_checkpoint" in " ".join(argv) else " --resume_from_checkpoint last"
    )
    return (
        f"vppo train: {how} at step {step}; saved: {last}; continue with the same command{resume}."
    )


class _StopOnSignal:
    """SIGTERM (a scheduler's pre-emption) and SIGINT (Ctrl-C) stop training at the end of the
    optimizer step that is running, after saving a checkpoint; a second signal stops at once."""

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> _StopOnSignal:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        for name in self.SIGNALS:
            number = getattr(signal, name)
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number, frame) -> None:
        import signal

        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(number).name
        print(
            f"\nvppo train: {self.received} received: saving a checkpoint at the end of this optimizer "
            "step, then stopping (send it again to stop at once).",
            file=sys.stderr,
        )

    def callback(self, accelerator):
        """The callback that stops training; with several processes they agree on the step (a
        checkpoint is a collective: one process saving while another trains on would hang)."""
        from transformers import TrainerCallback

        stop = self

        class StopOnSignal(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                received = stop.received is not None
                if accelerator.num_processes > 1:
                    flag = torch.tensor([float(received)], device=accelerator.device)
                    received = accelerator.reduce(flag, reduction="sum").item() > 0
                    if received and stop.received is None:
                        stop.received = (
                            "SIGTERM"  # another process got it (the launcher forwards it to all)
                        )
                if received:
                    control.should_save = True
                    control.should_training_stop = True

        return StopOnSignal()


def train(argv: list[str]) -> int:
    script_args, training_args, model_args = parse(argv)
    check_output_dir(training_args.output_dir)
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    claim_output_dir(training_args.output_dir, resume, script_args.overwrite_output_dir)
    trainer = None
    with OutputDirLock(training_args.output_dir), _StopOnSignal() as stop:
        try:
            trainer = build_trainer(script_args, training_args, model_args)
            trainer.add_callback(stop.callback(trainer.accelerator))
            trainer.train(resume_from_checkpoint=resume)
        except KeyboardInterrupt:
            print(file=sys.stderr)
            print(_interrupted_message(trainer, training_args.output_dir, argv), file=sys.stderr)
            return 130
        if stop.received is not None:
            how = f"stopped by {stop.received}"
            print(
                _interrupted_message(trainer, training_args.output_dir, argv, how), file=sys.stderr
            )
            _leave_together(trainer.accelerator)
            return 143 if stop.received == "SIGTERM" else 130
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        from vppo.data.settings import write_prompt_settings

        trainer.processing_class.save_pretrained(training_args.output_dir)
        # vppo eval / analyze given this folder prompt as training did (checkpoints: the callback).
        write_prompt_settings(training_args.output_dir, prompt_settings(script_args))
        steps = trainer.state.global_step
        print(
            f"vppo train: {steps} step{'s' if steps != 1 else ''} trained; the model is in "
            f"{training_args.output_dir}.",
            file=sys.stderr,
        )
    _leave_together(trainer.accelerator)
    return 0


def _leave_together(accelerator) -> None:
    """Processes of a distributed run wait for each other, then close the process group.

    A rank that exits while another still has its gloo connections open can die with SIGABRT in the
    process group's destructor (seen with ZeRO-3 on CPU, after the run had finished and saved).
    """
    if accelerator.num_processes > 1 and torch.distributed.is_initialized():
        accelerator.wait_for_everyone()
        torch.distributed.destroy_process_group()


def _one_line(err: BaseException) -> str:
    """The error's message, whole: a library's multi-line message (DeepSpeed's list of mismatched
    values) keeps its lines, indented under the first; no traceback."""
    lines = [line.rstrip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return "\n".join([lines[0].strip(), *("    " + line.strip() for line in lines[1:])])


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    debug, argv = _flag_value(argv, "--debug")
    debug = _truthy(debug) or _truthy(os.environ.get("VPPO_DEBUG"))
    if any(a in ("-h", "--help") for a in argv):
        print(format_help())
        return 0
    try:
        return train(argv)
    except SystemExit as stop:  # argparse: its one line is printed already
        if isinstance(stop.code, int):
            return stop.code
        raise
    except (ValueError, OSError, ImportError) as err:  # bad input: files, fields, rows, models
        if debug:
            raise
        print(f"vppo train: {_one_line(err)}", file=sys.stderr)
        return 2
