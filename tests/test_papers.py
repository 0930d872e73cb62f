"""`dbench papers`: one catalog entry per seed-paper table, each with a spec that validates (or
the reason it has none), and a paper-layout rendering with ours beside published."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.errors import ConfigError
from benchmark.papers import (
    MISSING,
    REPO_ROOT,
    STATUSES,
    find_table,
    grid_cells,
    load_catalog,
    render_entry,
    resolve,
)

SEEDS = REPO_ROOT.parent / "shared" / "seeds"
# the seed texts by paper (the first lines name it)
TITLES = {"DREAM+": "DREAM+: Efficient Dataset Distillation by Bidirectional", "DREAM": "Material of DREAM:",
          "IDM": "Improved Distribution Matching", "DataDAM": "DataDAM: Efficient", "DM": "Dataset Condensation with "
          "Distribution Matching"}
runner = CliRunner()


def _seed_texts() -> dict[str, str]:
    out = {}
    for f in sorted(SEEDS.glob("*.txt")):
        text = f.read_text(errors="replace")
        head = text[:3000]
        paper = next((p for p, t in TITLES.items() if t in head), None)
        assert paper is not None, f"{f.name}: not one of the five seed papers"
        out[paper] = text
    return out


def test_catalog_entries_are_complete_and_honest():
    cat = load_catalog()
    assert len({t.id for t in cat}) == len(cat)
    assert {t.paper for t in cat} == {"DM", "IDM", "DREAM", "DREAM+", "DataDAM"}
    for t in cat:
        assert t.status in STATUSES
        if t.status != "runs here":
            assert len(t.reason) > 20, t.id
        if t.spec == "none":
            assert not t.files and t.status == "not reproducible" and t.reason, t.id


def test_every_spec_file_exists_and_grids_validate():
    from benchmark.continual import load_continual
    from benchmark.grid import load_grid

    for t in load_catalog():
        for f in t.files:
            assert resolve(f).is_file(), f"{t.id}: {f} does not exist"
        if t.check:  # the CPU-scale check: a grid, or a continual / NAS spec
            assert resolve(t.check).is_file(), f"{t.id}: check {t.check} does not exist"
            if "/continual/" in t.check:
                load_continual(resolve(t.check))
            elif "/nas/" not in t.check:
                load_grid(resolve(t.check))
        if t.spec == "grid":
            for f in t.files:
                load_grid(resolve(f))  # the `dbench validate` path: names, fields, presets
            assert grid_cells(t, "smoke"), f"{t.id}: its grid files and only-filters select no cell"
        elif t.spec == "continual":
            for f in t.files:
                load_continual(resolve(f))
        elif t.spec == "nas":
            nas = pytest.importorskip("benchmark.nas")
            for f in t.files:
                nas.load_nas(resolve(f))


@pytest.mark.skipif(not SEEDS.is_dir(), reason="needs ../shared/seeds")
def test_every_table_number_in_the_seed_texts_has_an_entry():
    """Grep each seed text for 'Table N' / 'TABLE N' / 'Tab. N': every number found is an entry of
    that paper (so a table the catalog misses fails here)."""
    texts = _seed_texts()
    assert set(texts) == {"DM", "IDM", "DREAM", "DREAM+", "DataDAM"}
    have: dict[str, set[str]] = {}
    for t in load_catalog():
        if t.number:
            have.setdefault(t.paper, set()).add(t.number)
    for paper, text in texts.items():
        found = {f"Table {n}" for n in re.findall(r"\b(?:Table|TABLE|Tab\.)\s+(\d+)\b", text)}
        assert found, paper
        assert found <= have.get(paper, set()), f"{paper}: no catalog entry for {sorted(found - have[paper])}"


def test_published_entries_have_published_rows():
    from benchmark.papers import published_rows

    for t in load_catalog():
        if t.published is not None:
            assert len(published_rows(t)), f"{t.id}: no rows for {t.published} in published.csv"


def test_cli_lists_every_entry():
    r = runner.invoke(app, ["papers", "--json"])
    assert r.exit_code == 0, r.output
    listed = json.loads(r.output)
    assert [x["id"] for x in listed] == [t.id for t in load_catalog()]
    assert all(x["status"] in STATUSES for x in listed)
    dm3 = next(x for x in listed if x["id"] == "DM Table 3")
    assert dm3["cells"] == "100" and "tables/papers/dm_table3.yaml" in dm3["spec"]
    r = runner.invoke(app, ["papers"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "DataDAM supp Table 5" in r.output and "not reproducible" in r.output


def _row(**kw):
    base = dict(schema=2, method="dm", method_label="dm.official", method_preset="official", dataset="cifar10",
                ipc=50, arch_eval="ConvNetBN", protocol="dm", budget="paper", arch_distill="ConvNetBN",
                precision="fp32", method_kind="distill", method_display="DM", dataset_display="CIFAR-10",
                arch_eval_display="ConvNet-3-BN", arch_distill_display="ConvNet-3-BN", params_label="",
                extractor_label="")
    return dict(base, **kw)


def test_render_dm_table3_ours_beside_published_and_missing_visible():
    rows = [_row(test_acc=a) for a in (64.0, 66.0)]
    rows += [_row(arch_eval="AlexNetBN", arch_eval_display="AlexNet-BN", test_acc=60.0, budget="cpu")]
    view, tidy = render_entry(find_table("DM Table 3"), rows)
    assert list(view.columns[:2]) == ["method", "arch_distill"]
    dm_conv = view[(view.method == "DM") & (view.arch_distill == "ConvNet-3-BN")].iloc[0]
    assert dm_conv["ConvNet-3-BN"] == "65.0 ± 1.0 (n=2) / 65.2 ± 0.4"
    assert dm_conv["AlexNet-BN"] == "60.0 ± 0.0 (n=1, cpu) / 61.3 ± 0.6"
    assert dm_conv["ResNet-18-BN"] == f"{MISSING} / 57.0 ± 0.9"  # no result of ours: shown as missing
    # every published row of the paper's table is laid out (DSA once, DM on four archs)
    assert len(view) == 5 and set(view.method) == {"DSA", "DM"}
    t = tidy[(tidy.method == "DM") & (tidy.arch_eval == "ConvNet-3-BN") & (tidy.arch_distill == "ConvNet-3-BN")]
    assert t.iloc[0].ours_mean == 65.0 and t.iloc[0].paper_value == 65.2


def test_render_marks_a_number_from_another_protocol():
    rows = [_row(method="random", method_label="random", method_preset=None, method_display="Random",
                 method_kind="select", dataset="mnist", dataset_display="MNIST", ipc=1, arch_eval="ConvNet",
                 arch_distill="ConvNet", arch_eval_display="ConvNet-3", arch_distill_display="ConvNet-3",
                 protocol="idc", test_acc=a) for a in (60.0, 62.0)]
    view, tidy = render_entry(find_table("DM Table 1"), rows)
    cell = view[view.method == "Random"].iloc[0]["MNIST 1"]
    assert cell.startswith("61.0 ± 1.0 (n=2) / 64.9 ± 3.5 (other protocol:")
    assert bool(tidy[(tidy.method == "Random") & (tidy.dataset == "MNIST") & (tidy.ipc == "1")].iloc[0]
                .paper_other_protocol)


def test_render_variants_dream_plus_table5():
    rows = [_row(method="dream", method_label="dream.official", method_display="DREAM", dataset_display="CIFAR-10",
                 ipc=10, arch_eval="ConvNet", arch_distill="ConvNet", arch_eval_display="ConvNet-3",
                 arch_distill_display="ConvNet-3", protocol="idc",
                 params_label="batch_real=64, representative.n=64, representative.per_cluster=2", test_acc=68.0)]
    view, _ = render_entry(find_table("DREAM+ Table 5"), rows)
    assert list(view.columns[:2]) == ["method", "n"]
    dream_n2 = view[(view.method == "DREAM") & (view.n == "2")].iloc[0]
    assert dream_n2["N=32"] == "68.0 ± 0.0 (n=1) / 67.7 ± 0.3"
    assert dream_n2["N=256"] == f"{MISSING} / {MISSING}"  # '-' in the paper, nothing of ours


def test_variant_params_equal_to_the_preset_come_from_the_method_config():
    """A param equal to the preset's value is not in the row's params label (DREAM's official
    per_cluster 1), so variants also look in the row's method_config."""
    row = _row(method="dream_plus", method_label="dream_plus.official", method_display="DREAM+", ipc=10,
               arch_eval="ConvNet", arch_distill="ConvNet", arch_eval_display="ConvNet-3",
               arch_distill_display="ConvNet-3", protocol="idc", params_label="representative.n=128",
               method_config={"batch_real": 128, "representative": {"n": 128, "per_cluster": 1}}, test_acc=70.0)
    view, _ = render_entry(find_table("DREAM+ Table 5"), [row])
    assert view[(view.method == "DREAM+") & (view.n == "1")].iloc[0]["N=128"] == "70.0 ± 0.0 (n=1) / 69.9 ± 0.4"


