"""The append-only results store: one JSON file per evaluated model, written atomically.

Layout under the results directory (``--results-dir`` / ``DBENCH_RESULTS_DIR``, default
``results/store``, git-ignored)::

    rows/<cell_hash>/m<k>.json     one row per evaluated network (never rewritten)
    cells/<cell_hash>.json         cell summary, written when the cell finishes
    synsets/<synset_hash>.safetensors
    curves/<synset_hash>.json      a distillation's accuracy-vs-iteration curve, iterations, wall time
    work/<synset_hash>/            checkpoints of a distillation in progress
    failures/<cell_hash>.json      the last failure of a cell (removed when it finishes)

Several machines can share one store directory: every file is written once, atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DbenchError
from .rows import upgrade

DEFAULT_RESULTS_DIR = Path("results") / "store"


def results_dir(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("DBENCH_RESULTS_DIR") or DEFAULT_RESULTS_DIR).expanduser()


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class ResultStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = results_dir(root)

    # ------------------------------------------------------------------------ paths
    def synset_path(self, synset_hash: str) -> Path:
        return self.root / "synsets" / f"{synset_hash}.safetensors"

    def workdir(self, synset_hash: str) -> Path:
        return self.root / "work" / synset_hash

    def _row_dir(self, cell_hash: str) -> Path:
        return self.root / "rows" / cell_hash

    # ------------------------------------------------------------------------- rows
    def write_row(self, cell_hash: str, index: int, row: dict[str, Any]) -> None:
        p = self._row_dir(cell_hash) / f"m{index}.json"
        if p.exists():  # append-only: an existing row is never replaced
            return
        atomic_write_text(p, json.dumps(row, sort_keys=True))

    def model_indices(self, cell_hash: str) -> set[int]:
        d = self._row_dir(cell_hash)
        if not d.exists():
            return set()
        return {int(p.stem[1:]) for p in d.glob("m*.json")}

    def is_finished(self, cell_hash: str, num_eval: int) -> bool:
        return (self.root / "cells" / f"{cell_hash}.json").exists() and set(range(num_eval)) <= self.model_indices(cell_hash)

    def finish_cell(self, cell_hash: str, summary: dict[str, Any]) -> None:
        atomic_write_text(self.root / "cells" / f"{cell_hash}.json", json.dumps(summary, sort_keys=True, default=str))
        f = self.root / "failures" / f"{cell_hash}.json"
        if f.exists():
            f.unlink()

    def record_failure(self, cell_hash: str, info: dict[str, Any]) -> None:
        atomic_write_text(self.root / "failures" / f"{cell_hash}.json", json.dumps(info, sort_keys=True, default=str))

    def cell_summary(self, cell_hash: str) -> dict[str, Any] | None:
        p = self.root / "cells" / f"{cell_hash}.json"
        return json.loads(p.read_text()) if p.exists() else None

    def write_curve(self, synset_hash: str, record: dict[str, Any]) -> None:
        atomic_write_text(self.root / "curves" / f"{synset_hash}.json", json.dumps(record, sort_keys=True))

    def curve(self, synset_hash: str) -> dict[str, Any]:
        """The stored curve record of a distilled set ({} for selections and unknown sets)."""
        p = self.root / "curves" / f"{synset_hash}.json"
        if not p.exists():
            return {}
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            raise DbenchError(f"{p}: unreadable curve record; delete it (the set itself is kept).") from None

    def synset_meta(self, synset_hash: str) -> dict[str, Any]:
        """The ``meta`` of a stored synthetic set (read from its manifest, tensors not loaded);
        {} if the set is missing or unreadable."""
        p = self.synset_path(synset_hash)
        if not p.exists():
            return {}
        try:
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                return json.loads((f.metadata() or {}).get("dbench", "{}")).get("meta", {})
        except Exception:  # noqa: BLE001 - a table must not die on one unreadable artifact
            return {}

    def iter_rows(self, cell_hashes: set[str] | None = None) -> Iterator[dict[str, Any]]:
        base = self.root / "rows"
        if not base.exists():
            return
        dirs = [base / h for h in sorted(cell_hashes)] if cell_hashes is not None else sorted(base.iterdir())
        for d in dirs:
            if not d.is_dir():
                continue
            for p in sorted(d.glob("m*.json")):
                try:
                    yield upgrade(json.loads(p.read_text()))
                except (json.JSONDecodeError, UnicodeDecodeError, KeyError, AttributeError, TypeError):
                    raise DbenchError(f"{p}: unreadable result row (partial write by another tool?). Delete it.") from None
