"""Published numbers are shown beside ours only under the same protocol (issue 12, section 2).

A paper number matches a leaderboard line when its protocol (``results/reference/published.csv``
``protocol``; the original paper's for a reprint), dataset, IPC, distillation and evaluation
architectures all equal the line's. Otherwise it is shown apart in ``paper_other``, marked with
its protocol ('44.9 ± 0.5 (dc)'), or left out when an architecture differs.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from benchmark.tables import (
    PROTOCOL_ALIASES,
    TIDY_COLUMNS,
    continual_table,
    cross_arch_pivot,
    find_published,
    leaderboard,
    load_published,
    match_published,
    protocol_key,
    render,
    same_protocol,
)

ROOT = Path(__file__).resolve().parent.parent
ARCH = {"ConvNet": "ConvNet-3", "ConvNetBN": "ConvNet-3-BN", "ResNet10BN": "ResNet-10-BN"}
DISPLAY = {"dc": "DC", "dsa": "DSA", "dm": "DM", "random": "Random", "datadam": "DataDAM", "idc": "IDC",
           "dream": "DREAM"}


def _row(method, protocol, *, ipc=10, dataset="cifar10", preset=None, arch_distill="ConvNet", arch_eval="ConvNet",
         acc=(40.0, 42.0)):
    kind = "select" if method == "random" else "distill"
    base = dict(schema=2, method=method, method_label=f"{method}.{preset}" if preset else method, method_preset=preset,
                dataset=dataset, dataset_display={"cifar10": "CIFAR-10", "mnist": "MNIST"}[dataset], ipc=ipc,
                arch_eval=arch_eval, arch_eval_display=ARCH[arch_eval], arch_distill=arch_distill,
                arch_distill_display=ARCH[arch_distill], protocol=protocol, budget="paper", precision="fp32",
                method_kind=kind, method_display=DISPLAY[method], params_label="", extractor_label="")
    return [dict(base, test_acc=a, set_seed=0, model_index=i) for i, a in enumerate(acc)]


def _line(rows):
    b = leaderboard(rows)
    assert len(b) == 1
    return b.iloc[0]


def _not_beside_ours(line, number: str):
    """The number is not shown as ours' paper counterpart anywhere a leaderboard renders."""
    assert line.paper == ""
    md = render(pd.DataFrame([line]), "md")
    assert f"paper {number}" not in md


# ----------------------------------------------------------------- the three cases of issue 12


def test_dc_under_the_dsa_protocol_is_flagged():
    line = _line(_row("dc", "dsa"))
    _not_beside_ours(line, "44.9")
    assert line.paper_other == "44.9 ± 0.5 (dc)" and line.paper_protocol == "dc"
    assert line.paper_source.startswith("DM (WACV 2023) Table 1")
    assert "other protocol: 44.9 ± 0.5 (dc)" in render(leaderboard(_row("dc", "dsa")), "md")
    # under DC's own protocol it is the paper's number
    assert _line(_row("dc", "dc")).paper == "44.9 ± 0.5"


@pytest.mark.parametrize("protocol", ["idc", "idc_i"])
def test_random_under_the_idc_protocol_is_flagged(protocol):
    line = _line(_row("random", protocol))
    _not_beside_ours(line, "26.0")
    assert line.paper_other == "26.0 ± 1.2 (dc)" and line.paper_protocol == "dc"
    csv_text = render(leaderboard(_row("random", protocol)), "csv")
    tidy = pd.read_csv(__import__("io").StringIO(csv_text), keep_default_na=False)
    assert tidy.paper.iloc[0] == "" and tidy.paper_other.iloc[0] == "26.0 ± 1.2 (dc)"
    assert list(tidy.columns) == TIDY_COLUMNS


