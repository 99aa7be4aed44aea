"""The registry of synthetic task families, and the checks of task-type and family arguments.

:data:`TASK_FAMILY_REGISTRY` maps each family's name to its :class:`TaskFamily`, in the order of
:data:`TASK_FAMILIES`. To add a family, write a module that builds a ``TaskFamily`` (see
``shapes.py``) and list it in ``_FAMILIES`` below; its task types must not clash with another
family's. Everything else (``answer_space``, ``make_synthetic_dataset(family=...)``,
``reference_solution``, the vocabulary corpus, the ``vppo demo`` / warm-start family choices that
read :data:`TASK_FAMILIES`) finds it through :func:`family_of` or :func:`get_family`.
"""

from __future__ import annotations

from collections.abc import Sequence

from vppo.data.synthetic.family import TaskFamily
from vppo.data.synthetic.reasoning import REASONING
from vppo.data.synthetic.shapes import SHAPES

_FAMILIES: tuple[TaskFamily, ...] = (SHAPES, REASONING)

TASK_FAMILY_REGISTRY: dict[str, TaskFamily] = {family.name: family for family in _FAMILIES}
"""Family name -> :class:`TaskFamily`; the first is the default family."""
TASK_FAMILIES: tuple[str, ...] = tuple(TASK_FAMILY_REGISTRY)
"""The family names, the choices of every ``family=`` argument (``"shapes"``, ``"reasoning"``)."""
ALL_TASK_TYPES: tuple[str, ...] = tuple(t for family in _FAMILIES for t in family.task_types)
"""Every task type of every family, family by family."""
_FAMILY_OF_TASK_TYPE: dict[str, TaskFamily] = {
    task_type: family for family in _FAMILIES for task_type in family.task_types
}
if len(_FAMILY_OF_TASK_TYPE) != len(ALL_TASK_TYPES):
    raise ValueError(f"two task families share a task type: {list(ALL_TASK_TYPES)}.")


def family_of(task_type: str) -> TaskFamily:
    """The :class:`TaskFamily` a task type belongs to; a ValueError names every task type."""
    family = _FAMILY_OF_TASK_TYPE.get(task_type) if isinstance(task_type, str) else None
    if family is None:
        raise ValueError(f"task_type must be one of {list(ALL_TASK_TYPES)}, got {task_type!r}.")
    return family


def get_family(name: str) -> TaskFamily:
    """The :class:`TaskFamily` called ``name``; a ValueError names every family."""
    family = TASK_FAMILY_REGISTRY.get(name) if isinstance(name, str) else None
    if family is None:
        raise ValueError(f"family must be one of {list(TASK_FAMILIES)}, got {name!r}.")
    return family


def task_family(task_type: str) -> str:
    """The family (``"shapes"`` or ``"reasoning"``) a task type belongs to."""
    return family_of(task_type).name


def _check_task_type(task_type: str) -> None:
    family_of(task_type)


def _check_family(family: str) -> None:
    get_family(family)


def _check_task_types(task_types: Sequence[str] | None, family: str = "shapes") -> tuple[str, ...]:
    allowed = get_family(family).task_types
    if task_types is None:
        return allowed
    if isinstance(task_types, str):
        raise ValueError(f"task_types must be a sequence of names, got the string {task_types!r}.")
    types = tuple(task_types)
    if not types:
        raise ValueError("task_types must name at least one task type, got an empty sequence.")
    for task_type in types:
        family_of(task_type)
        if task_type not in allowed:
            raise ValueError(
                f"task_types of family {family!r} must be among {list(allowed)}, got {task_type!r}."
            )
    if len(set(types)) != len(types):
        raise ValueError(f"task_types must not repeat a task type, got {list(types)}.")
    return types
