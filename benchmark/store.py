"""The append-only results store: one JSON file per evaluated model, written atomically.

Layout under the results directory (``--results-dir`` / ``DBENCH_RESULTS_DIR``, default
``results/store``, git-ignored)::

    rows/<cell_hash>/m<k>.json     one row per evaluated network (never rewritten)
    cells/<cell_hash>.json         cell summary, written when the cell finishes
    synsets/<synset_hash>.safetensors
    curves/<synset_hash>.json      a distillation's accuracy-vs-iteration curve, iterations, wall time
    work/<synset_hash>/            checkpoints of a distillation in progress
    failures/<cell_hash>.json      the last failure of a cell (removed when it finishes)
    claims/<key>.lease             who computes a cell / set right now (benchmark.claims)

Several machines can share one store directory: every file is written once, atomically
(a row with a link that fails if the row exists, so a duplicate can never be written), and
a cell is computed by the one process that holds its claim. A write that cannot happen
(full disk, read-only or missing folder) is a one-line :class:`StoreError`; temporary files
of interrupted writes (``.tmp-<pid>@<host>~...``) are removed by the next run.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .claims import Claims, process_alive, tmp_owner, tmp_prefix
from .errors import DbenchError
from .rows import upgrade

DEFAULT_RESULTS_DIR = Path("results") / "store"
ROW_FILE = re.compile(r"m(\d+)\.json")
# a temporary file that names no owner (an older dbench, another tool) is an interrupted
# write once nothing has touched it for this long
ANONYMOUS_TMP_AGE_S = 600.0
# one whose owner runs on another host: its process cannot be checked
FOREIGN_TMP_AGE_S = 24 * 3600.0


class StoreError(DbenchError):
    """The results directory cannot be used or written (a file, read-only, full, ...)."""


class DiskFullError(StoreError):
    pass


def results_dir(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("DBENCH_RESULTS_DIR") or DEFAULT_RESULTS_DIR).expanduser()


def write_error(path: Path, e: OSError, what: str = "write") -> StoreError:
    """One line for a failed write: 'disk full at PATH' for ENOSPC/EDQUOT, else the reason."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"disk full at {path}: free space on that file system (or pass --results-dir / --out "
                             f"elsewhere) and rerun; finished work is kept.")
    if e.errno == errno.EROFS:
        return StoreError(f"cannot {what} {path}: read-only file system; use a writable folder.")
    if e.errno in (errno.ENOTDIR, errno.EEXIST) or isinstance(e, (NotADirectoryError, FileExistsError)):
        return StoreError(f"cannot {what} {path}: a part of that path is a file, not a folder.")
    return StoreError(f"cannot {what} {path}: {e.strerror or e}.")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def atomic_write_text(path: Path, text: str, *, replace: bool = True) -> bool:
    """Write ``text`` to ``path`` through a temporary file, so readers see the old content or
    the new one, never a part. ``replace=False`` never overwrites: the file is linked into
    place, and False is returned (nothing written) if ``path`` already exists. A failed write
    (disk full, read-only, a file in the way) leaves nothing behind and raises a
    :class:`StoreError`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=tmp_prefix())
        try:
            _write_all(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as e:  # a file system without hard links: check, then rename
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)


def is_stale_tmp(p: Path, now: float | None = None) -> bool:
    """A temporary file of an interrupted write: its process is gone (same host), or it has
    not been touched for a long time (another host, or no owner in its name)."""
    try:
        age = (now or time.time()) - p.lstat().st_mtime
    except FileNotFoundError:
        return False
    owner = tmp_owner(p.name)
    if owner is None:
        return age > ANONYMOUS_TMP_AGE_S
    alive = process_alive(owner[1], owner[0])
    return alive is False or (alive is None and age > FOREIGN_TMP_AGE_S)


def check_results_dir(root: Path, *, write: bool = True, option: str = "--results-dir") -> None:
    """Fail with one line, before any compute, if ``root`` cannot serve as a results folder:
    a file, under a file, in a virtual file system (/proc, /sys), or (``write``) not writable."""
    root = Path(root)
    hint = f"pass {option} with a writable folder (or set DBENCH_RESULTS_DIR)"
    resolved = root.expanduser().absolute()
    if resolved.parts[:2] in (("/", "proc"), ("/", "sys")):
        raise StoreError(f"{option} {root}: /{resolved.parts[1]} is a virtual kernel file system; {hint}.")
    if root.exists() and not root.is_dir():
        raise StoreError(f"{option} {root}: is a file, not a folder; {hint}.")
    for parent in root.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise StoreError(f"{option} {root}: {parent} is a file, not a folder; {hint}.")
            break
    if not write:
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=tmp_prefix())
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise write_error(root, e) from None
        reason = "read-only file system" if e.errno == errno.EROFS else (e.strerror or str(e)).lower()
        raise StoreError(f"{option} {root}: cannot create files there ({reason}); {hint}.") from None


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

    @functools.cached_property
    def claims(self) -> Claims:
        """Who computes what right now (one lease per cell or set, see benchmark.claims)."""
        return Claims(self.root / "claims")

    def check(self, write: bool = True) -> None:
        """One-line error if this directory cannot be used (see :func:`check_results_dir`)."""
        check_results_dir(self.root, write=write)

    # ----------------------------------------------------------------- housekeeping
    def clean_stale_tmp(self) -> list[Path]:
        """Remove temporary files left by interrupted writes (``.tmp-*`` whose process is gone);
        a write in progress in another live process is left alone. Returns what was removed."""
        removed: list[Path] = []
        if not self.root.is_dir():
            return removed
        now = time.time()
        for dirpath, dirnames, filenames in os.walk(self.root):
            if dirpath == str(self.root):
                dirnames[:] = [d for d in dirnames if d not in ("mlartifacts",)]
            for name in filenames:
                if name.startswith(".tmp-"):
                    p = Path(dirpath) / name
                    if is_stale_tmp(p, now):
                        try:
                            p.unlink()
                            removed.append(p)
                        except FileNotFoundError:
                            pass
        return removed

    def remove_finished_work(self, synset_hash: str | None = None) -> list[Path]:
        """Delete distillation checkpoints (``work/<synset_hash>/``) whose set is saved:
        they can never be resumed from again. All of them, or the one of ``synset_hash``."""
        base = self.root / "work"
        if not base.is_dir():
            return []
        dirs = [base / synset_hash] if synset_hash is not None else sorted(base.iterdir())
        removed = []
        for d in dirs:
            if d.is_dir() and self.synset_path(d.name).exists():
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
        return removed

    # ------------------------------------------------------------------------- rows
    def write_row(self, cell_hash: str, index: int, row: dict[str, Any]) -> bool:
        """Write one network's row; append-only: an existing row is never replaced, even by a
        concurrent writer (False is returned then)."""
        p = self._row_dir(cell_hash) / f"m{index}.json"
        if p.exists():
            return False
        return atomic_write_text(p, json.dumps(row, sort_keys=True), replace=False)

    def _row_files(self, d: Path) -> list[tuple[int, Path]]:
        """The row files of one cell folder, by model index. A file named like a row but not
        ``m<k>.json`` (``mbackup.json``) or a folder posing as a row is an error, not skipped:
        it would silently change what counts as a finished cell."""
        out = []
        for p in d.glob("m*.json"):
            m = ROW_FILE.fullmatch(p.name)
            if m is None or not p.is_file():
                raise StoreError(f"{p}: not a result row (rows/ holds only m<k>.json files written by dbench); "
                                 f"move it out of {self.root / 'rows'}.")
            out.append((int(m.group(1)), p))
        return sorted(out)

    def model_indices(self, cell_hash: str) -> set[int]:
        d = self._row_dir(cell_hash)
        if not d.is_dir():
            return set()
        return {i for i, _ in self._row_files(d)}

    def is_finished(self, cell_hash: str, num_eval: int) -> bool:
        return ((self.root / "cells" / f"{cell_hash}.json").exists()
                and set(range(num_eval)) <= self.model_indices(cell_hash))

    def finish_cell(self, cell_hash: str, summary: dict[str, Any]) -> None:
        atomic_write_text(self.root / "cells" / f"{cell_hash}.json", json.dumps(summary, sort_keys=True, default=str))
        try:
            (self.root / "failures" / f"{cell_hash}.json").unlink()
        except FileNotFoundError:
            pass

    def record_failure(self, cell_hash: str, info: dict[str, Any]) -> None:
        atomic_write_text(self.root / "failures" / f"{cell_hash}.json", json.dumps(info, sort_keys=True, default=str))

    def cell_summary(self, cell_hash: str) -> dict[str, Any] | None:
        p = self.root / "cells" / f"{cell_hash}.json"
        if not p.exists():
            return None
        try:
            d = json.loads(p.read_text())
            if not isinstance(d, dict):
                raise ValueError
            return d
        except (ValueError, UnicodeDecodeError, OSError):
            raise StoreError(f"{p}: unreadable cell summary; delete it (the cell's rows are kept and the next run "
                             f"summarises them again).") from None

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
            for _, p in self._row_files(d):
                try:
                    yield upgrade(json.loads(p.read_text()))
                except (json.JSONDecodeError, UnicodeDecodeError, KeyError, AttributeError, TypeError):
                    raise DbenchError(f"{p}: unreadable result row (partial write by another tool?). "
                                      "Delete it.") from None
