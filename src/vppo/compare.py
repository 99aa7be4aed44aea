"""`vppo compare` lives in `vppo.toy.compare`; this module keeps the old import path working.

It re-exports the public names, and `python -m vppo.compare` runs it. Nothing inside src/vppo
imports this module (tests/test_layering.py).
"""

import sys

from vppo.toy.compare import *  # noqa: F403
from vppo.toy.compare import __all__, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
