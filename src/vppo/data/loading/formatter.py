"""The ``datasets`` transform that decodes, converts and resizes a row's images when it is read."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vppo.data.images import prepare_image
from vppo.data.loading.options import TrainingDataOptions

logger = logging.getLogger("vppo.data.loading")  # the package's logger (docs/data.md)


class _RowFormatter:
    """``datasets`` transform: decode, convert and resize each row's images when it is read.

    A top-level class (not a closure) so that datasets with it can be pickled to DataLoader workers.
    """

    def __init__(self, *, base_dir: Path | None, options: TrainingDataOptions):
        self.base_dir = base_dir
        self.source = None  # the untransformed rows; set by load_training_dataset
        self._fallback_row: dict | None = None
        self.image_kwargs = {  # the image options, under prepare_image's names
            "min_pixels": options.min_pixels,
            "max_pixels": options.max_pixels,
            "min_side": options.min_image_side,
            "max_aspect_ratio": options.max_aspect_ratio,
            "alpha": options.alpha,
            "rounding": options.resize_rounding,
        }

    def _images(self, value: Any) -> list:
        if value is None:
            return []
        values = value if isinstance(value, list) else [value]
        return [
            prepare_image(v, base_dir=self.base_dir, index=k, **self.image_kwargs)
            for k, v in enumerate(values)
        ]

    @staticmethod
    def _prompt(messages: list) -> list:
        return [
            {**m, "content": [{k: v for k, v in p.items() if v is not None} for p in m["content"]]}
            for m in messages
        ]

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out = {key: list(values) for key, values in batch.items()}
        if "prompt" in batch:
            out["prompt"] = [self._prompt(messages) for messages in batch["prompt"]]
        if "images" in batch:
            images = []
            for i, value in enumerate(batch["images"]):
                try:
                    images.append(self._images(value))
                except (ValueError, OSError) as exc:
                    if self.source is None:
                        raise
                    # A crash here would end a long run: train on a readable row instead.
                    row, fallback = self._unreadable_row(value), self._fallback()
                    logger.warning(
                        "training row %s: %s Replaced by row %d for this step (validate_images="
                        "'full' refuses such rows before training).",
                        "?" if row is None else row,
                        str(exc).rstrip(),
                        fallback["__row__"],
                    )
                    for key in out:
                        if key != "images" and key in fallback:
                            out[key][i] = fallback[key]
                    images.append(fallback["images"])
            out["images"] = images
        return out

    def _unreadable_row(self, value: Any) -> int | None:
        """The index of the row whose images are ``value`` (searched only when one fails)."""
        start = 0
        for chunk in self.source.select_columns(["images"]).iter(batch_size=256):
            for j, candidate in enumerate(chunk["images"]):
                if candidate == value:
                    return start + j
            start += len(chunk["images"])
        return None

    def _fallback(self) -> dict:
        """The first row whose images decode, formatted (computed once)."""
        if self._fallback_row is None:
            for j in range(len(self.source)):
                raw = self.source[j]
                try:
                    images = self._images(raw.get("images"))
                except (ValueError, OSError):
                    continue
                prompt = self._prompt(raw["prompt"]) if "prompt" in raw else None
                self._fallback_row = {**raw, "prompt": prompt, "images": images, "__row__": j}
                break
            else:
                raise ValueError("no row of the training data has images that can be decoded.")
        return self._fallback_row

    def __repr__(self) -> str:  # stable, so dataset fingerprints do not depend on object ids
        return f"_RowFormatter(base_dir={self.base_dir!r}, {self.image_kwargs!r})"
