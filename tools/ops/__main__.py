"""``python -m tools.ops``: see the package's docstring or ``--help``."""

import sys

from tools.ops import main

sys.exit(main())
