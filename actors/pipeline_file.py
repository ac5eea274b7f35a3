"""The pipeline file: users' stages, by import path, with options and supervision settings.

    [[inbound]]                 # between WireGuard decrypt and the TUN writer, in order
    use = "actors.contrib.firewall:Firewall"
    name = "firewall"           # optional; must be unique
    options = { default = "allow", rules = [] }
    restart = "permanent"       # permanent | transient | temporary
    budget = { max_restarts = 5, within = 10.0 }   # optional, this stage's own budget
    capacity = 1000             # optional, its mailbox in packets
    on_error = "drop"           # an exception in process drops its packet (fail-closed);
                                # "pass": sends it on unchanged; "restart": drops it, new instance

    [[outbound]]                # between the TUN reader and WireGuard encrypt, in order
    use = "mypackage.mymodule:MyActor"

    [[outbound]]
    use = "stages/mine.py:MyActor"     # a file, relative to this pipeline file
    [[outbound]]
    use = "dnsfilter"                  # a name registered under the entry points wgactors.stages

Everything is checked at start-up, before any interface exists (and by ``wgactors check``): the
file, the import, that the class is a :class:`~actors.Stage`, its options against the
constructor's annotations (:mod:`actors.options`; path options made relative to this file), and
the options' values (the class is constructed once, unstarted, so its own validation runs).
Each error is one line naming the entry.

Names: without ``name`` an entry is called after its class, lower-cased, with ``_out`` on the
outbound path and a number for the second and later of a class in a path. A name depends on its
own path only, because a reload matches entries by name: an unchanged entry whose name stayed
keeps its running instance and counters, whatever changed elsewhere.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from . import settings
from .failure import ON_ERROR
from .mailbox import DEFAULT_CAPACITY
from .options import OptionError, check_options
from .supervisor import Restart, RestartBudget

if TYPE_CHECKING:
    from .stage import Stage

__all__ = [
    "DROPIN_DIR",
    "MAX_PIPELINE_BYTES",
    "MAX_STAGES",
    "PIPELINE_ENV",
    "PipelineFileError",
    "StageEntry",
    "dropin_pipeline",
    "load_pipeline",
    "parse_pipeline",
    "same_entry",
]

PIPELINE_ENV = settings.PIPELINE.name
DROPIN_DIR = "/etc/wireguard"
"""Where the drop-in mode looks for IFACE.pipeline.toml, next to wg-quick's IFACE.conf."""
MAX_PIPELINE_BYTES = 1 << 20
MAX_STAGES = 32  # per path: each stage is a thread and a mailbox
MAX_CAPACITY = 100_000
MAX_NAME_LENGTH = 32  # a stage's name is a log field, a thread name and a metrics label
_ENTRY_KEYS = {"use", "name", "options", "restart", "budget", "capacity", "on_error"}
_RESERVED = {"tun_writer", "decrypt", "encrypt", "tun_reader", "udp_ingress", "ticker"}


class PipelineFileError(ValueError):
    """One line: the file, the entry, what is wrong."""

    def __init__(self, path: str, entry: str | None, message: str) -> None:
        self.path, self.entry, self.message = path, entry, message
        where = f"{path}: {entry}: " if entry else f"{path}: "
        super().__init__(where + message)


@dataclass(frozen=True)
class StageEntry:
    path: str  # "inbound" or "outbound"
    name: str
    use: str
    cls: type[Stage]
    options: dict[str, Any] = field(default_factory=dict)
    restart: Restart = Restart.PERMANENT
    budget: RestartBudget | None = None
    capacity: int = DEFAULT_CAPACITY
    on_error: str = ON_ERROR[0]
    # where relative ``use`` paths start: a worker process resolves ``use`` again from here
    base: Path | None = None


def load_pipeline(path: str | os.PathLike[str]) -> tuple[list[StageEntry], list[StageEntry]]:
    """Read and check a pipeline file: (inbound entries, outbound entries)."""
    shown = str(path)
    try:
        p = Path(path)
        if p.stat().st_size > MAX_PIPELINE_BYTES:
            raise PipelineFileError(shown, None, f"larger than {MAX_PIPELINE_BYTES} bytes")
        text = p.read_text(encoding="utf-8")
    except PipelineFileError:
        raise
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise PipelineFileError(shown, None, f"cannot read: {reason}") from None
    return parse_pipeline(text, shown, p.resolve().parent)


