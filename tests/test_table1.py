"""Table 1 grids (tables/table1*.yaml): blocks, the cost model behind the dry run, and caveats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from benchmark.cli import _select_rows, app
from benchmark.cost import CALIBRATION_PATH, cell_work, cpu_rates, estimate, gpu_rates, load_calibration
from benchmark.errors import ConfigError
from benchmark.grid import GridSpec, expand, load_grid
from benchmark.tables import leaderboard, pivot, render

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "tables"
runner = CliRunner()


def _grid(tmp_path, doc: dict, name="g.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.mark.parametrize("name", ["table1.yaml", "table1_unified.yaml", "table1_cpu.yaml"])
def test_table1_grids_validate(name):
    grid = load_grid(TABLES / name)
    cells = expand(grid)
    assert cells and len({c.key for c in cells}) == len(cells)


def test_table1_scores_each_method_under_its_papers_protocol():
    cells = expand(load_grid(TABLES / "table1.yaml"))
    proto = {(c.method, c.dataset): c.protocol_name for c in cells}
    assert proto["dc", "cifar10"] == "dc" and proto["dsa", "cifar10"] == "dsa" and proto["dm", "cifar10"] == "dm"
    assert proto["idm", "cifar10"] == "idm" and proto["datadam", "cifar10"] == "datadam"
    assert {proto[m, "cifar10"] for m in ("idc", "dream", "dream_plus")} == {"idc"}
    assert {c.dataset for c in cells} >= {"mnist", "fashion_mnist", "svhn", "cifar10", "cifar100", "tinyimagenet"}
    assert {c.ipc for c in cells if c.method_kind != "reference"} == {1, 10, 50}
    n = {(c.method, c.dataset, c.ipc): (0, 0) for c in cells}
    for c in cells:
        e, m = n[c.method, c.dataset, c.ipc]
        n[c.method, c.dataset, c.ipc] = (e + 1, c.num_eval)
    assert n["dm", "cifar10", 10] == (5, 20) and n["idm", "cifar10", 10] == (5, 5)
    assert n["datadam", "cifar10", 10] == (1, 10) and n["dream_plus", "cifar10", 10] == (1, 5)
    unified = expand(load_grid(TABLES / "table1_unified.yaml"))
    assert {c.protocol_name for c in unified} == {"dsa"}
    assert {(c.method, c.dataset, c.ipc) for c in unified} == {(c.method, c.dataset, c.ipc) for c in cells}


def test_table1_cpu_one_protocol_and_caveats():
    cells = expand(load_grid(TABLES / "table1_cpu.yaml"))
    assert {c.protocol_name for c in cells} == {"dsa"}
    assert {c.dataset for c in cells} == {"mnist", "fashion_mnist", "cifar10"}
    assert {c.ipc for c in cells if c.method_kind != "reference"} == {1, 10}
    assert {"random", "full", "dm", "dream_plus"} <= {c.method for c in cells}
    assert any(c.caveat for c in cells) and not any(c.caveat for c in cells if c.method == "random")


def test_blocks_lay_fields_over_the_top_level(tmp_path):
    p = _grid(tmp_path, {"name": "b", "datasets": ["digits"], "ipc": [1], "budget": "smoke", "blocks": [
        {"methods": ["random"], "protocol": "dm", "num_eval": 3},
        {"methods": ["dm"], "protocol": "dsa", "ipc": [2]}]})
    cells = expand(load_grid(p))
    assert [(c.method, c.protocol_name, c.ipc) for c in cells] == [("random", "dm", 1), ("dm", "dsa", 2)]
    assert cells[0].grid == cells[1].grid == "b"
    bad = _grid(tmp_path, {"name": "b", "datasets": ["digits"], "blocks": [{"methods": ["random"], "name": "x"}]})
    with pytest.raises(ConfigError, match="blocks"):
        load_grid(bad)
    dup = _grid(tmp_path, {"name": "b", "datasets": ["digits"], "ipc": [1],
                           "blocks": [{"methods": ["random"]}, {"methods": ["random"]}]})
    with pytest.raises(ConfigError, match="also in blocks"):
        load_grid(dup)
    typo = _grid(tmp_path, {"name": "b", "datasets": ["digits"], "blocks": [{"methods": ["random"], "protocl": "dm"}]})
    with pytest.raises(ConfigError, match="protocl"):
        load_grid(typo)


# ------------------------------------------------------------------ cost model


def _cells(**kw) -> list:
    doc = {"name": "c", "methods": ["dm"], "datasets": ["cifar10"], "ipc": [1], "budget": "paper",
           "num_exp": 1, "num_eval": 1, **kw}
    return expand(GridSpec.model_validate(doc))


def test_cost_is_monotone_in_ipc_iterations_and_networks():
    cal = load_calibration()
    gpu, cpu = gpu_rates(), cpu_rates(cal)
    # IDM's official CIFAR-10 IPC 1 row uses a 5000-image real batch (command.txt): pin its per-IPC values
    pin = {"idm": {"batch_real": 256, "net_generate_interval": 30, "model_train_steps": 10}}
    for m in ("dm", "dc", "idc", "idm", "dream_plus"):
        by_ipc = [cell_work(_cells(methods=[{"name": m, "params": pin.get(m, {})}], ipc=[i])[0]).seconds(gpu)
                  for i in (1, 10, 50)]
        assert by_ipc == sorted(by_ipc) and by_ipc[0] < by_ipc[-1], m
        by_it = [cell_work(_cells(methods=[{"name": m, "params": {"iterations": k}}])[0]).seconds(cpu)
                 for k in (10, 100, 1000)]
        assert by_it == sorted(by_it) and by_it[0] < by_it[-1], m
    one, many = (cell_work(_cells(num_eval=k)[0]).seconds(cpu) for k in (1, 20))
    assert many > one


def test_cost_uses_the_calibration_file(tmp_path, monkeypatch):
    cal = load_calibration()
    assert cal is not None and CALIBRATION_PATH.exists(), "commit results/cost/cpu_calibration.json"
    assert cal["machine"] and cal["eval"]["s_per_image"] > 0
    from benchmark.cost import CALIBRATION_SETTINGS

    assert set(CALIBRATION_SETTINGS) <= set(cal["distill"])
    cells = _cells(ipc=[1, 10])
    base = [c.cpu_h for c in estimate(cells, cal)]
    doubled = json.loads(json.dumps(cal))
    doubled["eval"] = {k: v * 2 for k, v in cal["eval"].items() if k.startswith("s_per")}
    doubled["distill"] = {m: {"s_per_unit": v["s_per_unit"] * 2} for m, v in cal["distill"].items()}
    assert [c.cpu_h for c in estimate(cells, doubled)] == pytest.approx([2 * b for b in base])
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(doubled))
    monkeypatch.setenv("DBENCH_COST_CALIBRATION", str(p))
    assert [c.cpu_h for c in estimate(cells)] == pytest.approx([2 * b for b in base])
    assert all(c.cpu_h is None for c in estimate(cells, {}))  # no calibration: no CPU figure, GPU still there
    assert all(c.gpu_h > 0 for c in estimate(cells, {}))


def test_shared_set_is_charged_once():
    cells = _cells(eval_archs=["ConvNet", "ConvNetD2"])
    assert cells[0].synset_hash == cells[1].synset_hash
    seen: set = set()
    first, second = cell_work(cells[0], seen), cell_work(cells[1], seen)
    assert first.distill_units > 0 and second.distill_units == 0


def test_dry_run_lists_cells_with_cost_and_total(tmp_path):
    r = runner.invoke(app, ["run", "--grid", str(TABLES / "table1_cpu.yaml"), "--dry-run", "--results-dir",
                            str(tmp_path), "--only", "dataset=mnist", "--only", "ipc=1"], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "est GPU" in r.output and "est CPU (1 core)" in r.output
    assert "ESTIMATED COST, total:" in r.output and "GPU-hours" in r.output and "CPU-hours on 1 core" in r.output
    lines = [x for x in r.output.splitlines() if "/mnist/ipc1/" in x]
    assert lines and all(x.count("│") >= 7 for x in lines)
    r = runner.invoke(app, ["cost", "--grid", str(TABLES / "table1.yaml"), "--only", "method=dm"],
                      env={"COLUMNS": "300"})
    assert r.exit_code == 0 and "total:" in r.output and "GPU-hours" in r.output, r.output


# ------------------------------------------------------------------ caveats


def test_caveat_flows_from_grid_to_cell_row_and_table():
    cells = _cells(methods=["random", {"name": "dm", "caveat": "too few iterations"}], budget="smoke")
    rnd, dm = cells
    assert dm.caveat == "too few iterations" and rnd.caveat == ""
    assert dm.hash == _cells(methods=["dm"], budget="smoke")[0].hash  # a caveat never changes a result's identity
    auto = _cells(methods=["dm"], budget="cpu", caveat_below=0.1)[0]  # 1000 of 20000 iterations
    assert "1000 of 20000 distillation iterations" in auto.caveat
    assert _cells(methods=["dm"], budget="paper", caveat_below=0.1)[0].caveat == ""

    import torch

    from benchmark.data import get_info
    from benchmark.rows import cell_base_row

    info = get_info("cifar10")
    row = cell_base_row(dm, info, dm.protocol.resolve(info, dm.arch_eval), torch.device("cpu"), n_train=10,
                        n_stored=10)
    assert row["caveat"] == "too few iterations"
    rows = [dict(row, model_index=0, test_acc=30.0),
            dict(cell_base_row(rnd, info, rnd.protocol.resolve(info, "ConvNet"), torch.device("cpu"), n_train=10,
                               n_stored=10), model_index=0, test_acc=20.0)]
    rows = _select_rows(rows, cells)
    board = leaderboard(rows)
    assert dict(zip(board.method_label, board.caveat)) == {"dm": "too few iterations", "random": ""}
    view = pivot(board)
    assert "caveat" in view.columns
    dm_line = view[view.method.str.startswith("DM")].iloc[0]
    assert dm_line["1"].startswith("† ") and dm_line.caveat == "too few iterations"
    assert not view[view.method.str.startswith("Random")].iloc[0]["1"].startswith("†")
    assert "too few iterations" in render(board, "md") and "caveat" in render(board, "csv")
    # the grid's current word wins over the one stored with an older row
    later = [c.model_copy(update={"caveat": "reworded"}) if c.method == "dm" else c for c in cells]
    assert {r["caveat"] for r in _select_rows(rows, later) if r["method"] == "dm"} == {"reworded"}


def test_idm_cost_counts_every_queue_net_trained_each_iteration():
    """methods/idm.py trains fetch_net_num queue nets for model_train_steps steps every iteration."""
    from benchmark.cost import distill_units

    r = {"batch_real": 256, "model_train_steps": 10, "trained_bs": 256, "net_generate_interval": 30, "factor": 2}
    one, two = (distill_units("idm", {**r, "fetch_net_num": k}, 10, 10) for k in (1, 2))
    assert abs((two - one) - 10 * 256) < 1e-6  # one more net: 10 steps x 256 images
