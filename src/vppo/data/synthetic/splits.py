"""Which split an example belongs to: a hash of its question and scene.

Splits cannot overlap: an example belongs to the split picked by a hash of its question and
scene (which fixes the pixels); each split's generator redraws until the hash lands in it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

# Hash buckets out of 100 that belong to each split (train 80 %, validation 10 %, test 10 %).
_SPLIT_BUCKETS: dict[str, range] = {
    "train": range(0, 80),
    "validation": range(80, 90),
    "test": range(90, 100),
}


def _scene_key(problem: str, scene: Mapping[str, Any]) -> str:
    """A canonical text key of an (image, question) pair.

    It stands in for the pixels: objects sit in distinct cells without overlap and every
    (kind, size) and digit has its own mask, so two scenes draw the same picture only if their
    keys agree (the tests check split disjointness on the pixels themselves).
    """
    parts = [problem, str(scene["grid"])]
    parts += [
        f"s{o['row']},{o['col']},{o['kind']},{o['colour']},{o['size']},{o['dx']},{o['dy']}"
        for o in scene["shapes"]
    ]
    parts += [f"d{o['row']},{o['col']},{o['value']},{o['dx']},{o['dy']}" for o in scene["digits"]]
    return "|".join(parts)


def _split_of(key: str) -> str:
    """The split a scene key belongs to: a hash bucket out of 100."""
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100
    return next(name for name, buckets in _SPLIT_BUCKETS.items() if bucket in buckets)
