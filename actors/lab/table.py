"""Plain-text tables for the lab's reports (demo, bench): aligned, with a rule under the head."""

from __future__ import annotations

from collections.abc import Sequence


def print_rows(rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows``: the first is the header; the first column left-aligned, the rest right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
