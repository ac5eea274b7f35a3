"""Where stages come from: a pipeline file's ``use`` names one of three kinds of source.

- ``"module:Class"``: a module on the import path.
- ``"path/to/file.py:Class"``: a file, loaded by path (relative to the pipeline file), as
  mitmproxy's ``-s`` loads scripts. This is what works under sudo, whose clean environment drops
  ``PYTHONPATH``.
- ``"name"``: a stage that an installed package registers under the entry-point group
  ``wgactors.stages``, e.g. in its ``pyproject.toml``::

      [project.entry-points."wgactors.stages"]
      dnsfilter = "actors.contrib.dnsfilter:DnsFilter"

  wgactors registers its own contrib stages this way, and also knows them by name when it runs
  from a source tree that was never installed.

``wgactors stages`` lists the names available and where each comes from.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "Available", "StageLookupError", "available", "resolve"]

ENTRY_POINT_GROUP = "wgactors.stages"
BUILTIN = {
    "dnsfilter": "actors.contrib.dnsfilter:DnsFilter",
    "firewall": "actors.contrib.firewall:Firewall",
    "flowstats": "actors.contrib.flowstats:FlowStats",
    "pcap": "actors.contrib.pcap:PcapWriter",
}
"""The shipped stages by name, for a source tree without installed metadata."""


class StageLookupError(ValueError):
    """``use`` names nothing that can be loaded; the message says why."""


@dataclass(frozen=True, slots=True)
class Available:
    name: str
    target: str  # "module:Class"
    origin: str  # the distribution that registered it, or "wgactors (built in)"


def available() -> list[Available]:
    """Every stage known by name: entry points first, then the built-in names they lack."""
    found: dict[str, Available] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        origin = f"{dist.name} {dist.version}" if dist is not None else "entry point"
        found.setdefault(ep.name, Available(ep.name, ep.value, origin))
    for name, target in BUILTIN.items():
        found.setdefault(name, Available(name, target, "wgactors (built in)"))
    return sorted(found.values(), key=lambda a: a.name)


def resolve(use: str, base: Path | None = None) -> type:
    """The class ``use`` names (not yet checked to be a Stage); ``base`` is the directory
    relative file paths start from."""
    if ":" not in use:
        for entry in available():
            if entry.name == use:
                return resolve(entry.target)
        known = ", ".join(a.name for a in available())
        raise StageLookupError(
            f'no stage is registered as {use!r} (known: {known}); or use "module:Class"'
        )
    where, _, class_name = use.rpartition(":")
    if where.endswith(".py") or "/" in where:
        module = _load_file(Path(where) if base is None else base / where)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as e:  # ImportError, or the module itself failing to import
            raise StageLookupError(f"cannot import {where}: {e}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise StageLookupError(f"{where} has no {class_name}")
    if not isinstance(cls, type):
        raise StageLookupError(f"{where}:{class_name} is not a class")
    return cls


def _load_file(path: Path) -> object:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise StageLookupError(f"no file {path}")
    # One module per file, named after its path, so that loading twice gives the same classes.
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"wgactors_stage_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise StageLookupError(f"cannot load {path} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise StageLookupError(f"cannot load {path}: {e!r}") from None
    return module


def cmd_stages() -> int:
    """``wgactors stages``: the stages a pipeline file can name, and where each comes from."""
    rows = available()
    width = max(len(a.name) for a in rows)
    for a in rows:
        try:
            doc = (resolve(a.target).__doc__ or "").strip().splitlines()
            summary = doc[0] if doc else ""
        except StageLookupError as e:
            summary = f"(cannot load: {e})"
        print(f"{a.name:<{width}}  {a.target}  [{a.origin}]\n{'':<{width}}  {summary}")
    print('\nAlso: use = "module:Class" (importable) or "path/to/file.py:Class" (a file).')
    return 0
