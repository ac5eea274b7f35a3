"""A stage's options, checked against its constructor's annotations when the file is loaded.

A pipeline file is TOML: its values are str, int, float, bool, lists and tables. A stage says
what it takes with ordinary annotations on ``__init__``; a value of the wrong type is refused at
load time, naming the option and what was expected, instead of failing at the first packet
(``mtu = "1200"`` for ``mtu: int``). Understood: ``int``, ``float`` (an int is accepted, as in
Python), ``bool`` (and only a bool: ``true``, never ``1``), ``str``, :class:`pathlib.Path`,
``list``/``tuple``/``set``/``frozenset``/``Sequence``/``Iterable``/``Collection`` of those (a
TOML array), ``dict``/``Mapping`` (a table), unions, ``Optional``, ``Literal`` and ``Any``. Any
other annotation (a class of the stage's own, a ``TypedDict``) is accepted as-is: the
constructor judges it.

**Path options.** An option annotated :class:`pathlib.Path` (alone, in a union such as
``Path | None``, or as the element of a list) is a file name, and a relative one is taken
relative to the pipeline file, like ``use``, not to the daemon's working directory (``/``
under systemd). The stage receives a :class:`~pathlib.Path`. Other strings are never touched:
only the annotation makes a string a path.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

__all__ = ["OptionError", "check_options"]

MAX_SHOWN = 40  # characters of a refused value shown in the message
_SEQUENCES = {
    list,
    tuple,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Iterable,
    collections.abc.Collection,
    collections.abc.Set,
    collections.abc.MutableSet,
}
_MAPPINGS = {dict, collections.abc.Mapping, collections.abc.MutableMapping}
_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


class OptionError(ValueError):
    """One option is wrong; the message names it and what was expected."""


def check_options(
    cls: type, options: Mapping[str, Any], base: Path | None = None
) -> dict[str, Any]:
    """``options`` checked against ``cls``'s constructor, with path options made absolute
    against ``base`` (left relative if None). Raises :class:`OptionError`."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # a constructor Python cannot describe: it judges alone
        return dict(options)
    params = signature.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for key in options:
        if key not in named and not takes_any:
            known = ", ".join(named) or "none"
            raise OptionError(f"unknown option {key!r} (options: {known})")
    for n, p in named.items():
        if p.default is p.empty and n not in options:
            raise OptionError(f"option {n!r} is required")
    hints = _hints(cls)
    checked: dict[str, Any] = {}
    for key, value in options.items():
        hint = hints.get(key, Any)
        problem = _mismatch(value, hint)
        if problem is not None:
            raise OptionError(f"option {key!r}: expected {problem}, got {_show(value)}")
        checked[key] = _as_paths(value, hint, base)
    return checked


def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of the ``__init__`` that ``cls`` uses; those that cannot be
    resolved (a name only imported under TYPE_CHECKING) are left out, so accepted as-is."""
    init = getattr(cls, "__init__", None)
    if init is None:
        return {}
    try:
        return typing.get_type_hints(init)
    except Exception:
        pass
    raw = getattr(init, "__annotations__", {})
    module = inspect.getmodule(init)
    scope = dict(vars(module)) if module is not None else {}
    hints: dict[str, Any] = {}
    for name, annotation in raw.items():
        try:
            hints[name] = eval(annotation, scope) if isinstance(annotation, str) else annotation
        except Exception:
            continue
    return hints


def _show(value: object) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    kinds.update({list: "an array", dict: "a table"})
    kind = kinds.get(type(value), f"a {type(value).__name__}")  # TOML also has dates and times
    shown = repr(value)
    if len(shown) > MAX_SHOWN:
        shown = shown[: MAX_SHOWN - 3] + "..."
    return f"{kind} ({shown})"


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint in _NAMES:
        return _NAMES[hint]
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return "a path (a string)"
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if any(_is_path(a) for a in args):  # a path option: its string is a path
            args = tuple(a for a in args if a is not str)
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "nothing"
    if origin in _SEQUENCES or hint in _SEQUENCES:
        args = typing.get_args(hint)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"an array of {len(args)}: " + ", ".join(_describe(a) for a in args)
        item = args[0] if args else Any
        return "an array" + (f" of {_plural(_describe(item))}" if item is not Any else "")
    if origin in _MAPPINGS or hint in _MAPPINGS:
        args = typing.get_args(hint)
        item = args[1] if len(args) == 2 else Any
        return "a table" + (f" of {_plural(_describe(item))}" if item is not Any else "")
    return getattr(hint, "__name__", str(hint))


def _mismatch(value: object, hint: Any) -> str | None:
    """None if ``value`` fits ``hint``; else what was expected."""
    return None if _fits(value, hint) else _describe(hint)


def _fits(value: object, hint: Any) -> bool:
    if hint is Any or hint is object or isinstance(hint, typing.TypeVar):
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return _fits(value, args[0])
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if isinstance(hint, type) and issubclass(hint, PurePath):
        return isinstance(value, str | PurePath)
    if origin in _SEQUENCES or hint in _SEQUENCES:
        if not isinstance(value, list | tuple | set | frozenset):
            return False
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(
                _fits(v, a) for v, a in zip(value, args, strict=True)
            )
        item = args[0] if args else Any
        return all(_fits(v, item) for v in value)
    if origin in _MAPPINGS or hint in _MAPPINGS:
        if not isinstance(value, dict):
            return False
        key, item = args if len(args) == 2 else (Any, Any)
        return all(_fits(k, key) and _fits(v, item) for k, v in value.items())
    return True  # an annotation of the stage's own: its constructor judges the value


def _is_path(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, PurePath)


def _as_paths(value: Any, hint: Any, base: Path | None) -> Any:
    """``value`` with the strings that ``hint`` says are paths made :class:`Path` objects,
    relative ones joined to ``base``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(value, str):
        union = origin in (typing.Union, types.UnionType)
        if _is_path(hint) or (union and any(_is_path(a) for a in args)):
            return _path(value, base)
        return value
    if isinstance(value, list) and (origin in _SEQUENCES or hint in _SEQUENCES):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return [_as_paths(v, a, base) for v, a in zip(value, args, strict=True)]
        item = args[0] if args else Any
        return [_as_paths(v, item, base) for v in value]
    if isinstance(value, list) and origin in (typing.Union, types.UnionType):
        for a in args:
            if _fits(value, a):
                return _as_paths(value, a, base)
    return value


def _path(text: str, base: Path | None) -> Path:
    path = Path(text).expanduser()
    return path if base is None or path.is_absolute() else base / path


def _plural(text: str) -> str:
    """ "an integer" -> "integers", for "an array of integers"."""
    for article in ("a ", "an "):
        if text.startswith(article) and " or " not in text:
            word = text.removeprefix(article)
            return word if "(" in word else word + "s"
    return text
