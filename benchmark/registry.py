"""One generic registry class; one instance per component kind.

Registering a duplicate name raises (naming both targets); looking up an unknown
name raises :class:`UnknownNameError` with close-match suggestions.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")


def natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


class Registry(Generic[T]):
    def __init__(self, kind: str, *, key_pattern: re.Pattern | None = _KEY):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._key_pattern = key_pattern

    def register(self, name: str | None = None, *aliases: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            names = [name or getattr(obj, "key", None) or obj.__name__, *aliases]
            for n in names:
                self.add(n, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if self._key_pattern is not None and not self._key_pattern.match(name):
            raise ValueError(f"{self.kind} name {name!r} must match {self._key_pattern.pattern}")
        if name in self._items and self._items[name] is not obj:
            raise ValueError(
                f"duplicate {self.kind} '{name}': {self.origin(name)} and {_where(obj)}"
            )
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._items)

    def list(self, pattern: str = "*") -> list[str]:
        return sorted((k for k in self._items if fnmatch.fnmatch(k, pattern)), key=natural_key)

    def items(self) -> list[tuple[str, T]]:
        return [(k, self._items[k]) for k in self.list()]

    def origin(self, name: str) -> str:
        return _where(self._items[name])


def _where(obj: object) -> str:
    try:
        return f"{inspect.getsourcefile(obj)}:{inspect.getsourcelines(obj)[1]}"  # type: ignore[arg-type]
    except (TypeError, OSError):
        return repr(obj)


_PLUGINS_LOADED = False


def load_plugins() -> None:
    """Import every module of ``methods/`` and ``baselines/`` (and entry points
    in the ``dbench.plugins`` group) so their registration decorators run."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for pkg_name in ("baselines", "methods"):
        pkg = importlib.import_module(pkg_name)
        for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{pkg_name}.{mod.name}")
    from importlib.metadata import entry_points

    for ep in entry_points(group="dbench.plugins"):
        ep.load()
