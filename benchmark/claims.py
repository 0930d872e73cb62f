"""Work claims in a shared results directory: one lease file per unit of work.

Several processes (or machines sharing a network file system) may work on one grid. Before
a process computes a unit of work (a grid cell, a synthetic set) it takes that unit's lease,
``<results>/claims/<key>.lease``: a small JSON record naming the holder (host, pid, process
start time) and an expiry time. The holder renews the lease while it works (a background
thread, every ``ttl / 4`` seconds) and deletes it when it is done. Anyone else sees the unit
as taken until the lease expires, or, on the same host, until the holder's process is gone,
so a worker killed with ``kill -9`` blocks nothing for long: its lease can be taken over.

Every read-modify-write of a lease file happens under one short file lock
(``claims/.lock``, :mod:`filelock`), so two processes can never both believe they hold a unit.
The module needs neither torch nor MLflow: cluster executors can use it as it is::

    claims = Claims(results_root / "claims")
    lease = claims.try_acquire("cell-ab12cd34ef56")
    if lease is not None:
        with lease:              # renewed in the background, released on exit
            do_the_work()

``DBENCH_LEASE_TTL`` (seconds, default 300) sets how long an unrenewed lease stays valid.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TTL = 300.0
_THREAD_LOCK = threading.Lock()


# ------------------------------------------------------------------ process identity


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a local process, from /proc; None
    where /proc is not available or the process does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the command name may contain spaces and ')'
    return (fields[0], fields[19]) if len(fields) > 19 else None


def tmp_prefix() -> str:
    """Prefix of this process's temporary files (``.tmp-<pid>@<host>~``): a later run can tell
    an interrupted write (its process is gone) from one in progress. See :func:`tmp_owner`."""
    return f".tmp-{os.getpid()}@{socket.gethostname()}~"


def tmp_owner(name: str) -> tuple[int, str] | None:
    """(pid, host) of a temporary file named by :func:`tmp_prefix`, None for other names."""
    m = re.match(r"\.tmp-(\d+)@([^~/]+)~", name)
    return (int(m.group(1)), m.group(2)) if m else None


def this_process() -> dict:
    """Who this process is, as written into lease files and temporary-file names."""
    stat = _proc_stat(os.getpid())
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": stat[1] if stat else None}


def process_alive(host: str, pid: int, start: str | None = None) -> bool | None:
    """Whether the process ``pid`` on ``host`` still runs: True or False on this host, None
    (unknown) for another host. A recycled pid (other start time) or a zombie counts as gone."""
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        pass  # exists, owned by someone else
    stat = _proc_stat(pid)
    if stat is not None:
        state, started = stat
        if state == "Z" or (start is not None and started != start):
            return False
    return True


# ---------------------------------------------------------------------------- leases


@dataclass(frozen=True)
class LeaseInfo:
    """The content of one lease file."""

    key: str
    owner: str  # unique per Claims object: host:pid:token
    host: str
    pid: int
    start: str | None
    acquired: float  # epoch seconds
    expires: float  # epoch seconds

    def live(self, now: float | None = None) -> bool:
        """Still held: not expired, and (on this host) its process still runs."""
        if (now if now is not None else time.time()) >= self.expires:
            return False
        return process_alive(self.host, self.pid, self.start) is not False

    def describe(self) -> str:
        return f"{self.host} pid {self.pid}"


class Lease:
    """A held claim. As a context manager it is renewed in a background thread and released
    on exit; :attr:`lost` turns true if another process took it over meanwhile (this one
    stalled for longer than the ttl)."""

    def __init__(self, claims: Claims, key: str):
        self.claims, self.key = claims, key
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _renew_loop(self) -> None:
        interval = max(self.claims.ttl / 4.0, 0.05)
        while not self._stop.wait(interval):
            try:
                if not self.claims.renew(self.key):
                    self.lost = True
                    return
            except Exception:  # noqa: BLE001 - a transient file-system error: try again next time
                continue

    def start(self) -> Lease:
        if self._thread is None:
            self._thread = threading.Thread(target=self._renew_loop, name=f"lease {self.key}", daemon=True)
            self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.claims.release(self.key)

    def __enter__(self) -> Lease:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.release()


class Claims:
    """Lease files under ``root`` (created on first use)."""

    def __init__(self, root: str | os.PathLike, ttl: float | None = None):
        self.root = Path(root)
        self.ttl = float(ttl if ttl is not None else os.environ.get("DBENCH_LEASE_TTL") or DEFAULT_TTL)
        me = this_process()
        self.host, self.pid, self.start = me["host"], me["pid"], me["start"]
        self.owner = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"

    def path(self, key: str) -> Path:
        return self.root / (re.sub(r"[^A-Za-z0-9_.-]", "_", key) + ".lease")

    @contextlib.contextmanager
    def _locked(self):
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        with _THREAD_LOCK, FileLock(str(self.root / ".lock"), timeout=120):
            yield

    def read(self, key: str) -> LeaseInfo | None:
        """The lease file of ``key`` as written (live or not); None if there is none. An
        unreadable one (a writer died mid-write on a file system without atomic rename) is
        treated as a lease of unknown holder that expires ``ttl`` after its last change."""
        p = self.path(key)
        try:
            raw = p.read_text()
        except FileNotFoundError:
            return None
        try:
            d = json.loads(raw)
            return LeaseInfo(d["key"], d["owner"], d["host"], int(d["pid"]), d.get("start"), float(d["acquired"]),
                             float(d["expires"]))
        except (ValueError, KeyError, TypeError):
            try:
                mtime = p.stat().st_mtime
            except FileNotFoundError:
                return None
            return LeaseInfo(key, "?", "?", -1, None, mtime, mtime + self.ttl)

    def holder(self, key: str) -> LeaseInfo | None:
        """The live lease of ``key`` (anyone's, this process's included), or None."""
        info = self.read(key)
        return info if info is not None and info.live() else None

    def _write(self, key: str, acquired: float) -> None:
        now = time.time()
        rec = {"key": key, "owner": self.owner, "host": self.host, "pid": self.pid, "start": self.start,
               "acquired": acquired, "expires": now + self.ttl, "ttl": self.ttl}
        p = self.path(key)
        tmp = p.with_name(f"{tmp_prefix()}{uuid.uuid4().hex[:8]}")
        try:
            tmp.write_text(json.dumps(rec, sort_keys=True))
            os.replace(tmp, p)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def try_acquire(self, key: str) -> Lease | None:
        """Take the lease of ``key`` if nobody else holds it live (a dead or expired holder's
        lease is taken over); None if someone else does. The returned :class:`Lease` is not
        yet renewed in the background: use it as a context manager or call ``start()``."""
        with self._locked():
            cur = self.read(key)
            if cur is not None and cur.owner != self.owner and cur.live():
                return None
            self._write(key, cur.acquired if cur is not None and cur.owner == self.owner else time.time())
        return Lease(self, key)

    def renew(self, key: str) -> bool:
        """Push the expiry of this process's lease on ``key`` forward; False if it is no
        longer ours (expired and taken over, or removed)."""
        with self._locked():
            cur = self.read(key)
            if cur is None or cur.owner != self.owner:
                return False
            self._write(key, cur.acquired)
            return True

    def release(self, key: str) -> None:
        """Delete this process's lease on ``key`` (someone else's is left alone)."""
        with self._locked():
            cur = self.read(key)
            if cur is not None and cur.owner == self.owner:
                with contextlib.suppress(FileNotFoundError):
                    self.path(key).unlink()


__all__ = ["Claims", "Lease", "LeaseInfo", "process_alive", "this_process", "tmp_prefix", "tmp_owner", "DEFAULT_TTL"]
