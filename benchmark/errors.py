"""User-facing error types. The CLI prints these as one line (exit code 2)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DbenchError(Exception):
    """Base class: a problem the user can fix. Printed as one line, no traceback."""


class ConfigError(DbenchError):
    """Malformed or invalid configuration (YAML, grid fields, presets)."""


# kind of name -> the `dbench list` command that shows the valid ones ("preset" is the old
# name of the evaluation protocols: `dbench list presets` still works but is deprecated)
LIST_COMMANDS = {
    "method": "dbench list methods",
    "selector": "dbench list selectors",
    "dataset": "dbench list datasets",
    "arch": "dbench list archs",
    "preset": "dbench list protocols",
    "protocol": "dbench list protocols",
    "budget": "dbench list budgets",
}
_DEFAULT = object()


def list_hint(kind: str) -> str | None:
    """Where to look up valid names of ``kind``: a ``dbench list`` command that exists, or
    None. A method's presets (kind '<method> preset') are a column of ``dbench list methods``."""
    if kind in LIST_COMMANDS:
        return f"see `{LIST_COMMANDS[kind]}`"
    if kind.endswith(" preset"):
        return "`dbench list methods` shows each method's presets"
    return None


class UnknownNameError(DbenchError):
    """An unknown name of some kind, with close matches and the available names.

    ``hint`` is the sentence that says where to look (default: :func:`list_hint`, which
    only names ``dbench list`` commands that exist); pass ``hint=None`` for none."""

    def __init__(self, kind: str, name: str, available: Iterable[str], hint: str | None = _DEFAULT):  # type: ignore[assignment]
        available = sorted(available)
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
        mean = f" Did you mean: {', '.join(close)}?" if close else ""
        hint = list_hint(kind) if hint is _DEFAULT else hint
        super().__init__(
            f"unknown {kind} '{name}'.{mean} Available: {', '.join(available)}"
            + (f" ({hint})." if hint else ".")
        )
        self.kind, self.name, self.suggestions, self.hint = kind, name, close, hint


class ContractError(DbenchError):
    def __init__(self, component: str, detail: str):
        super().__init__(f"{component} broke its output contract: {detail}")


class DataNotFoundError(DbenchError):
    """A dataset could not be found locally and could not be downloaded."""


class ArtifactError(DbenchError):
    """A synthetic-set or checkpoint file is missing, corrupt, untrusted or has the wrong shape."""


class DbenchNote(UserWarning):
    """Something the user should know that is not an error (the CLI prints it as one 'note:'
    line): an old spelling that still works, a conversion applied to their data."""


class DbenchDeprecation(DbenchNote):
    """An old spelling that still works."""


def deprecated(message: str) -> None:
    import warnings

    warnings.warn(message, DbenchDeprecation, stacklevel=3)
