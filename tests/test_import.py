"""`dbench import`: published sets (dbench, VICO, MTT, IDC formats) into the store, evaluated by a
grid beside sets made here (`methods: [imported:<name>]`); bad inputs are one line, nothing written."""

import json

import pytest
import torch
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.data import get_info
from benchmark.grid import GridSpec, expand
from benchmark.importer import import_paths
from benchmark.runner import run_cells
from benchmark.store import ResultStore
from benchmark.synset import SyntheticSet

INFO = get_info("digits")  # 10 classes, 1 x 8 x 8
runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _normalised(ipc=2, seed=0, n_classes=10):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(ipc * n_classes, 1, 8, 8, generator=g)
    y = torch.arange(n_classes).repeat_interleave(ipc)
    return x, y


def _import(store, file, *extra, name="t", ipc=2):
    return _run("import", file, "--method", name, "--dataset", "digits", "--ipc", ipc, "--results-dir", store, *extra)


def _grid(methods, ipc=(2,)):
    return GridSpec(name="imp", methods=methods, datasets=["digits"], ipc=list(ipc), budget="smoke", num_exp=1,
                    num_eval=2, budget_overrides={"num_eval": 2})


def test_roundtrip_of_a_set_exported_by_dbench(tmp_path):
    """A random set made by a grid, imported into another store and evaluated there under
    imported:<name>: the same images, and the same accuracies (same network seeds)."""
    made = ResultStore(tmp_path / "made")
    cells = expand(_grid(["random"]))
    out = run_cells(cells, made)
    assert out[0].status == "finished"
    exported = made.synset_path(cells[0].synset_hash)
    store = tmp_path / "store"
    r = _import(store, exported, "--paper", "dbench random baseline", name="rnd_copy")
    assert r.exit_code == 0, r.output
    assert "imported: rnd_copy digits ipc 2 (dbench, normalized" in r.output and "imported:rnd_copy" in r.output
    path, man_path = import_paths(store, "rnd_copy", "digits", 2)
    man = json.loads(man_path.read_text())
    orig = SyntheticSet.load(exported, INFO)
    back = SyntheticSet.load(path, INFO)
    assert torch.equal(back.images, orig.images) and torch.equal(back.labels, orig.labels)
    assert man["input_format"] == "dbench" and man["paper"] == "dbench random baseline"
    assert man["images_sha256"] == orig.sha256() and len(man["sources"][0]["sha256"]) == 64
    assert man["normalization"] == {"mean": list(INFO.mean), "std": list(INFO.std)} and man["zca"] is False
    assert man["decode"] == {"factor": 1, "order": "idc"} and man["per_class"] == [2] * 10
    # the same file again: nothing to do; other images under the same name: refused
    again = _import(store, exported, name="rnd_copy")
    assert again.exit_code == 0 and "already imported" in again.output
    x, y = _normalised()
    other = tmp_path / "other.pt"
    torch.save({"images": x, "labels": y}, other)
    clash = _import(store, other, name="rnd_copy")
    assert clash.exit_code == 2 and "already imported for digits ipc 2 with other content" in clash.output
    # evaluated by a grid beside random: rows marked imported, same numbers as the original set
    st = ResultStore(store)
    cells = expand(_grid(["random", "imported:rnd_copy"]))
    imp = [c for c in cells if c.method_kind == "imported"]
    assert len(imp) == 1 and imp[0].key.startswith("imported.rnd_copy/digits/ipc2/")
    assert {o.status for o in run_cells(cells, st)} == {"finished"}
    rows = list(st.iter_rows())
    mine = sorted((r["model_index"], r["test_acc"]) for r in rows if r["method_kind"] == "imported")
    theirs = sorted((r["model_index"], r["test_acc"]) for r in rows if r["method"] == "random")
    assert len(mine) == 2 and mine == theirs
    r0 = next(r for r in rows if r["method_kind"] == "imported")
    assert r0["method"] == "imported" and r0["method_label"] == "imported.rnd_copy"
    assert r0["method_display"] == "Imported"
    assert "rnd_copy" in r0["provenance"]
    from benchmark.tables import leaderboard

    b = leaderboard(rows)
    line = b[b.method_kind == "imported"].iloc[0]
    assert line.label == "Imported [rnd_copy]" and line.diff_random == 0.0 and line.vs_random == "tie"


