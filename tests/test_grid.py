from pathlib import Path

import pytest

from benchmark.errors import ConfigError
from benchmark.grid import GridSpec, expand, load_grid, parse_only

FIX = Path(__file__).parent / "fixtures"


def _write(tmp_path, text, name="g.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_expand_counts_and_full_reference():
    g = load_grid(FIX / "tiny.yaml")
    cells = expand(g)
    # smoke budget caps num_exp at 1: random x 2 ipc x 1 set + full x 1
    assert len(cells) == 3
    full = [c for c in cells if c.method == "full"]
    assert len(full) == 1 and full[0].ipc == 0 and full[0].method_kind == "reference"
    assert all(c.num_eval == 1 for c in cells)
    paper = expand(g, budget="paper")
    assert len(paper) == 2 * 2 + 1 and paper[0].num_eval == 2


def test_golden_cell_hash_is_stable():
    """Changing what goes into a cell hash is a reviewed decision: update the golden value."""
    c = expand(load_grid(FIX / "tiny.yaml"), budget="paper")[0]
    assert c.key == "random/digits/ipc1/ConvNet->ConvNet/dsa/paper/s0"
    assert c.hash == GOLDEN_HASH, c.hash


GOLDEN_HASH = "9afc374ef886"


def test_hash_depends_on_budget_and_seed_not_num_eval():
    g = load_grid(FIX / "tiny.yaml")
    a = expand(g)[0]
    b = expand(g, budget="cpu")[0]
    c = expand(g.model_copy(update={"num_eval": 7}))[0]
    d = expand(g.model_copy(update={"seed": 1}))[0]
    assert a.hash != b.hash and a.hash == c.hash and a.hash != d.hash and a.synset_hash != d.synset_hash


def test_only_filters(tmp_path):
    g = load_grid(FIX / "tiny.yaml")
    cells = expand(g, only=parse_only(["method=random", "ipc=2"]))
    assert [c.key for c in cells] == ["random/digits/ipc2/ConvNet->ConvNet/dsa/smoke/s0"]
    with pytest.raises(ConfigError, match="KEY=V1,V2"):
        parse_only(["ipc"])
    with pytest.raises(ConfigError, match="unknown key"):
        parse_only(["color=red"])


@pytest.mark.parametrize("text,match", [
    ("name: x\nmethods: [dreem]\ndatasets: [digits]\n", r"methods\[0\]: unknown method 'dreem'"),
    ("name: x\nmethods: [random]\ndatasets: [digitz]\n", "unknown dataset 'digitz'. Did you mean: digits"),
    ("name: x\nmethods: [random]\ndatasets: [digits]\nipcs: [1]\n", "ipcs: Extra inputs are not permitted"),
    ("name: x\nmethods: [random]\ndatasets: [digits]\nnum_eval: 0\n", "num_eval: Value error, must be >= 1"),
    ("name: x\nmethods: [random\n", "malformed YAML"),
    ("- just\n- a list\n", "top level must be a mapping"),
    ("name: x\nmethods: [random]\ndatasets: [digits]\nprotocol: dsaa\n", "unknown protocol 'dsaa'"),
    ("name: x\nmethods: [random]\ndatasets: [digits]\nbudget: huge\n", "unknown budget 'huge'"),
    ("name: x\nmethods: [{name: random, params: {lr: 1}}]\ndatasets: [digits]\n", "lr is not a field"),
    ("name: x\nmethods: [random]\ndatasets: [digits]\narch: ConvNett\n", "unknown arch 'ConvNett'"),
])
def test_bad_grids_are_one_line_errors_naming_file_and_field(tmp_path, text, match):
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as e:
        load_grid(p)
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_grid("nope.yaml")


def test_shipped_grids_validate():
    root = Path(__file__).resolve().parents[1] / "tables"
    for p in sorted(root.glob("*.yaml")):
        assert expand(load_grid(p)), p


def test_method_string_with_preset():
    g = GridSpec(name="x", methods=["random.default"], datasets=["digits"])
    assert g.methods[0].preset == "default" and expand(g)[0].key.startswith("random.default/")


@pytest.mark.parametrize("included,match", [
    ("name: [unclosed\n", "malformed YAML"),
    ("- just\n- a list\n", "top level must be a mapping"),
    (None, "included grid file not found"),
])
def test_bad_include_is_one_line(tmp_path, included, match):
    if included is not None:
        (tmp_path / "base.yaml").write_text(included)
    p = tmp_path / "g.yaml"
    p.write_text("include: base.yaml\nname: g\nmethods: [random]\ndatasets: [digits]\n")
    with pytest.raises(ConfigError, match=match) as e:
        load_grid(p)
    assert "\n" not in str(e.value) and "base.yaml" in str(e.value)


def test_include_merges_and_old_preset_key_still_works(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nmethods: [random]\ndatasets: [digits]\nipc: [1]\npreset: dm\n")
    p = tmp_path / "g.yaml"
    p.write_text("include: base.yaml\nname: g\nprecision: bf16\n")
    with pytest.warns(UserWarning, match="'preset: dm' is now 'protocol: dm'"):
        g = load_grid(p)
    assert g.name == "g" and g.protocol == "dm" and g.precision == "bf16" and g.ipc == [1]
