"""`dbench nas`: the 720-ConvNet space, Spearman@k, the validation split, the ground-truth cache."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from benchmark import nas
from benchmark.cli import app
from benchmark.data import get_info
from benchmark.errors import ConfigError

TINY = {
    "name": "tiny_nas",
    "description": "test spec: digits, 3 architectures, a few steps",
    "dataset": "digits",
    "space": ["D1_W32_relu_none_avg", "D2_W32_sigmoid_batchnorm_max", "D1_W32_leakyrelu_instancenorm_none"],
    "ipc": 2,
    "proxies": ["random", "early_stopping"],
    "validation_per_class": 5,
    "ground_truth": {"training": {"protocol": "dsa", "overrides": {"epochs": 1}, "max_steps": 3}},
    "proxy_training": {"protocol": "dsa", "overrides": {"epochs": 2}},
    "budget": "smoke",
}


def _spec(**kw) -> nas.NasSpec:
    return nas.NasSpec.model_validate({**TINY, **kw})


def _write(tmp_path: Path, **kw) -> Path:
    p = tmp_path / f"{kw.get('name', TINY['name'])}.yaml"
    p.write_text(yaml.safe_dump({**TINY, **kw}))
    return p


# --------------------------------------------------------------------------- space


def test_space_has_720_unique_stable_ids():
    ids = nas.SPACE_IDS
    assert len(ids) == 720 == len(set(ids))
    assert ids[0] == "D1_W32_sigmoid_none_none" and ids[-1] == "D4_W256_leakyrelu_groupnorm_avg"
    assert ids.index("D3_W128_relu_instancenorm_avg") == 2 * 180 + 2 * 45 + 1 * 15 + 3 * 3 + 2
    # the order is part of the ids' meaning (itertools.product over depth, width, act, norm, pool)
    assert hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12] == "2ed2ff913112"
    for c in nas.SPACE:
        assert nas.candidate(c.id) == c == nas.candidate(c.arch)
    with pytest.raises(Exception, match="unknown NAS candidate"):
        nas.candidate("D5_W32_relu_none_avg")


def _forward_all(widths, shapes=(("mnist", (2, 1, 28, 28)), ("cifar10", (2, 3, 32, 32)))):
    from benchmark.models import create_model

    for ds, shape in shapes:
        info = get_info(ds)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        for c in nas.SPACE:
            if c.width not in widths:
                continue
            m = create_model(c.arch, info, torch.Generator().manual_seed(1))
            with torch.no_grad():
                out = m(x)
            assert out.shape == (2, 10) and torch.isfinite(out).all(), (ds, c.id)


def test_every_candidate_builds_and_runs_forward_on_both_shapes():
    """Every candidate of width 32 (each depth x act x norm x pool) runs forward for real on
    1x28x28 and 3x32x32 (batch 2), and all 720 build (on the meta device: no memory, no init)
    with the classifier input the space defines (width·32·32 without pooling, halved per block
    with it); width only changes channel counts. The real forward of all 720 is the slow test
    below (about a minute)."""
    from benchmark.models import ConvNet, nas_convnet_kwargs

    _forward_all({32})
    for ds in ("mnist", "cifar10"):
        info = get_info(ds)
        with torch.device("meta"):
            for c in nas.SPACE:
                m = ConvNet(info.channels, info.num_classes, info.im_size, **nas_convnet_kwargs(c.arch))
                h = 32 // (2 ** c.depth) if c.pool != "none" else 32
                assert m.classifier.in_features == c.width * h * h, (ds, c.id)
                assert len(m.blocks) == c.depth


@pytest.mark.slow
def test_every_candidate_of_every_width_runs_forward():
    _forward_all({32, 64, 128, 256})


def test_default_convnet_is_its_candidate_and_existing_archs_unchanged():
    from benchmark.models import arch_identity, canonical_arch, create_model

    info = get_info("cifar10")
    a = create_model("ConvNet", info, torch.Generator().manual_seed(3))
    b = create_model("nas:D3_W128_relu_instancenorm_avg", info, torch.Generator().manual_seed(3))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert arch_identity("ConvNet") == "ConvNet" and canonical_arch("convnet") == "ConvNet"
    with pytest.raises(Exception, match="unknown arch"):
        canonical_arch("nas:D3_W128_tanh_instancenorm_avg")


def test_covering_sample_covers_every_level():
    s = nas.covering_sample(12, seed=0)
    assert len(s) == len(set(s)) == 12 and s == sorted(s, key=nas.SPACE.index)
    for f, levels in nas.FACTORS.items():
        assert {getattr(c, f) for c in s} == set(levels)
    assert nas.covering_sample(12, seed=0) == s


# ------------------------------------------------------------------------ spearman


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
def test_spearman_topk_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    rng = random.Random(0)
    for trial in range(30):
        n = rng.choice([7, 20, 45])
        proxy = [float(rng.randint(0, 6)) for _ in range(n)]  # many ties
        gt = [float(rng.randint(0, 9)) + (0.5 if trial % 2 else 0.0) for _ in range(n)]
        assert nas.spearman(proxy, gt) == pytest.approx(spearmanr(proxy, gt).statistic, nan_ok=True)
        for k in ("all", "5%", "20%", 5, 10, 20):
            for by in ("proxy", "gt"):
                rho, kk = nas.spearman_topk(proxy, gt, k, by)
                key = proxy if by == "proxy" else gt
                idx = sorted(range(n), key=lambda i: (-key[i], i))[:kk]
                want = spearmanr([proxy[i] for i in idx], [gt[i] for i in idx]).statistic
                assert rho == pytest.approx(want, nan_ok=True), (trial, k, by)
    assert nas.topk_size("5%", 720) == 36 and nas.topk_size("20%", 720) == 144 and nas.topk_size(20, 10) == 10
    assert nas.topk_size("5%", 16) == 2
    assert nas.spearman([1, 1, 1], [1, 2, 3]) != nas.spearman([1, 1, 1], [1, 2, 3])  # constant side: NaN
    assert nas.average_ranks([3, 1, 3, 2]) == [3.5, 1.0, 3.5, 2.0]


# ------------------------------------------------------------ validation split


def test_validation_split_is_disjoint_from_the_proxy_data(digits, tmp_path, monkeypatch):
    import benchmark.build as build
    from benchmark.store import ResultStore

    real, _ = digits
    train, val, tr, va = nas.split_validation(real, 5, seed=1)
    assert set(tr.tolist()).isdisjoint(va.tolist()) and len(tr) + len(va) == len(real)
    assert torch.bincount(val.labels).tolist() == [5] * 10
    assert torch.equal(train.images, real.images[tr]) and torch.equal(val.images, real.images[va])
    seen = []
    orig = build.build_set

    def spy(cls, cfg, data, ipc, ctx, meta=None):
        seen.append((cls.key, data))
        return orig(cls, cfg, data, ipc, ctx, meta)

    monkeypatch.setattr(build, "build_set", spy)
    spec = _spec(proxies=["random", "dm", "early_stopping"])
    ctx = nas.load_context(spec, ResultStore(tmp_path / "nas"), "cpu")
    _, _, tr2, va2 = nas.split_validation(real, spec.validation_per_class, nas.split_identity(spec)["split_seed"])
    assert torch.equal(ctx.val.images, real.images[va2]) and len(ctx.train) + len(ctx.val) == len(real)
    # every set (selected or distilled) was built from the training set minus the validation split only
    assert sorted(k for k, _ in seen) == ["dm", "random"]
    for _, data in seen:
        assert data is ctx.train and torch.equal(data.images, real.images[tr2])
    # a selection's images are training images outside the validation split
    orig_idx = tr2[ctx.sets["random"].indices]
    assert set(orig_idx.tolist()).isdisjoint(va2.tolist())


# --------------------------------------------------------------- cache & resume


def _count_trainings(monkeypatch):
    """(arch, source size) per network trained, through the public evaluate() (any engine)."""
    import benchmark.evaluate as ev

    calls = []
    orig = ev.evaluate

    def counting(source, protocol, arch, info, test, seeds, *a, skip=(), **kw):
        calls.extend((arch, len(source)) for k in range(len(seeds)) if k not in skip)
        return orig(source, protocol, arch, info, test, seeds, *a, skip=skip, **kw)

    monkeypatch.setattr(ev, "evaluate", counting)
    return calls


def test_ground_truth_cache_resumes_only_missing_archs_and_is_shared(tmp_path, monkeypatch):
    spec = _spec()
    calls = _count_trainings(monkeypatch)
    rows = nas.run_nas(spec, tmp_path, "cpu")
    n_arch = len(spec.space)
    assert len(calls) == n_arch * (1 + len(spec.proxies))
    assert len(rows) == len(calls)
    store = nas.nas_store(tmp_path)
    # "kill" mid-run: one architecture's ground truth and another's proxy row are missing
    c0, c1 = spec.candidates()[0], spec.candidates()[1]
    (store.root / "rows" / nas.gt_cell_hash(spec, c0) / "m0.json").unlink()
    (store.root / "rows" / nas.proxy_cell_hash(spec, spec.proxies[0], c1) / "m0.json").unlink()
    calls.clear()
    nas.run_nas(spec, tmp_path, "cpu")
    assert sorted(a for a, _ in calls) == sorted([c0.arch, c1.arch])
    # another spec with the same ground-truth setting but other proxies: ground truth reused
    calls.clear()
    other = _spec(name="tiny_other", proxies=["random"], ipc=3)
    assert nas.gt_key(other) == nas.gt_key(spec)
    nas.run_nas(other, tmp_path, "cpu")
    assert len(calls) == n_arch  # proxies only
    calls.clear()
    nas.run_nas(other, tmp_path, "cpu")
    assert calls == []


def test_ground_truth_loads_from_a_file(tmp_path, monkeypatch):
    spec = _spec(proxies=["early_stopping"])
    f = tmp_path / "gt.csv"
    f.write_text("arch,test_acc\n" + "".join(f"nas:{a},{50 + i}\n" for i, a in enumerate(spec.space)))
    assert nas.import_ground_truth(spec, tmp_path, f) == 3
    assert nas.import_ground_truth(spec, tmp_path, f) == 0  # existing rows are kept
    calls = _count_trainings(monkeypatch)
    rows = nas.run_nas(spec, tmp_path, "cpu")
    assert len(calls) == 3  # proxies only
    assert sorted(r["test_acc"] for r in rows if r["role"] == "ground_truth") == [50.0, 51.0, 52.0]
    # a whole run's rows (JSON lines, as `--out` writes them) carry their ground truth to another results dir
    lines = tmp_path / "rows.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert nas.import_ground_truth(spec, tmp_path / "other", lines) == 3
    calls.clear()
    nas.run_nas(spec, tmp_path / "other", "cpu")
    assert len(calls) == 3
    bad = tmp_path / "bad.csv"
    bad.write_text("arch,acc\nnas:D1_W32_relu_none_avg,3\n")
    with pytest.raises(Exception, match="lacks"):
        nas.import_ground_truth(spec, tmp_path, bad)


# ------------------------------------------------------------------------ table


def _rows(dataset="cifar10", ipc=50, n=4):
    rows = []
    for i, a in enumerate(nas.SPACE_IDS[:n]):
        rows.append({"role": "ground_truth", "nas_id": a, "test_acc": 60.0 + i, "train_time_s": 60.0,
                     "dataset": dataset, "epochs": 100, "train_per_class": None, "n_train_images": 50000})
        rows.append({"role": "proxy", "proxy": "dm", "method": "dm", "nas_id": a, "val_acc": 30.0 + (i % 2),
                     "train_time_s": 6.0, "dataset": dataset, "ipc": ipc, "epochs": 200, "n_stored_images": 500})
    return rows


def test_table_shows_published_numbers_only_for_the_same_setting():
    pub = nas.read_published_nas()
    assert any(p["source"].startswith("DM") and p["metric"] == "spearman_top5%" for p in pub)
    t, notes = nas.nas_table(_rows(), published=[{**p, "n_archs": "4"} for p in pub])
    dm = t[t.proxy == "dm"].iloc[0]
    assert dm["DM ρ"] == "0.76" and dm["DM perf"] == "82.8"
    assert dm["performance (%)"] == "61.0" and dm["selected"] == nas.SPACE_IDS[1]
    t2, notes2 = nas.nas_table(_rows("mnist", 10), published=pub)
    dm2 = t2[t2.proxy == "dm"].iloc[0]
    assert dm2["DM ρ"] == "(0.76)" and any("another setting" in n and "mnist" in n for n in notes2)
    whole = t2[t2.proxy == "whole_dataset"].iloc[0]
    assert whole["ρ@all"] == "1.00" and whole["performance (%)"] == "63.0"


# -------------------------------------------------------------------------- CLI


def test_cli_tiny_end_to_end_dry_run_and_bad_spec(tmp_path):
    spec = _write(tmp_path)
    r = CliRunner().invoke(app, ["nas", "--spec", str(spec), "--dry-run", "--results-dir", str(tmp_path / "r")])
    assert r.exit_code == 0, r.output
    assert "total: 3 jobs" in r.output and "CPU-hours" in r.output
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["nas", "--spec", str(spec), "--results-dir", str(tmp_path / "r"), "--out", str(out),
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    md = (out / "tiny_nas.md").read_text()
    assert "whole_dataset" in md and "early_stopping" in md and "random" in md
    archs = (out / "tiny_nas_archs.csv").read_text().splitlines()
    assert len(archs) == 4 and archs[0].startswith("nas_id,depth")
    rows = [json.loads(x) for x in (out / "rows" / "tiny_nas.jsonl").read_text().splitlines()]
    assert {r["role"] for r in rows} == {"ground_truth", "proxy"}
    assert all(r["split"] == ("test" if r["role"] == "ground_truth" else "val") for r in rows)
    assert all("torch_version" in r and "protocol_config" in r for r in rows)
    bad = _write(tmp_path, name="bad", proxies=["nope"])
    r = CliRunner().invoke(app, ["nas", "--spec", str(bad), "--results-dir", str(tmp_path / "r")])
    assert r.exit_code == 2 and "unknown method 'nope'" in r.output and "Traceback" not in r.output
    bad2 = _write(tmp_path, name="bad2", space=["D9_W1_relu_none_avg"])
    r = CliRunner().invoke(app, ["nas", "--spec", str(bad2), "--results-dir", str(tmp_path / "r")])
    assert r.exit_code == 2 and "NAS candidate" in r.output


def test_committed_specs_validate_and_dry_run():
    root = Path(__file__).resolve().parents[1] / "tables" / "nas"
    s = nas.load_nas(root / "dm_cifar10.yaml")
    assert len(s.candidates()) == 720 and s.ipc == 50 and s.dataset == "cifar10"
    jobs, tot = nas.dry_run(s)
    assert tot["jobs"] == 720 and tot["gpu_h"] > 0
    c = nas.load_nas(root / "cpu_check.yaml")
    for f, levels in nas.FACTORS.items():
        assert {getattr(x, f) for x in c.candidates()} == set(levels), f


def test_parallel_executor_runs_architectures_as_worker_jobs_with_serial_numbers(tmp_path):
    from benchmark.executors import LocalPoolExecutor

    spec = _spec(proxies=["random", "early_stopping"], space=TINY["space"][:2])
    serial = nas.run_nas(spec, tmp_path / "a", "cpu")
    ex = LocalPoolExecutor(jobs=2, poll_s=0.05)
    par = nas.run_nas(spec, tmp_path / "b", "cpu", executor=ex)
    assert sorted(k for k, _ in ex.assignments) == sorted(spec.space)

    def accs(rows):
        return sorted((r["nas_id"], r["role"], r.get("proxy"), r.get("test_acc", r.get("val_acc"))) for r in rows)

    assert accs(par) == accs(serial)


def test_validation_splits_of_different_seeds_never_share_a_cache_key(digits):
    """The extractor cache is keyed by the data's subset name: splits drawn with another seed or
    size are other data (their training parts hold each other's validation images)."""
    from benchmark.tune import validation_split as tune_split

    train = digits[0]
    a, b, c = (nas.split_validation(train, n, s)[0].subset for n, s in ((5, 1), (5, 2), (6, 1)))
    assert len({a, b, c}) == 3
    assert tune_split(train, 5, 1)[0].subset != a  # tune and NAS never share one either


def test_ground_truth_of_another_setting_is_refused(tmp_path):
    spec = _spec(proxies=["early_stopping"])
    f = tmp_path / "gt.jsonl"
    f.write_text(json.dumps({"nas_id": spec.space[0], "test_acc": 50.0, "dataset": "cifar100"}) + "\n")
    with pytest.raises(ConfigError, match="has dataset 'cifar100'"):
        nas.import_ground_truth(spec, tmp_path, f)
    f.write_text(json.dumps({"nas_id": spec.space[0], "test_acc": 50.0, "model_index": "x"}) + "\n")
    with pytest.raises(ConfigError, match="not an integer"):
        nas.import_ground_truth(spec, tmp_path, f)
