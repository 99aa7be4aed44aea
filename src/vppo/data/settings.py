"""One default per prompt option across `vppo train`, `eval`, `analyze`, `demo` and `compare`.

What a model sees must agree between training, evaluation and analysis: the prompt template, the
system prompt and the pixel limits (which set the number of image tokens). Every command takes
the same defaults from here, and a model folder can carry the values it was trained with, in
``vppo_prompt.json`` (written by ``vppo train``) or under ``"prompt"`` in ``vppo_warmstart.json``
(the shipped demo checkpoint). A command given such a folder uses its values for every option
not set on the command line.

The shared pixel limits are PAPO-Eval's (32*32 to 768*768, the evaluation protocol of the paper's
numbers). The official training recipes set their own (256*28*28 to 1280*28*28) explicitly.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vppo.data.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from vppo.data.prompts import DEFAULT_TEMPLATE

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_PIXELS",
    "DEFAULT_SYSTEM_PROMPT",
    "PROMPT_SETTINGS_FILE",
    "PromptSettings",
    "accept_underscores",
    "apply_prompt_settings",
    "read_prompt_settings",
    "resolve_prompt_settings",
    "write_prompt_settings",
]

PROMPT_SETTINGS_FILE = "vppo_prompt.json"
_WARMSTART_FILE = "vppo_warmstart.json"
DEFAULT_SYSTEM_PROMPT: str | None = None
"""No system message: the chat template's own (Qwen2.5-VL's inserts "You are a helpful
assistant.", the message PAPO-Eval sends)."""


@dataclass(frozen=True)
class PromptSettings:
    """The options that must agree between training, evaluation and analysis."""

    template: str = DEFAULT_TEMPLATE
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    min_pixels: int | None = DEFAULT_MIN_PIXELS
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    source: str = "defaults"  # where the values not given explicitly came from

    def describe(self) -> str:
        return (
            f"template {self.template}, system prompt "
            f"{'(chat template default)' if self.system_prompt is None else repr(self.system_prompt)}, "
            f"pixels {self.min_pixels}-{self.max_pixels} (from {self.source})"
        )


def read_prompt_settings(model: str | Path | None) -> tuple[dict[str, Any], str] | None:
    """The prompt settings a model folder records, and the file they come from; None if none."""
    if model is None:
        return None
    folder = Path(str(model)).expanduser()
    if not folder.is_dir():
        return None
    for name, key in ((PROMPT_SETTINGS_FILE, None), (_WARMSTART_FILE, "prompt")):
        file = folder / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{file} is not readable JSON ({err}).") from err
        values = data.get(key) if key else data
        if isinstance(values, dict):
            known = {
                k: values[k]
                for k in ("template", "system_prompt", "min_pixels", "max_pixels")
                if k in values
            }
            return known, str(file)
    return None


def resolve_prompt_settings(
    model: str | Path | None = None,
    *,
    template: str | None = None,
    system_prompt: str | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    use_recorded: bool = True,
) -> PromptSettings:
    """Given values win; then the model folder's recorded ones (if ``use_recorded``); then defaults."""
    recorded = read_prompt_settings(model) if use_recorded else None
    values, source = recorded if recorded else ({}, "defaults")
    return PromptSettings(
        template=template if template is not None else values.get("template", DEFAULT_TEMPLATE),
        system_prompt=system_prompt if system_prompt is not None else values.get("system_prompt"),
        min_pixels=min_pixels
        if min_pixels is not None
        else values.get("min_pixels", DEFAULT_MIN_PIXELS),
        max_pixels=max_pixels
        if max_pixels is not None
        else values.get("max_pixels", DEFAULT_MAX_PIXELS),
        source=source,
    )


def apply_prompt_settings(
    options: Any,
    model: str | Path | None,
    *,
    template_attr: str = "prompt_template",
    use_recorded: bool = True,
) -> PromptSettings:
    """Resolve the prompt options of a parsed command line (`options.<template_attr>`,
    `.system_prompt`, `.min_pixels`, `.max_pixels`; None = not given) and write them back."""
    settings = resolve_prompt_settings(
        model,
        template=getattr(options, template_attr),
        system_prompt=options.system_prompt,
        min_pixels=options.min_pixels,
        max_pixels=options.max_pixels,
        use_recorded=use_recorded,
    )
    setattr(options, template_attr, settings.template)
    options.system_prompt = settings.system_prompt
    options.min_pixels, options.max_pixels = settings.min_pixels, settings.max_pixels
    return settings


def write_prompt_settings(folder: str | Path, settings: PromptSettings) -> Path:
    """Record ``settings`` in ``folder/vppo_prompt.json`` so that eval and analyze reuse them."""
    path = Path(folder) / PROMPT_SETTINGS_FILE
    values = {k: v for k, v in asdict(settings).items() if k != "source"}
    path.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    return path


def read_yaml_file(path: Path, label: str, utf8_hint: str) -> Any:
    """A YAML file's value (safe_load: plain values only), or ValueError starting with `label` that names
    the line and column and says what to do."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{label} is not a UTF-8 text file (byte {err.start}); {utf8_hint}."
        ) from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        hint = (
            "; recipes hold plain values only (no !!python tags)"
            if "tag" in str(problem)
            else "; fix the YAML syntax there"
        )
        raise ValueError(f"{label} is not valid YAML{where}: {problem}{hint}.") from err


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (exit status 2): `<prog>: <message> (see `<prog> --help`)`."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`).\n")


def accept_underscores(parser: Any) -> Any:
    """Let an argparse parser take ``--max_pixels`` wherever it takes ``--max-pixels``.

    ``vppo train`` parses through TRL, which takes both spellings; the other commands do the same.
    """
    for action in list(parser._actions):
        for option in list(action.option_strings):
            if option.startswith("--") and "-" in option[2:]:
                alias = "--" + option[2:].replace("-", "_")
                if alias not in parser._option_string_actions:
                    action.option_strings.append(alias)
                    parser._option_string_actions[alias] = action
    return parser
