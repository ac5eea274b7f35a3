"""Side-by-side benchmark: wgactors against the reference wireguard-go, in network namespaces.

Run through ``sudo scripts/bench`` (which first runs ``scripts/setup``). The benchmark itself
lives in the lab, ``actors/lab/bench/`` (its package docstring lists the cases and what is
measured); this file is only its command line, so the bench runs from the checkout while the
lab stays out of the wheel. ``--core-only`` needs no root.
"""

from __future__ import annotations

import sys

from actors.lab.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
