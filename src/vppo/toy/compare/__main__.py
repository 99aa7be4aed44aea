"""``python -m vppo.toy.compare``: runs `vppo compare`."""

import sys

from vppo.toy.compare.cli import main

sys.exit(main())