def parse_pipeline(
    text: str, path: str = "<pipeline>", base: Path | None = None
) -> tuple[list[StageEntry], list[StageEntry]]:
    """Parse and check pipeline-file text; ``base`` is where relative ``use`` file paths and
    path options start (the file's directory; the working directory if None)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PipelineFileError(path, None, f"not valid TOML: {e}") from None
    unknown = set(doc) - {"inbound", "outbound"}
    if unknown:
        raise PipelineFileError(path, None, f"unknown section {sorted(unknown)[0]!r}")
    drafts: dict[str, list[_Draft]] = {"inbound": [], "outbound": []}
    for kind in ("inbound", "outbound"):
        entries = doc.get(kind, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise PipelineFileError(path, kind, f"write entries as [[{kind}]] tables")
        if len(entries) > MAX_STAGES:
            raise PipelineFileError(path, kind, f"at most {MAX_STAGES} stages")
        for i, raw in enumerate(entries):
            drafts[kind].append(_entry(path, kind, i, raw, base))
    names = _names(path, drafts)
    result: dict[str, list[StageEntry]] = {
        kind: [
            dataclasses.replace(d.entry, name=names[kind, i]) for i, d in enumerate(drafts[kind])
        ]
        for kind in ("inbound", "outbound")
    }
    return result["inbound"], result["outbound"]


@dataclass(frozen=True)
class _Draft:
    """An entry checked in everything but its name."""

    entry: StageEntry
    label: str
    explicit: str | None


def _default_name(cls: type, kind: str) -> str:
    """What an entry without ``name`` is called before numbering: its class, lower-cased,
    with ``_out`` on the outbound path, so that no name depends on the other path."""
    return cls.__name__.lower() + ("_out" if kind == "outbound" else "")


def _names(path: str, drafts: Mapping[str, Sequence[_Draft]]) -> dict[tuple[str, int], str]:
    """Every entry's name. A name depends only on its own entry and the entries of its own
    path, so that a reload changing one path renames (and so restarts) nothing on the other;
    the second and later entries of a class in a path are numbered (``firewall2``)."""
    owner: dict[str, str] = {}  # name -> label of the entry that has it
    for kind in ("inbound", "outbound"):
        for d in drafts[kind]:
            if d.explicit is None:
                continue
            if d.explicit in _RESERVED or d.explicit in owner:
                taken = f" by {owner[d.explicit]}" if d.explicit in owner else " (built in)"
                raise PipelineFileError(path, d.label, f"the name {d.explicit!r} is taken{taken}")
            owner[d.explicit] = d.label
    names: dict[tuple[str, int], str] = {}
    for kind in ("inbound", "outbound"):
        own = {d.explicit for d in drafts[kind] if d.explicit is not None}
        used: set[str] = set()
        for i, d in enumerate(drafts[kind]):
            if d.explicit is not None:
                names[kind, i] = d.explicit
                continue
            base = _default_name(d.entry.cls, kind)
            name, n = base, 2
            while name in own or name in used or name in _RESERVED:
                name, n = f"{base}{n}", n + 1
            if not name.isidentifier() or len(name) > MAX_NAME_LENGTH:
                raise PipelineFileError(
                    path, d.label, f"give this entry a `name`: {name!r} is not a short identifier"
                )
            if name in owner:
                raise PipelineFileError(
                    path,
                    owner[name],
                    f"the name {name!r} is what {d.label} is called by default; choose another",
                )
            used.add(name)
            names[kind, i] = name
    return names


def _entry(path: str, kind: str, index: int, raw: dict[str, Any], base: Path | None) -> _Draft:
    use = raw.get("use")
    label = f"{kind}[{index}]" + (f" ({use})" if isinstance(use, str) else "")

    def fail(message: str) -> PipelineFileError:
        return PipelineFileError(path, label, message)

    extra = set(raw) - _ENTRY_KEYS
    if extra:
        raise fail(f"unknown key {sorted(extra)[0]!r}")
    if not isinstance(use, str) or not use.strip():
        raise fail('`use` must be "module:Class", "path/to/file.py:Class" or a registered name')
    from .catalog import StageLookupError, resolve, stale_note

    try:
        cls = resolve(use, base)
    except StageLookupError as e:
        raise fail(str(e)) from None
    class_name = cls.__name__
    from .stage import Stage

    if not isinstance(cls, type) or not issubclass(cls, Stage):
        raise fail(f"{class_name} is not a subclass of actors.Stage")
    explicit = raw.get("name")
    if explicit is not None and (
        not isinstance(explicit, str)
        or not explicit.isidentifier()
        or len(explicit) > MAX_NAME_LENGTH
    ):
        raise fail(f"`name` must be an identifier of at most {MAX_NAME_LENGTH} characters")
    options = raw.get("options", {})
    if not isinstance(options, dict):
        raise fail("`options` must be a table")
    try:
        restart = Restart(raw.get("restart", "permanent"))
    except ValueError:
        raise fail("`restart` is permanent, transient or temporary") from None
    budget = None
    if "budget" in raw:
        b = raw["budget"]
        if (
            not isinstance(b, dict)
            or set(b) - {"max_restarts", "within"}
            or not isinstance(b.get("max_restarts", 5), int)
            or not isinstance(b.get("within", 10.0), int | float)
            or b.get("max_restarts", 5) < 0
            or b.get("within", 10.0) <= 0
        ):
            raise fail("`budget` is { max_restarts = N, within = SECONDS }")
        budget = RestartBudget(b.get("max_restarts", 5), float(b.get("within", 10.0)))
    capacity = raw.get("capacity", DEFAULT_CAPACITY)
    if not isinstance(capacity, int) or not 1 <= capacity <= MAX_CAPACITY:
        raise fail(f"`capacity` is a number of packets, 1..{MAX_CAPACITY}")
    on_error = raw.get("on_error", ON_ERROR[0])
    if not isinstance(on_error, str) or on_error not in ON_ERROR:
        choices = ", ".join(f'"{o}"' for o in ON_ERROR[:-1]) + f' or "{ON_ERROR[-1]}"'
        raise fail(f"`on_error` is {choices}, not {repr(on_error)[:40]}")
    stale = stale_note(use)
    try:
        options = check_options(cls, options, base)
    except OptionError as e:
        raise fail(f"{e}{stale and f' ({stale})'}") from None
    _construct(cls, options, lambda m: fail(m + (stale and f" ({stale})")))
    if stale:
        logger.warning("{}: {}: {}", path, label, stale)
    name = explicit if explicit is not None else class_name.lower()
    entry = StageEntry(kind, name, use, cls, options, restart, budget, capacity, on_error, base)
    return _Draft(entry, label, explicit)


def _construct(cls: type, options: dict[str, Any], fail: Callable[[str], Exception]) -> None:
    """Build the stage once, unstarted, so that its constructor judges the option values."""
    try:
        cls(**options)
    except (TypeError, ValueError) as e:  # the stage's own words about its options
        raise fail(f"bad options: {e}") from None
    except Exception as e:
        raise fail(f"bad options: {e!r}") from None


def dropin_pipeline(
    interface: str, environ: Mapping[str, str], directory: str = DROPIN_DIR
) -> str | None:
    """The pipeline file of the drop-in mode: ``$WGACTORS_PIPELINE`` if set, else
    ``/etc/wireguard/IFACE.pipeline.toml`` if it exists, else None."""
    explicit = environ.get(PIPELINE_ENV)
    if explicit:
        return explicit
    candidate = Path(directory) / f"{interface}.pipeline.toml"
    return str(candidate) if candidate.is_file() else None


def same_entry(a: StageEntry, b: StageEntry) -> bool:
    """Whether a reload may keep the running instance of ``a`` for ``b``."""
    return (a.name, a.use, a.cls, a.options, a.restart, a.budget, a.capacity, a.on_error) == (
        b.name,
        b.use,
        b.cls,
        b.options,
        b.restart,
        b.budget,
        b.capacity,
        b.on_error,
    )


def describe(entries: Sequence[StageEntry]) -> str:
    return " -> ".join(f"{e.name}({e.use})" for e in entries) or "(none)"