def test_vico_res_file(tmp_path):
    x0, y0 = _normalised(seed=0)
    x1, y1 = _normalised(seed=1)
    f = tmp_path / "res_DM_digits_ConvNet_2ipc.pt"
    perm = torch.randperm(len(y1), generator=torch.Generator().manual_seed(3))  # stored order does not matter
    torch.save({"data": [[x0, y0], [x1[perm], y1[perm]]], "accs_all_exps": {"ConvNet": [71.2, 70.4]}}, f)
    store = tmp_path / "store"
    r = _import(store, f, "--exp", 1, "--paper", "DM (WACV 2023)", name="vico_dm")
    assert r.exit_code == 0, r.output
    path, man_path = import_paths(store, "vico_dm", "digits", 2)
    s = SyntheticSet.load(path, INFO)
    assert torch.equal(s.labels, y1)  # class-major again, the same (image, label) pairs as experiment 1
    assert sorted((bytes(i.numpy()), int(c)) for i, c in zip(s.images, s.labels)) == \
        sorted((bytes(i.numpy()), int(c)) for i, c in zip(x1, y1))
    man = json.loads(man_path.read_text())
    assert man["input_format"] == "vico" and man["exp"] == 1 and man["space"] == "normalized"
    bad = _import(store, f, "--exp", 5, name="vico_dm5")
    assert bad.exit_code == 2 and "holds 2 experiment(s)" in bad.output


def test_mtt_images_and_labels_files(tmp_path):
    x, y = _normalised(ipc=1)
    d = tmp_path / "logged_files" / "digits" / "run"
    d.mkdir(parents=True)
    torch.save(x, d / "images_best.pt")
    torch.save(y, d / "labels_best.pt")
    store = tmp_path / "store"
    r = _import(store, d / "images_best.pt", name="mtt", ipc=1)
    assert r.exit_code == 0, r.output
    path, man_path = import_paths(store, "mtt", "digits", 1)
    man = json.loads(man_path.read_text())
    assert man["input_format"] == "mtt" and [s["file"] for s in man["sources"]] == ["images_best.pt", "labels_best.pt"]
    assert torch.equal(SyntheticSet.load(path, INFO).images, x)
    # images without their labels file: one line naming the option
    lone = tmp_path / "images_5000.pt"
    torch.save(x, lone)
    r = _import(store, lone, name="mtt2", ipc=1)
    assert r.exit_code == 2 and "--labels" in r.output
    r = _import(store, lone, "--labels", d / "labels_best.pt", name="mtt2", ipc=1)
    assert r.exit_code == 0, r.output


def test_idc_data_pt_pixel_space_and_factor(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, 8, 8, generator=g)  # IDC stores [0, 1] pixels
    y = torch.arange(10).repeat_interleave(2)
    f = tmp_path / "data.pt"
    torch.save([x, y], f)
    store = tmp_path / "store"
    r = _import(store, f, "--format", "idc", name="idc")
    assert r.exit_code == 0, r.output
    path, man_path = import_paths(store, "idc", "digits", 2)
    man = json.loads(man_path.read_text())
    assert man["space"] == "pixel" and man["decode"]["factor"] == 2 and man["n_train_images"] == 80
    s = SyntheticSet.load(path, INFO)
    assert s.space == "pixel" and s.decode.factor == 2 and s.training_tensors()[0].shape == (80, 1, 8, 8)


