"""A minimal progress interface so library code never imports rich; the CLI plugs in bars."""

from __future__ import annotations

from typing import Protocol


class Task(Protocol):
    def advance(self, n: int = 1) -> None: ...
    def update(self, **fields) -> None: ...
    def close(self) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: int | None) -> Task: ...


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, **fields) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    def task(self, description: str, total: int | None) -> Task:
        return _NullTask()


class LineProgress:
    """Plain progress lines for logs (stdout not a terminal: nohup, batch jobs, CI): one line
    when a task starts, then at most one every ``every_s`` seconds, and one when it ends."""

    def __init__(self, console, every_s: float = 30.0):
        self._console = console
        self._every = every_s

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def task(self, description: str, total: int | None) -> Task:
        import time

        console, every = self._console, self._every
        state = {"n": 0, "info": "", "t0": time.monotonic(), "last": time.monotonic()}

        def emit(tag: str = "") -> None:
            el = time.monotonic() - state["t0"]
            of = f"/{total}" if total else ""
            console.print(f"[{time.strftime('%H:%M:%S')}] {description}: {state['n']}{of} {state['info']} "
                          f"({el:.0f}s){tag}", highlight=False, markup=False, soft_wrap=True)

        emit(" start")

        class _T:
            def advance(self, n: int = 1) -> None:
                state["n"] += n
                now = time.monotonic()
                if now - state["last"] >= every:
                    state["last"] = now
                    emit()

            def update(self, **fields) -> None:
                state["info"] = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in fields.items())

            def close(self) -> None:
                emit(" done")

        return _T()

    def log(self, msg: str) -> None:
        self._console.print(msg)


def console_progress(console):
    """Rich bars on a terminal, plain timestamped lines otherwise (log files keep progress)."""
    return RichProgress(console) if console.is_terminal else LineProgress(console)


class RichProgress:
    """rich-backed progress bars (transient sub-bars, one persistent bar per grid)."""

    def __init__(self, console=None):
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RP

        self._p = RP(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                     TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                     console=console, transient=False)

    def __enter__(self):
        self._p.__enter__()
        return self

    def __exit__(self, *exc):
        return self._p.__exit__(*exc)

    def task(self, description: str, total: int | None) -> Task:
        p = self._p
        tid = p.add_task(description, total=total, info="")

        class _T:
            def advance(self, n: int = 1) -> None:
                p.advance(tid, n)

            def update(self, **fields) -> None:
                info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
                p.update(tid, info=info)

            def close(self) -> None:
                p.remove_task(tid)

        return _T()

    def log(self, msg: str) -> None:
        self._p.console.print(msg)
