"""`vppo train --accelerate_config NAME ...`: launch training on several processes by config name.

The accelerate configs ship inside the package (`vppo/recipes/accelerate/*.yaml`), so a user who
pip-installed vppo names one instead of pointing into the source tree, the way TRL's CLI takes
`--accelerate_config zero3`:

    vppo train --accelerate_config fsdp2_8gpu --config qwen2_5_vl_7b_vppo
    vppo train --accelerate_config zero3_32gpu --machine_rank 1 --main_process_ip 10.0.0.1 \
        --config qwen2_5_vl_32b_vppo                               # on each of the 4 nodes

A path to a config file works too. The flags of `accelerate launch` listed in `LAUNCH_FLAGS`
(process counts, node rank and address, CPU, precision) override the file; every other argument
goes to `vppo train` in each process.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

# accelerate launch flag -> whether it takes a value. Everything else belongs to `vppo train`.
LAUNCH_FLAGS: dict[str, bool] = {
    "--num_processes": True,
    "--num_machines": True,
    "--machine_rank": True,
    "--main_process_ip": True,
    "--main_process_port": True,
    "--mixed_precision": True,
    "--cpu": False,
}


def shipped_configs() -> list[str]:
    """Names of the accelerate configs shipped with vppo (file names without `.yaml`)."""
    folder = resources.files("vppo") / "recipes" / "accelerate"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve_accelerate_config(name: str) -> Path:
    """A shipped config by name (`fsdp2_8gpu`), or a path to a YAML file of one's own."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    shipped = resources.files("vppo") / "recipes" / "accelerate" / f"{name}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise FileNotFoundError(
        f"--accelerate_config: {name!r} is neither a file nor a shipped config; shipped configs are "
        f"{', '.join(shipped_configs())}."
    )


def split_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """(arguments for `accelerate launch`, arguments for `vppo train`) from one `vppo train` argv."""
    launch: list[str] = []
    train: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if name == "--accelerate_config":
            value = (
                arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else None)
            )
            if value is None or value.startswith("--"):
                raise ValueError("--accelerate_config needs a shipped config name or a file path.")
            launch += ["--config_file", str(resolve_accelerate_config(value))]
            i += 1 if "=" in arg else 2
            continue
        if name in LAUNCH_FLAGS:
            takes_value = LAUNCH_FLAGS[name] and "=" not in arg
            if takes_value and (i + 1 >= len(argv) or argv[i + 1].startswith("--")):
                raise ValueError(f"{name} needs a value.")
            launch += argv[i : i + 2] if takes_value else [arg]
            i += 2 if takes_value else 1
            continue
        train.append(arg)
        i += 1
    return launch, train


def accelerate_argv(argv: list[str]) -> list[str]:
    """The full `accelerate launch` argument list that runs `vppo train` in every process."""
    launch, train = split_arguments(argv)
    return [*launch, "--module", "vppo.cli", "train", *train]


def main(argv: list[str] | None = None) -> int:
    from accelerate.commands.launch import launch_command, launch_command_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = launch_command_parser().parse_args(accelerate_argv(argv))
    except (ValueError, FileNotFoundError) as err:
        print(f"vppo train: {err}", file=sys.stderr)
        return 2
    try:
        launch_command(args)
    except Exception as err:  # noqa: BLE001 - a rank failed; it has printed its own one-line error
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

        if not isinstance(err, ChildFailedError):
            raise
        codes = [failure.exitcode for failure in err.failures.values()]
        print(
            f"vppo train: {len(codes)} of the launched processes failed (exit code "
            f"{codes[0]}); their messages are above.",
            file=sys.stderr,
        )
        return codes[0] if codes and codes[0] > 0 else 1
    return 0
