"""The synthetic visual reasoning task (being split into modules; see ``examples``)."""

from __future__ import annotations

from vppo.data.synthetic.examples import *  # noqa: F403
from vppo.data.synthetic.examples import (  # noqa: F401
    __all__,
    _READ_VERBS,
    _REASONING_SLOTS,
    _scene_key,
    _split_of,
)