def test_cli_renders_from_rows_file(tmp_path):
    from benchmark.cli import write_rows_file

    rows_file = tmp_path / "rows.jsonl"
    write_rows_file(rows_file, [dict(_row(test_acc=65.0), cell_hash="x", model_index=0)], {})
    out = tmp_path / "out"
    r = runner.invoke(app, ["papers", "--table", "dm table 3", "--rows", str(rows_file), "--out", str(out)])
    assert r.exit_code == 0, r.output
    md = (out / "DM_Table_3.md").read_text()
    assert "65.0 ± 0.0 (n=1) / 65.2 ± 0.4" in md and f"{MISSING} / 53.3 ± 0.7" in md
    tidy = pd.read_csv(out / "DM_Table_3.csv")
    assert {"ours_mean", "paper_value", "paper_other_protocol"} <= set(tidy.columns)


def test_cli_renders_from_the_results_store(tmp_path):
    """Rows in a store under the entry's grid cells (any budget) are found and laid out; the
    paper's other columns stay visible as missing."""
    from benchmark.store import ResultStore

    entry = find_table("DM Table 4")
    cell = next(c for c in grid_cells(entry, "smoke") if c.ipc == 10)
    store = ResultStore(tmp_path / "store")
    row = _row(dataset="cifar10", ipc=10, arch_eval="ConvNet", arch_distill="ConvNet", arch_eval_display="ConvNet-3",
               arch_distill_display="ConvNet-3", budget="smoke", cell_hash=cell.hash, test_acc=47.0)
    store.write_row(cell.hash, 0, dict(row, model_index=0))
    store.write_row(cell.hash, 1, dict(row, model_index=1, test_acc=49.0))
    r = runner.invoke(app, ["papers", "--table", "DM Table 4", "--results-dir", str(tmp_path / "store"),
                            "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "out" / "DM_Table_4.md").read_text()
    # IPC 10, Random column; the smoke cell counts one network, so the second row is not its result
    assert re.search(r"\|\s+10 \| 47\.0 ± 0\.0 \(n=1, smoke\) / 48\.9 ", md), md
    assert f"{MISSING} / 50.7" in md  # pre-trained network pools: not implemented, shown as missing
    # --budget restricts to that budget's cells
    r = runner.invoke(app, ["papers", "--table", "DM Table 4", "--results-dir", str(tmp_path / "store"),
                            "--budget", "paper"])
    assert r.exit_code == 0 and "47.0 ±" not in r.output


def test_cli_renders_empty_store_and_non_grid_entries(tmp_path):
    r = runner.invoke(app, ["papers", "--table", "DataDAM supp Table 4", "--results-dir", str(tmp_path / "store")])
    assert r.exit_code == 0, r.output
    assert f"{MISSING} / 0.69" in r.output and "dbench nas" in r.output  # published side only, and why


def test_unknown_table_is_one_line_exit_2():
    r = runner.invoke(app, ["papers", "--table", "DM Tabel 3"])
    assert r.exit_code == 2
    lines = [x for x in r.output.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "DM Table 3" in lines[0]
    with pytest.raises(ConfigError, match="Did you mean"):
        find_table("DREAM+ Table 9")


def test_catalog_paths_are_repo_relative():
    for t in load_catalog():
        for f in t.files:
            assert not Path(f).is_absolute() and (REPO_ROOT / f).exists(), f


def test_render_marks_a_caveated_number():
    """A number the grid marks (e.g. a cpu-scale distillation) keeps its mark beside the paper's."""
    cav = "2 of 20000 distillation iterations: not the method's result"
    rows = [_row(test_acc=a, budget="cpu", caveat=cav) for a in (40.0, 42.0)]
    view, tidy = render_entry(find_table("DM Table 3"), rows)
    assert any(str(v).startswith("† 41.0 ± 1.0 (n=2, cpu)") for v in view.to_numpy().ravel())
    assert set(tidy.ours_caveat.dropna()) - {""} == {cav}
