"""Prompt templates (Jinja) and the TRL conversational prompt built from a rendered problem.

A template receives the problem text as ``problem`` (and, for templates written for EasyR1/VPPO,
as ``content``); the loader also passes the row's other columns by name. The built-in templates
live in ``src/vppo/templates/<name>.jinja``:

- ``vppo_math``: the official VPPO format prompt (``math_format_perception.jinja``): the trimmed
  problem, a blank line, then the instruction to reason inside ``<think> </think>`` and answer in
  ``\\boxed{}``. The instruction sentence is the one stored in the VPPO/PAPO evaluation data.
- ``plain``: the trimmed problem only (for data whose instruction is already in the text).

A problem that already carries the text a template adds around it (the official instruction in a
ShareGPT user turn, or in a ``problem`` column) gets it once: :meth:`PromptTemplate.render` removes
that text from the problem first, matching it with any run of whitespace (spaces, newlines) where
the template has whitespace, anywhere in the problem.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta

__all__ = [
    "DEFAULT_TEMPLATE",
    "IMAGE_PLACEHOLDER",
    "PromptTemplate",
    "available_templates",
    "build_prompt_messages",
    "load_template",
    "remove_instruction",
    "render_prompt",
    "split_image_placeholders",
]

DEFAULT_TEMPLATE = "vppo_math"
IMAGE_PLACEHOLDER = "<image>"
_PROBLEM_NAMES = frozenset({"problem", "content"})
_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
)
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class PromptTemplate:
    """A compiled prompt template.

    Attributes:
        name: built-in name, file path, or ``"<inline>"``.
        source: the Jinja source text.
        variables: names the template reads (besides ``problem``/``content`` these must be given
            to :meth:`render`, or be dataset columns when the loader renders it).
    """

    name: str
    source: str
    variables: frozenset[str]
    _template: jinja2.Template = field(repr=False, compare=False)
    instructions: tuple[str, ...] = field(default=(), repr=False, compare=False)
    """The fixed text the template puts before and after the problem (stripped; empty ones left
    out), when the problem is its only variable: ``vppo_math``'s is the ``<think>``/``\\boxed{}``
    instruction. Text already in the problem is not added a second time."""

    def render(self, problem: str, **variables: Any) -> str:
        """Render with ``problem`` (also exposed as ``content``) and any extra ``variables``."""
        if not isinstance(problem, str):
            raise ValueError(f"problem must be a string, got {type(problem).__name__}.")
        missing = sorted(self.variables - _PROBLEM_NAMES - set(variables))
        if missing:
            raise ValueError(
                f"prompt template {self.name} uses variable '{missing[0]}', which was not given."
            )
        for instruction in self.instructions:
            problem = remove_instruction(problem, instruction)
        return self._template.render(**{**variables, "problem": problem, "content": problem})


def remove_instruction(text: str, instruction: str) -> str:
    """``text`` without ``instruction``, matched anywhere with whitespace normalised.

    Each occurrence goes with the whitespace around it; text on both sides is joined by a newline.
    Text not holding the instruction comes back unchanged, so ``"Q?\\n\\n" + instruction`` gives
    ``"Q?"`` and rendering that with the template gives back the original text exactly.
    """
    words = instruction.split()
    if not words or words[0] not in text:
        return text
    pattern = re.compile(r"\s*" + r"\s+".join(re.escape(w) for w in words) + r"\s*")
    parts = pattern.split(text)
    if len(parts) == 1:
        return text
    return "\n".join(part for part in parts if part)


def available_templates() -> list[str]:
    """Names of the built-in templates shipped in ``vppo/templates``."""
    folder = resources.files("vppo") / "templates"
    return sorted(p.name[: -len(".jinja")] for p in folder.iterdir() if p.name.endswith(".jinja"))


def _compile(source: str, name: str) -> PromptTemplate:
    try:
        parsed = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(
            f"prompt template {name} has a Jinja syntax error at line {exc.lineno}: {exc.message}."
        ) from exc
    variables = frozenset(jinja2.meta.find_undeclared_variables(parsed)) - set(_ENV.globals)
    if not variables & _PROBLEM_NAMES:
        raise ValueError(
            f"prompt template {name} never uses {{{{ problem }}}} (or {{{{ content }}}}), "
            "so the problem text would be dropped."
        )
    template = _ENV.from_string(source)
    instructions: tuple[str, ...] = ()
    if variables <= _PROBLEM_NAMES:
        marker = "\x00problem\x00"
        rendered = template.render(problem=marker, content=marker)
        if marker in rendered:
            before, _, after = rendered.partition(marker)
            instructions = tuple(
                s.strip() for s in (before, after.replace(marker, "")) if s.strip()
            )
    return PromptTemplate(name, source, variables, template, instructions)


@lru_cache(maxsize=64)
def _compile_cached(source: str, name: str) -> PromptTemplate:
    return _compile(source, name)


def _load(key: str) -> PromptTemplate:
    if "{{" in key or "{%" in key:
        return _compile_cached(key, "<inline>")
    builtin = available_templates()
    if key in builtin:
        text = (resources.files("vppo") / "templates" / f"{key}.jinja").read_text(encoding="utf-8")
        return _compile_cached(text, f"'{key}'")
    path = Path(os.path.expanduser(key))
    if path.is_file():  # read every time, so edits to the file take effect
        return _compile_cached(path.read_text(encoding="utf-8"), str(path))
    if path.is_dir():
        raise ValueError(f"prompt template path {path} is a directory, not a .jinja file.")
    kind = "file" if not _NAME_RE.match(key) or key.endswith(".jinja") else "built-in template"
    raise FileNotFoundError(
        f"prompt template {key!r} is not a {kind}: built-in names are {', '.join(builtin)}; "
        "otherwise pass an existing .jinja path or an inline template containing '{{'."
    )


def load_template(name_or_path: str | os.PathLike | PromptTemplate | None = None) -> PromptTemplate:
    """Load a template by built-in name, ``.jinja`` file path, or inline Jinja source.

    ``None`` gives the default (``vppo_math``). A string containing ``{{`` or ``{%`` is inline source;
    otherwise a built-in name is looked up first, then a file path. The template must use
    ``{{ problem }}`` or ``{{ content }}``.
    """
    if isinstance(name_or_path, PromptTemplate):
        return name_or_path
    if name_or_path is None:
        name_or_path = DEFAULT_TEMPLATE
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ValueError(
            f"prompt_template must be a name, a path or a template string, got {type(name_or_path).__name__}."
        )
    key = os.fspath(name_or_path)
    if not key.strip():
        raise ValueError(
            "prompt_template is an empty string; pass a template name, path or source."
        )
    return _load(key)


def render_prompt(
    problem: str,
    template: str | os.PathLike | PromptTemplate | None = DEFAULT_TEMPLATE,
    **variables: Any,
) -> str:
    """Render ``problem`` with a template (name, path, inline source or :class:`PromptTemplate`).

    With the default template, ``render_prompt("  <image>Find x. ")`` returns
    ``"<image>Find x.\\n\\nYou first think through ... enclosed within \\boxed{}."``.
    """
    return load_template(template).render(problem, **variables)


def split_image_placeholders(
    text: str, placeholder: str = IMAGE_PLACEHOLDER
) -> list[dict[str, str]]:
    """Split ``text`` at each placeholder into TRL content parts, keeping the order.

    ``"<image>A<image>B"`` -> ``[{"type": "image"}, {"type": "text", "text": "A"}, {"type": "image"},
    {"type": "text", "text": "B"}]``. Text segments are kept verbatim; empty ones are dropped.
    """
    parts: list[dict[str, str]] = []
    for i, segment in enumerate(text.split(placeholder)):
        if i > 0:
            parts.append({"type": "image"})
        if segment:
            parts.append({"type": "text", "text": segment})
    return parts


def build_prompt_messages(
    text: str,
    num_images: int,
    *,
    system_prompt: str | None = None,
    placeholder: str = IMAGE_PLACEHOLDER,
) -> list[dict[str, Any]]:
    """The conversational prompt TRL's GRPOTrainer expects for one row.

    Each placeholder in ``text`` becomes an image part in place; text without placeholders gets
    all ``num_images`` image parts first (the layout TRL itself uses). Otherwise the number of
    placeholders must equal ``num_images`` (ValueError if not).

    Returns:
        ``[{"role": "system", ...}?, {"role": "user", "content": [parts...]}]``; the system content
        is a one-part list so that every message has the same structure.
    """
    count = text.count(placeholder)
    if count == 0:
        content = [{"type": "image"} for _ in range(num_images)]
        if text:
            content.append({"type": "text", "text": text})
    elif count == num_images:
        content = split_image_placeholders(text, placeholder)
    else:
        raise ValueError(
            f"the prompt has {count} '{placeholder}' placeholder{'s' * (count != 1)} but the row has "
            f"{num_images} image{'s' * (num_images != 1)}."
        )
    messages: list[dict[str, Any]] = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append({"role": "user", "content": content})
    return messages
