"""The CLI as a user runs it (Typer's CliRunner on the real app)."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmark.cli import app

FIX = Path(__file__).parent / "fixtures"
runner = CliRunner()


def _run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.mark.parametrize("kind,expect", [("methods", "random"), ("datasets", "cifar10"), ("archs", "ResNet18BN_AP"),
                                         ("protocols", "datadam"), ("presets", "datadam"),
                                         ("budgets", "smoke")])
def test_list(kind, expect):
    r = _run("list", kind)
    assert r.exit_code == 0 and expect in r.output


def test_list_unknown_kind_one_line():
    r = _run("list", "metods")
    assert r.exit_code == 2 and "Did you mean: methods" in r.output and "Traceback" not in r.output


def test_dry_run_and_only(tmp_path):
    r = _run("run", "--grid", FIX / "tiny.yaml", "--dry-run", "--only", "method=random", "--results-dir", tmp_path)
    assert r.exit_code == 0 and "2 cells" in r.output and "todo" in r.output


def test_run_table_show_eval_end_to_end(tmp_path):
    store = tmp_path / "store"
    r = _run("run", "--grid", FIX / "tiny.yaml", "--results-dir", store, "--no-mlflow")
    assert r.exit_code == 0, r.output
    assert "leaderboard" in r.output and "Random" in r.output
    csv = _run("table", "--grid", FIX / "tiny.yaml", "--format", "csv", "--results-dir", store)
    header = csv.output.splitlines()[0].split(",")
    assert header[:9] == ["method_label", "dataset", "ipc", "arch_eval", "protocol", "budget", "precision", "acc_mean",
                          "acc_std"]
    assert len(csv.output.splitlines()) == 1 + 3
    assert "paper" in header
    out = tmp_path / "tables"
    md = _run("table", "--format", "md", "--out", out, "--results-dir", store, "--only", "ipc=1")
    assert md.exit_code == 0 and "| Digits" in md.output
    assert (out / "all.md").exists() and (out / "all.tex").read_text().startswith("\\begin{tabular}")
    sub = _run("table", "--grid", FIX / "tiny.yaml", "--only", "method=random", "--out", out, "--name", "tiny_random",
               "--results-dir", store)
    assert sub.exit_code == 0 and "Random" in (out / "tiny_random.md").read_text()
    assert not (out / "tiny.md").exists()  # a subset never overwrites the grid's own table
    synset = next((store / "synsets").glob("*.safetensors"))
    s = _run("show", synset, "--out", tmp_path / "grid.png")
    assert s.exit_code == 0 and (tmp_path / "grid.png").stat().st_size > 100
    e = _run("eval", synset, "--dataset", "digits", "--arch", "ConvNet", "--protocol", "dsa", "--budget", "smoke")
    assert e.exit_code == 0 and "n=1" in e.output, e.output


@pytest.mark.parametrize("args,match", [
    (["eval", "missing.safetensors", "--dataset", "digits"], "no such file"),
    (["eval", "{bad}", "--dataset", "cifar10"], "cannot load as a tensor file"),
    (["eval", "{bad}", "--dataset", "cifar1"], "unknown dataset 'cifar1'"),
    (["run", "--grid", "{grid}"], "unknown method 'randm'. Did you mean: random"),
    (["run", "--grid", "{yaml}"], "malformed YAML"),
    (["run", "--grid", FIX / "tiny.yaml", "--budget", "tiny"], "unknown budget 'tiny'"),
    (["table", "--only", "ipc"], "KEY=V1,V2"),
    (["table", "--out", "x", "--name", "../x"], "plain file stem"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, match):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x04not really a pickle")
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\nmethods: [randm]\ndatasets: [digits]\n")
    yml = tmp_path / "y.yaml"
    yml.write_text("name: [unclosed\n")
    args = [str(a).format(bad=bad, grid=grid, yaml=yml) for a in args]
    r = _run(*args, "--results-dir", tmp_path / "s") if args[0] in ("run", "table") else _run(*args)
    assert r.exit_code == 2, r.output
    assert match in r.output.replace("\n", " ")
    assert "Traceback" not in r.output


def test_missing_dataset_is_one_line(tmp_path):
    g = tmp_path / "g.yaml"
    g.write_text("name: g\nmethods: [random]\ndatasets: [cifar10]\nipc: [1]\nbudget: smoke\n")
    r = _run("run", "--grid", g, "--results-dir", tmp_path / "s", "--no-mlflow", "--data-dir", tmp_path / "nothing",
             env={"DBENCH_NO_DOWNLOAD": "1"})
    assert r.exit_code == 2 and "not found" in r.output and "--data-dir" in r.output.replace("\n", " ")
    assert "Traceback" not in r.output


def test_existing_results_survive_bad_input(tmp_path):
    store = tmp_path / "store"
    assert _run("run", "--grid", FIX / "tiny.yaml", "--results-dir", store, "--no-mlflow",
                "--only", "method=full").exit_code == 0
    snapshot = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    g = tmp_path / "g.yaml"
    g.write_text("name: tiny\nmethods: [random]\ndatasets: [digits]\nipc: [1]\nnum_eval: -3\n")
    assert _run("run", "--grid", g, "--results-dir", store).exit_code == 2
    assert snapshot == {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
