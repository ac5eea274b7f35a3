"""The bench's case registry: what is measured each round, and how ``--cases`` names it.

A case is a tunnel flavour (or the plain link under every tunnel); a new flavour is one more
:func:`register_case` call. Every wgactors case has a baseline twin, ``KEY@base``, that runs the
same flavour through another checkout's launcher (``--baseline CHECKOUT``), so the tree under
test and an older commit are measured in the same rounds.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from ... import settings
from ..pair import MTU

BASELINE_SUFFIX = "@base"  # a baseline twin's key and aliases: its original's, with this added


@dataclass(frozen=True)
class Case:
    """One thing to measure each round: a tunnel flavour, or the plain link under it.

    ``wgactors_args`` None with ``tunnel`` set means wireguard-go on the a side too. A
    ``baseline`` case runs its daemon from the ``--baseline`` checkout instead of this one.
    """

    key: str
    label: str
    tunnel: bool = True
    wgactors_args: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()  # more environment for the wgactors end
    default: bool = True  # measured when --cases is not given
    baseline: bool = False

    @property
    def is_wgactors(self) -> bool:
        return self.tunnel and self.wgactors_args is not None


CASES: dict[str, Case] = {}


def register_case(case: Case, after: str | None = None) -> None:
    """Add a case, and after a wgactors case its baseline twin; reports list cases in
    registration order, so each twin sits next to its original. With ``after`` (a key) the
    new case and its twin go right after that case (and its twin) instead of last."""
    added = [case]
    if case.is_wgactors and not case.baseline:
        added.append(baseline_twin(case))
    if after is None or after not in CASES:
        for c in added:
            CASES[c.key] = c
        return
    order = [(k, c) for k, c in CASES.items() if k not in {a.key for a in added}]
    anchor = max(i for i, (k, _) in enumerate(order) if k in (after, after + BASELINE_SUFFIX))
    order[anchor + 1 : anchor + 1] = [(c.key, c) for c in added]
    CASES.clear()
    CASES.update(order)


def baseline_twin(case: Case) -> Case:
    """The same flavour run from the ``--baseline`` checkout; never measured unless asked for."""
    return replace(
        case,
        key=case.key + BASELINE_SUFFIX,
        label=f"{case.label}, baseline checkout",
        aliases=tuple(alias + BASELINE_SUFFIX for alias in case.aliases),
        default=False,
        baseline=True,
    )


register_case(Case("veth", f"plain veth, no tunnel (MTU {MTU})", tunnel=False, aliases=("plain",)))
register_case(Case("reference", "wireguard-go ↔ wireguard-go", aliases=("ref",)))
register_case(Case("wgactors", "wgactors ↔ wireguard-go", wgactors_args=(), aliases=("actors",)))
register_case(
    Case(
        "wgactors-single",
        "wgactors --single-threaded ↔ wireguard-go",
        wgactors_args=("--single-threaded",),
        aliases=("single",),
    )
)
# The same two modes with their threads placed by the kernel (CPUS=all) instead of on one CPU
# (the default, actors/placement.py): what placement is worth. Not in the default set.
_SPREAD = f"{settings.CPUS.name}=all"
for _key, _alias, _label, _args in (
    ("wgactors-spread", "actors-spread", f"wgactors ({_SPREAD}) ↔ wireguard-go", ()),
    (
        "wgactors-single-spread",
        "single-spread",
        f"wgactors --single-threaded ({_SPREAD}) ↔ wireguard-go",
        ("--single-threaded",),
    ),
):
    register_case(
        Case(
            _key,
            _label,
            wgactors_args=_args,
            aliases=(_alias,),
            env=((settings.CPUS.name, "all"),),
            default=False,
        )
    )
# The tree under test's wgactors cases (the targets apply to these), and their baseline twins;
# the --workers cases, registered when asked for, are not among these two.
WGACTORS_CASES = tuple(k for k, c in CASES.items() if c.is_wgactors and not c.baseline)
BASELINE_CASES = tuple(k for k, c in CASES.items() if c.baseline)

WORKERS_PREFIX = "wgactors-w"  # the --workers cases: wgactors-w1, wgactors-w2, wgactors-wauto
WORKERS_AUTO = "auto"  # one worker per CPU the daemon may use
MAX_WORKERS = 1024


def parse_workers(text: str) -> list[str]:
    """``--workers``: comma-separated worker counts (1..MAX_WORKERS) or ``auto``, each once,
    in the order given; kept as the text passed on to ``wgactors --workers``."""
    values: list[str] = []
    for word in text.replace(",", " ").split():
        word = word.lower()
        if word != WORKERS_AUTO:
            try:
                n = int(word)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"workers must be numbers or {WORKERS_AUTO!r}, not {word!r}"
                ) from None
            if not 1 <= n <= MAX_WORKERS:
                raise argparse.ArgumentTypeError(f"workers must be 1..{MAX_WORKERS}")
            word = str(n)
        if word not in values:
            values.append(word)
    if not values:
        raise argparse.ArgumentTypeError("no worker count given")
    return values


def workers_case(value: str) -> str:
    """Register (once) the wgactors case run with ``--workers VALUE``, next to ``wgactors``;
    its key. The daemon gets the flag only in these cases, so the plain ``wgactors`` case
    still runs on a tree (or a baseline checkout) that has no ``--workers``."""
    key = f"{WORKERS_PREFIX}{value}"
    if key not in CASES:
        previous = [k for k in CASES if is_workers_case(k) and not CASES[k].baseline]
        register_case(
            Case(
                key,
                f"wgactors --workers {value} ↔ wireguard-go",
                wgactors_args=("--workers", value),
                aliases=(f"actors-w{value}",),
                default=False,
            ),
            after=previous[-1] if previous else "wgactors",
        )
    return key


def is_workers_case(key: str) -> bool:
    return key.startswith(WORKERS_PREFIX)


def with_workers(cases: Sequence[str], values: Sequence[str]) -> list[str]:
    """``cases`` with ``wgactors`` replaced by one case per worker count (added when
    ``wgactors`` was not among them)."""
    keys = [workers_case(v) for v in values]
    return canonical([*(c for c in cases if c != "wgactors"), *keys])


def canonical(keys: Iterable[str]) -> list[str]:
    """``keys`` in registration order, each once."""
    chosen = set(keys)
    return [k for k in CASES if k in chosen]


def parse_cases(text: str) -> list[str]:
    """``--cases``: comma- or space-separated keys or aliases, in the canonical order."""
    aliases = {alias: key for key, case in CASES.items() for alias in case.aliases}
    chosen: list[str] = []
    for word in text.replace(",", " ").split():
        key = aliases.get(word, word)
        if key not in CASES:
            names = ", ".join(k for k in [*CASES, *aliases] if not k.endswith(BASELINE_SUFFIX))
            raise argparse.ArgumentTypeError(
                f"unknown case {word!r} (one of {names}; any wgactors one with {BASELINE_SUFFIX})"
            )
        if key not in chosen:
            chosen.append(key)
    if not chosen:
        raise argparse.ArgumentTypeError("no case given")
    return canonical(chosen)


def with_baseline(cases: Sequence[str]) -> list[str]:
    """``cases`` and the baseline twin of each of the tree's wgactors cases among them."""
    twins = [k + BASELINE_SUFFIX for k in cases if CASES[k].is_wgactors and not CASES[k].baseline]
    return canonical([*cases, *twins])


def default_cases() -> list[str]:
    return [k for k, c in CASES.items() if c.default]