class _RunsCode:
    """A pickle whose loading would call open(marker, 'w'): what weights_only=True must refuse."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("case,match", [
    ("shape", "images have shape (20, 3, 8, 8), expected [N, 1, 8, 8] for digits"),
    ("counts", "class counts [3, 1, 2, 2, 2, 2, 2, 2, 2, 2]; --ipc 2 needs exactly 2"),
    ("missing_class", "1 class(es) missing"),
    ("label_range", "labels span 0..10; digits has classes 0..9"),
    ("nan", "2 image(s) contain NaN or inf pixels"),
    ("pixels_as_normalised", "normalisation mismatch: declared normalised"),
    ("normalised_as_pixels", "normalisation mismatch: declared [0, 1] pixels"),
    ("bytes", "like 0..255 pixels"),
    ("dbench_stats", "normalisation mismatch with digits: mean"),
    ("soft_labels", "soft labels"),
    ("zca", "ZCA-whitened images cannot be evaluated"),
    ("pickle", "refused: the file holds pickled Python objects (io.open) that would run code"),
    ("not_torch", "not a readable torch tensor file"),
    ("bad_name", "an import name uses lower-case letters"),
    ("dataset", "unknown dataset 'digitz'"),
])
def test_bad_inputs_are_one_line_exit_2_and_write_nothing(tmp_path, case, match):
    x, y = _normalised()
    f = tmp_path / "set.pt"
    args, name, dataset = [], "bad", "digits"
    if case == "shape":
        x = torch.randn(20, 3, 8, 8)
    elif case == "counts":
        y = y.clone()
        y[2] = 0
    elif case == "missing_class":
        y = torch.cat([torch.zeros(2), torch.arange(1, 10).repeat_interleave(2)])[:20].long()
        y[-2:] = 1
    elif case == "label_range":
        y = y + (y == 9).long()
    elif case == "nan":
        x[3, 0, 1, 1] = float("nan")
        x[5, 0, 0, 0] = float("inf")
    elif case == "pixels_as_normalised":
        x = torch.rand(20, 1, 8, 8)
    elif case == "normalised_as_pixels":
        args = ["--space", "pixel"]
    elif case == "bytes":
        x = (torch.rand(20, 1, 8, 8) * 255).round()
    elif case == "dbench_stats":
        f = tmp_path / "set.safetensors"
        SyntheticSet(x, y, "digits", (0.5,), (0.5,)).save(f)
    elif case == "soft_labels":
        y = torch.softmax(torch.randn(20, 10), 1)
    elif case == "zca":
        args = ["--space", "zca"]
    elif case == "pickle":
        torch.save({"images": x, "labels": y, "hook": _RunsCode(tmp_path / "PWNED")}, f)
    elif case == "not_torch":
        f.write_bytes(b"not a torch file at all")
    elif case == "bad_name":
        name = "Bad.Name"
    elif case == "dataset":
        dataset = "digitz"
    if not f.exists():
        torch.save({"images": x, "labels": y}, f)
    store = tmp_path / "store"
    r = _run("import", f, "--method", name, "--dataset", dataset, "--ipc", 2, "--results-dir", store, *args)
    assert r.exit_code == 2, r.output
    assert match in r.output, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (store / "imported").exists()
    assert not (tmp_path / "PWNED").exists()


def test_grid_names_imported_sets(tmp_path):
    from benchmark.errors import ConfigError

    with pytest.raises(ConfigError, match="no presets"):
        expand(_grid(["imported:a.b"]))
    with pytest.raises(ConfigError, match="name the imported set"):
        expand(_grid(["imported"]))
    # a set that was never imported: the cell fails with the command that fixes it, the grid goes on
    out = run_cells(expand(_grid(["imported:never", "random"])), ResultStore(tmp_path / "s"))
    assert [o.status for o in out] == ["failed", "finished"]
    assert "dbench import FILE --method never --dataset digits --ipc 2" in out[0].error
