"""`vppo plan` lives in `vppo.trainer.plan`; this module keeps the old import path working.

It re-exports the public names, and `python -m vppo.plan` runs it. Nothing inside src/vppo
imports this module (tests/test_layering.py).
"""

import sys

from vppo.trainer.plan import *  # noqa: F403
from vppo.trainer.plan import __all__, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
