"""User-facing error types. The CLI prints these as one line (exit code 2)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DbenchError(Exception):
    """Base class: a problem the user can fix. Printed as one line, no traceback."""


class ConfigError(DbenchError):
    """Malformed or invalid configuration (YAML, grid fields, presets)."""


class UnknownNameError(DbenchError):
    def __init__(self, kind: str, name: str, available: Iterable[str]):
        available = sorted(available)
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        super().__init__(
            f"unknown {kind} '{name}'.{hint} Available: {', '.join(available)} "
            f"(see `dbench list {kind}s`)."
        )
        self.kind, self.name, self.suggestions = kind, name, close


class ContractError(DbenchError):
    def __init__(self, component: str, detail: str):
        super().__init__(f"{component} broke its output contract: {detail}")


class DataNotFoundError(DbenchError):
    """A dataset could not be found locally and could not be downloaded."""


class ArtifactError(DbenchError):
    """A synthetic-set or checkpoint file is missing, corrupt, untrusted or has the wrong shape."""
