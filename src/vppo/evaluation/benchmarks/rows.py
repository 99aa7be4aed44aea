"""The common form of a benchmark question, and row access over Arrow tables and JSON rows.

`EvalExample` is what every loader produces: id, problem text with one ``<image>`` placeholder per
image (and no output-format instruction), answer, benchmark name and the images as stored. They
are decoded lazily, when `EvalExample.images` is read. `LoadedBenchmark` holds a benchmark's
examples plus the rows left out (`SkippedRow`). The ``_Rows`` classes give the schema converters
one column interface over a (memory-mapped) pyarrow Table and over a list of dicts.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from vppo.data.images import to_rgb_image

__all__ = ["IMAGE_PLACEHOLDER", "EvalExample", "LoadedBenchmark", "SkippedRow"]

IMAGE_PLACEHOLDER = "<image>"


# --------------------------------------------------------------------------------------------
# Common form
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ArrowImageRef:
    """A lazily read image cell of a (memory-mapped) Arrow table: row, column, list position."""

    table: Any = field(repr=False)
    row: int
    column: str
    position: int | None = None

    def fetch(self) -> Any:
        cell = self.table.column(self.column)[self.row]
        if self.position is not None:
            cell = cell.values[self.position]
        return cell.as_py()


@dataclass(frozen=True)
class EvalExample:
    """One benchmark question in the common form.

    ``problem`` holds one ``<image>`` placeholder per image, in image order, and no output-format
    instruction (the prompt template adds it). ``image_refs`` are the raw stored values (decoded
    PIL images, ``{"bytes", "path"}`` structs, bytes, absolute paths or lazy Arrow cells);
    `images` decodes them to RGB PIL images on each access.
    """

    id: str
    problem: str
    answer: str
    benchmark: str
    image_refs: tuple[Any, ...] = ()
    base_dir: str | None = None
    row: int | None = None

    @property
    def num_images(self) -> int:
        return len(self.image_refs)

    @property
    def images(self) -> list[Image.Image]:
        """The question's images as RGB PIL images (ValueError/FileNotFoundError if unreadable)."""
        out = []
        for ref in self.image_refs:
            value = ref.fetch() if isinstance(ref, _ArrowImageRef) else ref
            out.append(
                to_rgb_image(
                    value, base_dir=self.base_dir, row=self.row, field=f"{self.benchmark} images"
                )
            )
        return out

    def image_digest(self) -> str:
        """16 hex digits over the question's images as stored: the bytes of an encoded image or its
        file, or the pixels of a decoded one. What the evaluation cache keys each question on, so a
        question whose images changed is generated again. ValueError/OSError if one is unreadable."""
        digest = hashlib.sha256()
        for ref in self.image_refs:
            value = ref.fetch() if isinstance(ref, _ArrowImageRef) else ref
            digest.update(_image_bytes(value, self.base_dir))
        return digest.hexdigest()[:16]


def _image_bytes(value: Any, base_dir: str | None) -> bytes:
    """The bytes that identify one stored image (see `EvalExample.image_digest`)."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"bytes:" + bytes(value)
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        if not path.is_file():  # a folder, a device (/dev/zero would be read without end), a pipe
            raise ValueError(f"image path {path} is not a regular file.")
        return b"file:" + path.read_bytes()
    if isinstance(value, Image.Image):
        return f"pixels:{value.mode}:{value.size}:".encode() + value.tobytes()
    raise ValueError(f"cannot identify an image stored as {type(value).__name__}.")


@dataclass(frozen=True)
class SkippedRow:
    """A row (or question) left out of the evaluation, and why."""

    id: str
    reason: str


@dataclass
class LoadedBenchmark:
    """The examples of one benchmark plus what was left out while loading."""

    name: str
    examples: list[EvalExample]
    skipped: list[SkippedRow] = field(default_factory=list)
    source: str = ""
    schema: str = ""
    filtered: int = 0  # rows removed by the benchmark's documented filter (not errors)

    def __len__(self) -> int:
        return len(self.examples)


class _RowError(ValueError):
    """A row that cannot become an example; the loader records it and moves on."""


# --------------------------------------------------------------------------------------------
# Row access: Arrow tables (parquet, Hub datasets) and lists of dicts (JSON)
# --------------------------------------------------------------------------------------------


class _Rows(ABC):
    """Column access shared by Arrow tables and lists of dicts."""

    columns: list[str]

    @abstractmethod
    def __len__(self) -> int: ...

    def row(self, index: int) -> _RowView:
        return _RowView(self, index)

    @abstractmethod
    def value(self, index: int, column: str) -> Any: ...

    @abstractmethod
    def image_refs(self, index: int, column: str) -> list[Any]: ...


class _ArrowRows(_Rows):
    def __init__(self, table: Any):
        self.table = table
        self.columns = list(table.column_names)
        self._names = set(self.columns)

    def __len__(self) -> int:
        return self.table.num_rows

    def value(self, index: int, column: str) -> Any:
        if column not in self._names:
            return None
        return self.table.column(column)[index].as_py()

    def image_refs(self, index: int, column: str) -> list[Any]:
        import pyarrow as pa

        if column not in self._names:
            return []
        kind = self.table.schema.field(column).type
        cell = self.table.column(column)[index]
        if not cell.is_valid:
            return []
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            inner = kind.value_type
            if (
                pa.types.is_struct(inner)
                or pa.types.is_binary(inner)
                or pa.types.is_large_binary(inner)
            ):
                return [_ArrowImageRef(self.table, index, column, j) for j in range(len(cell))]
            return [item for item in cell.as_py() if item is not None]
        if pa.types.is_struct(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            return [_ArrowImageRef(self.table, index, column)]
        return [cell.as_py()]


class _ListRows(_Rows):
    def __init__(self, rows: Sequence[Mapping[str, Any]]):
        self.rows = rows
        names: dict[str, None] = {}
        for row in rows[:50]:
            names.update(dict.fromkeys(row))
        self.columns = list(names)

    def __len__(self) -> int:
        return len(self.rows)

    def value(self, index: int, column: str) -> Any:
        return self.rows[index].get(column)

    def image_refs(self, index: int, column: str) -> list[Any]:
        value = self.rows[index].get(column)
        if value is None:
            return []
        if isinstance(value, list | tuple):
            return [item for item in value if item is not None]
        return [value]


@dataclass
class _RowView:
    rows: _Rows
    index: int

    def get(self, column: str, default: Any = None) -> Any:
        value = self.rows.value(self.index, column)
        return default if value is None else value

    def images(self, column: str) -> list[Any]:
        return self.rows.image_refs(self.index, column)

    def has(self, column: str) -> bool:
        return column in self.rows.columns


def _as_rows(rows: Any) -> _Rows:
    if isinstance(rows, _Rows):
        return rows
    if isinstance(rows, list | tuple):
        if rows and not all(isinstance(r, Mapping) for r in rows):
            raise ValueError("rows must be dicts (one per question).")
        return _ListRows(list(rows))
    if hasattr(rows, "column_names") and hasattr(rows, "num_rows"):
        return _ArrowRows(rows)
    raise ValueError(f"rows must be a list of dicts or a pyarrow Table, got {type(rows).__name__}.")
