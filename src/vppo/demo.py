"""`vppo demo` lives in `vppo.toy.demo`; this module keeps the old import path working.

It re-exports the public names, and `python -m vppo.demo` runs it. Nothing inside src/vppo
imports this module (tests/test_layering.py).
"""

import sys

from vppo.toy.demo import *  # noqa: F403
from vppo.toy.demo import __all__, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
