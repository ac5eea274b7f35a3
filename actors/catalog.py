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

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "Available",
    "StageLookupError",
    "available",
    "resolve",
    "stale_note",
    "summary",
]

ENTRY_POINT_GROUP = "wgactors.stages"
BUILTIN = {
    "dnsfilter": "actors.contrib.dnsfilter:DnsFilter",
    "firewall": "actors.contrib.firewall:Firewall",
    "flowstats": "actors.contrib.flowstats:FlowStats",
    "pcap": "actors.contrib.pcap:PcapWriter",
}
"""The shipped stages by name, for a source tree without installed metadata."""
STAGES_WIDTH = 100  # columns `wgactors stages` wraps descriptions to


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
    relative file paths start from, and the folder importable while the stage's module loads.

    A file loaded by path is loaded again when it, or a module beside it that it imports, has
    changed since (so a reload picks up edited code); a module imported by name is imported
    once (see :func:`stale_note`)."""
    if ":" not in use:
        return resolve(_registered(use), base)
    where, _, class_name = use.rpartition(":")
    if where.endswith(".py") or "/" in where:
        module = _load_file(Path(where) if base is None else base / where, base)
    else:
        module = _import(where, base)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise StageLookupError(f"{where} has no {class_name}")
    if not isinstance(cls, type):
        raise StageLookupError(f"{where}:{class_name} is not a class")
    return cls


def stale_note(use: str) -> str:
    """If ``use`` names a module imported by name whose file changed since it was imported,
    a sentence saying that the old code is still what runs; else ""."""
    if ":" not in use:
        try:
            use = _registered(use)
        except StageLookupError:
            return ""
    where = use.rpartition(":")[0]
    if where.endswith(".py") or "/" in where or where not in _by_name:
        return ""
    _, file, print_ = _by_name[where]
    if file is None or _fingerprint(file) == print_:
        return ""
    return (
        f"{where} is imported by name and its file changed, but the code loaded at start-up is "
        f'still in use; restart wgactors to load it, or load the file by path ("{file}:Class")'
    )


def _registered(name: str) -> str:
    for entry in available():
        if entry.name == name:
            return entry.target
    known = ", ".join(a.name for a in available())
    raise StageLookupError(
        f'no stage is registered as {name!r} (known: {known}); or use "module:Class"'
    )


Fingerprint = tuple[int, int, str] | None
"""A file's modification time (ns), size and SHA-256; None if it cannot be read."""


def _fingerprint(path: Path) -> Fingerprint:
    try:
        st = path.stat()
        return st.st_mtime_ns, st.st_size, hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@dataclass(slots=True)
class _Loaded:
    """A stage file loaded by path: its module and the fingerprint, at load time, of each
    source it was built from (itself and the modules beside it that it imports)."""

    module: ModuleType
    sources: dict[Path, Fingerprint]


_loaded: dict[str, _Loaded] = {}
_by_name: dict[str, tuple[ModuleType, Path | None, Fingerprint]] = {}
"""Modules imported by name: the module, its file and the file's fingerprint at import."""
_beside: dict[str, tuple[Path, Fingerprint]] = {}
"""Modules that stage files imported from the importable folders: file and fingerprint."""


@contextlib.contextmanager
def _importable(folders: Iterable[Path]) -> Iterator[None]:
    """``folders`` on the import path for the duration of one import, then off it again: a
    stage's imports work, and nothing else in the process sees its folder."""
    added = [str(f) for f in dict.fromkeys(folders) if str(f) not in sys.path]
    sys.path[:0] = added
    importlib.invalidate_caches()
    try:
        yield
    finally:
        for entry in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def _import(where: str, base: Path | None) -> ModuleType:
    try:
        with _importable([base] if base is not None else []):
            module = importlib.import_module(where)
    except Exception as e:  # ImportError, or the module itself failing to import
        raise StageLookupError(f"cannot import {where}: {e}") from None
    known = _by_name.get(where)
    if known is None or known[0] is not module:  # first imported now (or imported afresh)
        path = _module_file(module)
        _by_name[where] = (module, path, _fingerprint(path) if path else None)
    return module


def _module_file(module: object) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if isinstance(file, str) else None


def _load_file(path: Path, base: Path | None) -> ModuleType:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise StageLookupError(f"no file {path}")
    # One module per file, named after its path, so that loading twice gives the same classes.
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"wgactors_stage_{path.stem}_{digest}"
    previous = _loaded.get(name)
    if (
        previous is not None
        and sys.modules.get(name) is previous.module
        and all(_fingerprint(p) == f for p, f in previous.sources.items())
    ):
        return previous.module
    folders = [path.parent] if base is None else [base, path.parent]
    # Modules beside another pipeline file, or changed since, are imported afresh: the name
    # `helper` means the file beside this one, as it is now.
    for helper, (file, print_) in list(_beside.items()):
        if not any(file.is_relative_to(f) for f in folders) or _fingerprint(file) != print_:
            sys.modules.pop(helper, None)
            del _beside[helper]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise StageLookupError(f"cannot load {path} as Python")
    module = importlib.util.module_from_spec(spec)
    before = set(sys.modules)
    sources: dict[Path, Fingerprint] = {path: _fingerprint(path)}
    sys.modules[name] = module
    try:
        with _importable(folders):
            spec.loader.exec_module(module)
    except Exception as e:
        if previous is not None:
            sys.modules[name] = previous.module
        else:
            del sys.modules[name]
        raise StageLookupError(f"cannot load {path}: {e!r}") from None
    inside = tuple(folders)
    for new in set(sys.modules) - before - {name}:
        found = _module_file(sys.modules[new])
        if found is not None and any(found.is_relative_to(f) for f in inside):
            _beside[new] = (found, _fingerprint(found))
    for value in vars(module).values():
        used = value.__name__ if isinstance(value, ModuleType) else getattr(value, "__module__", "")
        if isinstance(used, str) and used in _beside:
            file, print_ = _beside[used]
            sources[file] = print_
    _loaded[name] = _Loaded(module, sources)
    return module


def summary(doc: str | None) -> str:
    """The first paragraph of a docstring, whitespace joined: whole sentences, never a line
    cut where the author's editor wrapped it."""
    paragraph = (doc or "").strip().split("\n\n", 1)[0]
    return " ".join(paragraph.split())


def cmd_stages() -> int:
    """``wgactors stages``: the stages a pipeline file can name, and where each comes from."""
    rows = available()
    width = max(len(a.name) for a in rows)
    indent = " " * (width + 2)
    for a in rows:
        try:
            text = summary(resolve(a.target).__doc__)
        except StageLookupError as e:
            text = f"(cannot load: {e})"
        print(f"{a.name:<{width}}  {a.target}  [{a.origin}]")
        if text:
            print(
                textwrap.fill(text, STAGES_WIDTH, initial_indent=indent, subsequent_indent=indent)
            )
    print('\nAlso: use = "module:Class" (importable) or "path/to/file.py:Class" (a file).')
    return 0
