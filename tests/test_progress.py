import io

from rich.console import Console

from benchmark.progress import LineProgress, RichProgress, console_progress


def test_log_files_get_plain_progress_lines():
    buf = io.StringIO()
    console = Console(file=buf, width=200)
    prog = console_progress(console)
    assert isinstance(prog, LineProgress)  # not a terminal: no invisible bars
    with prog:
        t = prog.task("distill dm", total=3)
        t.update(loss=0.5)
        for _ in range(3):
            t.advance()
        t.close()
    lines = buf.getvalue().splitlines()
    assert "distill dm: 0/3" in lines[0] and lines[0].endswith("start")
    assert "distill dm: 3/3 loss=0.5" in lines[-1] and lines[-1].endswith("done")


def test_terminal_gets_rich_bars():
    console = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(console_progress(console), RichProgress)
