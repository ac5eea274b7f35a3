"""``python -m actors``: the same command line as the ``wgactors`` script."""

import sys

from .cli import main

sys.exit(main())
