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

Everything is checked at start-up, before any interface exists: the file, the import, that the
class is a :class:`~actors.Stage`, and its options (the class is constructed once, unstarted, so
its own validation runs). Each error is one line naming the entry.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import settings
from .failure import ON_ERROR
from .mailbox import DEFAULT_CAPACITY
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
    """Parse and check pipeline-file text; ``base`` is where relative ``use`` file paths
    start (the file's directory; the working directory if None)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PipelineFileError(path, None, f"not valid TOML: {e}") from None
    unknown = set(doc) - {"inbound", "outbound"}
    if unknown:
        raise PipelineFileError(path, None, f"unknown section {sorted(unknown)[0]!r}")
    names: set[str] = set()
    result: dict[str, list[StageEntry]] = {"inbound": [], "outbound": []}
    for kind in ("inbound", "outbound"):
        entries = doc.get(kind, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise PipelineFileError(path, kind, f"write entries as [[{kind}]] tables")
        if len(entries) > MAX_STAGES:
            raise PipelineFileError(path, kind, f"at most {MAX_STAGES} stages")
        for i, raw in enumerate(entries):
            entry = _entry(path, kind, i, raw, names, base)
            names.add(entry.name)
            result[kind].append(entry)
    return result["inbound"], result["outbound"]


def _entry(
    path: str, kind: str, index: int, raw: dict[str, Any], names: set[str], base: Path | None
) -> StageEntry:
    use = raw.get("use")
    label = f"{kind}[{index}]" + (f" ({use})" if isinstance(use, str) else "")

    def fail(message: str) -> PipelineFileError:
        return PipelineFileError(path, label, message)

    extra = set(raw) - _ENTRY_KEYS
    if extra:
        raise fail(f"unknown key {sorted(extra)[0]!r}")
    if not isinstance(use, str) or not use.strip():
        raise fail('`use` must be "module:Class", "path/to/file.py:Class" or a registered name')
    from .catalog import StageLookupError, resolve

    try:
        cls = resolve(use, base)
    except StageLookupError as e:
        raise fail(str(e)) from None
    class_name = cls.__name__
    from .stage import Stage

    if not isinstance(cls, type) or not issubclass(cls, Stage):
        raise fail(f"{class_name} is not a subclass of actors.Stage")
    name = raw.get("name", class_name.lower())
    if not isinstance(name, str) or not name.isidentifier() or len(name) > 32:
        raise fail("`name` must be a short identifier")
    if name in names or name in _RESERVED:
        if "name" in raw:
            raise fail(f"the name {name!r} is taken")
        n = 2
        while f"{name}{n}" in names:
            n += 1
        name = f"{name}{n}"
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
    _check_options(cls, options, fail)
    return StageEntry(kind, name, use, cls, dict(options), restart, budget, capacity, on_error)


def _check_options(cls: type, options: dict[str, Any], fail: Any) -> None:
    """Build the stage once, unstarted, so that its constructor judges the options."""
    try:
        cls(**options)
    except TypeError as e:
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