@pytest.mark.parametrize("arch_eval", ["ConvNet", "ConvNetBN"])
def test_datadam_bn_preset_under_the_dm_protocol_is_flagged(arch_eval):
    """The official preset distills on ConvNet-BN; the paper's 54.2 is an InstanceNorm-made set under
    DataDAM's protocol: neither the architecture nor the protocol matches, so it is left out."""
    line = _line(_row("datadam", "dm", preset="official", arch_distill="ConvNetBN", arch_eval=arch_eval))
    _not_beside_ours(line, "54.2")
    assert line.paper_other == ""  # a set made on another network: left out, not even marked
    # the paper preset (InstanceNorm ConvNet) under dm: same cell, other protocol -> marked
    paper = _line(_row("datadam", "dm", preset="paper"))
    _not_beside_ours(paper, "54.2")
    assert paper.paper_other == "54.2 ± 0.8 (datadam)" and paper.paper_protocol == "datadam"


def test_matching_protocol_shows_the_paper_number():
    assert _line(_row("datadam", "datadam", preset="paper")).paper == "54.2 ± 0.8"
    assert _line(_row("random", "dc")).paper == "26.0 ± 1.2"
    dm = _line(_row("dm", "dm", preset="official"))
    assert dm.paper == "48.9 ± 0.6" and dm.paper_other == "" and dm.paper_protocol == "dm"
    # dm and idm are the dsa profile under other names: DM's number is DM's set under the same evaluation
    assert _line(_row("dm", "dsa", preset="official")).paper == "48.9 ± 0.6"
    assert _line(_row("idc", "idc", preset="official")).paper.startswith("67.5")
    md = render(leaderboard(_row("dm", "dm", preset="official")), "md")
    assert "; paper 48.9 ± 0.6" in md and "other protocol" not in md


@pytest.mark.parametrize("protocol", ["dsa_noaug", "dsa*", "dm_noaug", "dsa_noaug*"])
def test_variants_never_match_a_published_augmented_number(protocol):
    line = _line(_row("dsa", protocol))
    _not_beside_ours(line, "52.1")
    assert line.paper_other == "52.1 ± 0.5 (dsa)"


# ------------------------------------------------------------------------- the matching rule


def test_protocol_keys():
    assert protocol_key("dm") == protocol_key("idm") == protocol_key("dsa") == "dsa"
    assert protocol_key("dsa*") is None and protocol_key("idc_noaug") is None and protocol_key(None) is None
    assert same_protocol("idc", "idc") and not same_protocol("idc_i", "idc") and not same_protocol("dsa", "dc")
    assert not same_protocol("unknown", "unknown") and not same_protocol("n/a", "n/a")


def test_protocol_aliases_train_identically():
    """An alias folds two names only when their profiles train the same way."""
    from benchmark.evaluate import PROFILES

    skip = {"name", "description", "provenance"}
    for a, b in PROTOCOL_ALIASES.items():
        assert PROFILES.get(a).model_dump(exclude=skip) == PROFILES.get(b).model_dump(exclude=skip), (a, b)


def test_match_published_filters_on_protocol():
    pub = load_published()
    assert match_published(pub, "DC", "CIFAR-10", 10, "ConvNet-3", "ConvNet-3", protocol="dsa") == (None, None, "")
    assert match_published(pub, "DC", "CIFAR-10", 10, "ConvNet-3", "ConvNet-3", protocol="dc")[:2] == (44.9, 0.5)
    hit = find_published(pub, "Random", "CIFAR-10", 10, "ConvNet-3", "ConvNet", "idc")
    assert hit is not None and not hit.same_protocol and hit.marked == "26.0 ± 1.2 (dc)"


def test_a_published_file_without_protocols_never_matches(tmp_path):
    src = pd.read_csv(ROOT / "results" / "reference" / "published.csv", keep_default_na=False, na_values=[""])
    old = tmp_path / "old.csv"
    src.drop(columns=["protocol"]).to_csv(old, index=False)
    pub = load_published(old)
    line = leaderboard(_row("dc", "dc"), pub).iloc[0]
    assert line.paper == "" and line.paper_other == "44.9 ± 0.5 (unknown)"


