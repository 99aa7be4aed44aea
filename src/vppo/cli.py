"""`vppo` command line: a thin dispatcher; each subcommand lives with the layer it drives."""

from __future__ import annotations

import importlib
import sys
import warnings

# subcommand -> (module, one-line help). Modules expose `main(argv: list[str]) -> int | None`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("vppo.trainer.cli", "train a VLM with VPPO / DAPO / GRPO from a YAML recipe"),
    "eval": ("vppo.evaluation.cli", "evaluate a model on the paper's benchmarks (avg@k)"),
    "analyze": ("vppo.analysis.cli", "token-perception analysis: statistics, plots, HTML"),
    "demo": ("vppo.toy.demo", "train a small VLM with VPPO on CPU in minutes"),
    "compare": ("vppo.toy.compare", "GRPO vs DAPO vs VPPO on the synthetic task, several seeds"),
    "plan": ("vppo.trainer.plan", "per-GPU memory budget of a recipe on N GPUs, arithmetic shown"),
}


def _usage() -> str:
    lines = ["usage: vppo <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `vppo <command> --help` for the options of one command."]
    return "\n".join(lines)


def _show_each_warning_once() -> None:
    """Print each warning text once per run. Libraries' deprecation notices (transformers 5.23
    renames gradient_checkpointing, which TRL calls on every no-grad pass) otherwise repeat at every
    call, and libraries reset the warning filters as they import, so a filter would not hold."""
    show = warnings.showwarning
    if getattr(show, "vppo_once", False):
        return
    shown: set[tuple[str, type]] = set()

    def show_once(message, category, filename, lineno, file=None, line=None):
        key = (str(message), category)
        if key not in shown:
            shown.add(key)
            show(message, category, filename, lineno, file, line)

    show_once.vppo_once = True
    warnings.showwarning = show_once


def main(argv: list[str] | None = None) -> int:
    _show_each_warning_once()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(
            f"vppo: unknown command {name!r}; choose one of {', '.join(SUBCOMMANDS)}.",
            file=sys.stderr,
        )
        return 2
    module_name = SUBCOMMANDS[name][0]
    if name == "train" and any(a.split("=", 1)[0] == "--accelerate_config" for a in rest):
        module_name = "vppo.trainer.launch"  # several processes: `accelerate launch` by config name
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            print(f"vppo: the `{name}` command is not available in this version.", file=sys.stderr)
            return 2
        raise
    code = module.main(rest)
    return int(code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