def test_cross_arch_and_continual_views_mark_other_protocols():
    rows = _row("dream", "idc", preset="official", arch_eval="ResNet10BN")
    cell = cross_arch_pivot(leaderboard(rows))["ResNet-10-BN"].iloc[0]
    assert cell.endswith("; paper 66.3 ± 0.8")
    other = cross_arch_pivot(leaderboard(_row("dream", "dsa", preset="official", arch_eval="ResNet10BN")))
    assert other["ResNet-10-BN"].iloc[0].endswith("; other protocol: 66.3 ± 0.8 (idc)")
    cl = dict(dataset_display="CIFAR-100", dataset="cifar100", method="dm", method_label="dm.official",
              method_display="DM", method_preset="official", params_label="", steps=5, ipc=20, budget="paper",
              order=0, step=5, test_acc=33.0)
    assert continual_table([dict(cl, protocol="dsa")])["paper final"].iloc[0] == "34.4"
    assert continual_table([dict(cl, protocol="idc")])["paper final"].iloc[0] == "other protocol: 34.4 (dm)"


def test_site_marks_other_protocols():
    from benchmark.site import _published_cell

    same = _published_cell("44.9 ± 0.5", "", "DM (WACV 2023) Table 1", "dc")
    assert ">44.9<" in same and "other-protocol" not in same
    other = _published_cell("", "44.9 ± 0.5 (dc)", "DM (WACV 2023) Table 1", "dc")
    assert 'class="other-protocol"' in other and ">44.9 (dc)<" in other and "not comparable" in other


# ------------------------------------------------------------------------ the published CSV


def test_published_csv_names_a_protocol_for_every_row():
    pub = load_published()
    assert len(pub) == 851
    assert pub.protocol.notna().all() and (pub.protocol != "").all()
    unknown = pub[pub.protocol == "unknown"]
    assert (unknown.protocol_notes.fillna("") != "").all()  # an unknown protocol always says why
    # reprints carry the original paper's protocol
    dm_t1 = pub[(pub.source == "DM (WACV 2023)") & (pub.table == "Table 1")]
    assert set(dm_t1[dm_t1.method.isin(["Random", "Herding", "Forgetting"])].protocol) == {"dc"}
    assert set(dm_t1[dm_t1.method == "DC"].origin) == {"DC (ICLR 2021)", "DSA (ICML 2021)"}
    assert set(dm_t1[dm_t1.method == "DM"].protocol) == {"dm"} and dm_t1[dm_t1.method == "DM"].origin.isna().all()
    dream = pub[(pub.source == "DREAM (ICCV 2023) supp") & (pub.metric == "test_acc")]
    assert set(dream[dream.method == "IDC"].origin) == {"IDC (ICML 2022)"}
    assert set(dream[dream.method == "DM"].protocol) == {"dm"} and set(dream[dream.method == "DREAM"].protocol) == {
        "idc"}
    assert set(pub[pub.method == "DataDAM"].protocol) <= {"datadam", "nas_datadam", "nas201_dcbench"}
    # iterations and epochs where known
    assert set(dm_t1[(dm_t1.method == "DM") & (dm_t1.dataset == "CIFAR-10")].iterations) == {20000}
    assert set(dm_t1[(dm_t1.method == "DC") & (dm_t1.dataset == "CIFAR-10")].eval_epochs) == {300}
    assert set(dm_t1[(dm_t1.method == "DC") & (dm_t1.dataset == "MNIST")].eval_epochs) == {1000}


def test_published_csv_is_up_to_date_and_keeps_the_original_columns():
    """scripts/annotate_published.py reproduces the committed file, and the first eleven columns
    are the reference transcription unchanged (when the spec copy is present)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("annotate_published", ROOT / "scripts" / "annotate_published.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path = ROOT / "results" / "reference" / "published.csv"
    with open(path, newline="") as f:
        raw = f.read()
    assert mod.rebuild(raw)[0] == raw
    ref = ROOT.parent / "shared" / "spec" / "reference_results.csv"
    if ref.exists():
        with open(ref, newline="") as f:
            orig = list(csv.reader(f))
        new = list(csv.reader(raw.splitlines()))
        assert [r[:11] for r in new] == orig
