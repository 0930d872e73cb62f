"""Selector math (herding, k-center, forgetting), extractors and selector inits on digits.

Every registered selector's contract (exactly ipc per class, distinct indices, determinism,
presets) is checked in tests/test_contract.py."""

import json

import pytest
import torch

from baselines.forgetting import forgetting_stats, rank_most_forgotten
from baselines.herding import herding_select
from baselines.kcenter import kcenter_select
from baselines.kmeans import kmeans_select
from benchmark.api import RunContext, get_method
from benchmark.budgets import resolve_budget
from benchmark.errors import ConfigError
from benchmark.features import ExtractorSpec, extract_features, train_extractor
from benchmark.init import init_synset
from benchmark.seed import make_generator


def gauss(n=200, d=16, seed=0):
    return torch.randn(n, d, generator=make_generator(seed, "feats"))


def ctx_for(real, tmp_path, seed=0, budget="smoke"):
    return RunContext(device=torch.device("cpu"), seed=seed, arch="ConvNet", info=real.info,
                      budget=resolve_budget(budget), workdir=tmp_path / "store" / "work" / "x")


# ------------------------------------------------------------------------- herding


def test_herding_running_mean_beats_random_and_argmax():
    f = gauss()
    mu = f.mean(0)
    k = 10
    err = lambda pos: float((f[pos].mean(0) - mu).norm())  # noqa: E731
    herd = err(herding_select(f, k, "dc"))
    g = make_generator(0, "rand")
    rand = sum(err(torch.randperm(len(f), generator=g)[:k]) for _ in range(100)) / 100
    assert herd < rand
    assert herd < err(herding_select(f, k, "deepcore_argmax"))
    # greedy: each step is the best single addition given the previous picks
    pos = herding_select(f, 5, "dc").tolist()
    for j in range(1, 5):
        rest = [i for i in range(len(f)) if i not in pos[:j]]
        errs = torch.stack([(f[pos[:j] + [i]].mean(0) - mu).norm() for i in rest])
        assert rest[int(errs.argmin())] == pos[j]


def test_herding_nearest_mean_and_no_duplicates():
    f = gauss()
    pos = herding_select(f, 7, "nearest_mean")
    d = (f - f.mean(0)).norm(dim=1)
    assert set(pos.tolist()) == set(torch.argsort(d)[:7].tolist())
    for v in ("dc", "deepcore_argmax"):
        p = herding_select(f, 50, v)
        assert p.unique().numel() == 50


# ------------------------------------------------------------------------- k-center


def test_kcenter_is_farthest_first_and_radius_monotone():
    f = gauss()
    pos = kcenter_select(f, 12, "mean").tolist()
    assert pos[0] == int(((f - f.mean(0)) ** 2).sum(1).argmin())
    radii = []
    for j in range(1, 12):
        dmin = torch.cdist(f, f[pos[:j]]).min(1).values
        assert pos[j] == int(dmin.argmax())  # each new point maximises the min distance
        radii.append(float(dmin.max()))
    assert all(a >= b for a, b in zip(radii, radii[1:]))
    assert len(set(pos)) == 12
    assert pos == kcenter_select(f, 12, "mean").tolist()


def test_kcenter_random_start_uses_generator():
    f = gauss()
    a = kcenter_select(f, 5, "random", make_generator(0, "s"))
    b = kcenter_select(f, 5, "random", make_generator(0, "s"))
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="unknown k-center start"):
        kcenter_select(f, 5, "middle")


# ------------------------------------------------------------------------ forgetting


def test_forgetting_counts_hand_built():
    # rows: presentations (epochs); columns: examples
    correct = torch.tensor([
        [1, 0, 1, 0, 1],
        [0, 0, 1, 1, -1],
        [1, 0, 1, 0, 0],
        [0, 0, 1, 1, 1],
    ], dtype=torch.int8)
    count, first = forgetting_stats(correct)
    # ex0: 1->0 twice; ex1: never learned -> 4 presentations; ex2: never forgotten;
    # ex3: learned at 1, forgotten at 2; ex4: 1, (skip), 0 -> one event across the gap
    assert count.tolist() == [2, 4, 0, 1, 1]
    assert first.tolist() == [0, 4, 0, 1, 0]
    zero, _ = forgetting_stats(correct, never_learned="zero")
    assert zero.tolist() == [2, 0, 0, 1, 1]
    inc, _ = forgetting_stats(correct, statistic="incorrect_epochs")
    assert inc.tolist() == (correct == 0).sum(0).tolist()
    with pytest.raises(ConfigError):
        forgetting_stats(correct, never_learned="min")


def test_forgetting_rank_tie_break():
    count = torch.tensor([3, 5, 3, 3, 0])
    first = torch.tensor([1, 0, 2, 1, 0])
    assert rank_most_forgotten(count, first, 4).tolist() == [1, 2, 0, 3]


# ---------------------------------------------------------------------- bad inputs


def test_bad_inputs_are_clear_errors(digits, tmp_path):
    real, _ = digits
    smallest = min(int(c.numel()) for c in real.class_indices)
    herding = get_method("herding")
    with pytest.raises(ConfigError, match="larger than the smallest class"):
        herding(herding.resolve_config(None, {}), ctx_for(real, tmp_path)).select(real, smallest + 1)
    with pytest.raises(ConfigError, match="variant"):
        get_method("herding").resolve_config(None, {"variant": "argmaxx"})
    with pytest.raises(ConfigError, match="unknown herding variant"):
        herding_select(gauss(), 3, "argmaxx")
    with pytest.raises(ConfigError):
        get_method("kcenter").resolve_config(None, {"extractor": {"layer": "fc9"}})
    with pytest.raises(ConfigError):
        kmeans_select(gauss(5), 6, make_generator(0, "k"))


def test_extractor_cached_capped_and_in_config(digits, tmp_path):
    real, _ = digits
    spec = ExtractorSpec(arch="ConvNetW32", epochs=2, batch_size=512, aug="none")
    cache = tmp_path / "ext"
    full = train_extractor(spec, real, cache_dir=cache)
    assert full.steps == 2 * -(-len(real) // 512) and full.correct.shape == (2, len(real))
    assert bool((full.correct >= 0).all())  # every example presented once per epoch
    files = sorted(p.name for p in cache.iterdir())
    assert files == [f"{full.hash}.json", f"{full.hash}.pt"]
    assert json.loads((cache / f"{full.hash}.json").read_text())["epochs"] == 2
    again = train_extractor(spec, real, cache_dir=cache)  # loaded, not retrained
    assert torch.equal(again.correct, full.correct)
    for v, w in zip(full.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(v, w)
    # the budget caps the epochs, and the capped run has its own hash
    capped = train_extractor(spec, real, cache_dir=tmp_path / "ext2", budget=resolve_budget("smoke"))
    assert capped.epochs == 1 and capped.hash != full.hash
    # the layer is not part of the training hash; the spec is part of the selector config
    assert train_extractor(spec.model_copy(update={"layer": "block2"}), real, cache_dir=cache).hash == full.hash
    cfg = get_method("herding").resolve_config(None, {"extractor": {"epochs": 3}})
    assert cfg.model_dump(mode="json")["extractor"]["epochs"] == 3


def test_resume_matches_uninterrupted(digits, tmp_path, monkeypatch):
    import benchmark.features as feat

    real, _ = digits
    spec = ExtractorSpec(arch="ConvNetW32", epochs=2, batch_size=512)
    ref = train_extractor(spec, real, cache_dir=tmp_path / "a")
    orig = feat._atomic_save

    def interrupt_after_checkpoint(obj, path):
        orig(obj, path)
        if path.name.endswith(".partial.pt"):
            raise KeyboardInterrupt

    monkeypatch.setattr(feat, "_atomic_save", interrupt_after_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train_extractor(spec, real, cache_dir=tmp_path / "b")
    monkeypatch.setattr(feat, "_atomic_save", orig)
    assert any(p.name.endswith(".partial.pt") for p in (tmp_path / "b").iterdir())
    resumed = train_extractor(spec, real, cache_dir=tmp_path / "b")
    assert torch.equal(resumed.correct, ref.correct)
    for (k, v), w in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(v, w, atol=1e-6), k
    assert not any(p.name.endswith(".partial.pt") for p in (tmp_path / "b").iterdir())


def test_random_extractor_and_block_layer(digits, tmp_path):
    real, _ = digits
    ctx = ctx_for(real, tmp_path)
    f = extract_features(ExtractorSpec(weights="random"), real, ctx)
    assert f.shape[0] == len(real) and f.ndim == 2
    f1 = extract_features(ExtractorSpec(weights="random", layer="block1"), real, ctx)
    assert f1.shape[1] > f.shape[1]


# ----------------------------------------------------------------------------- init


def test_init_synset_shares_the_selectors(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("DBENCH_EXTRACTOR_DIR", str(tmp_path / "extractors"))
    real, _ = digits
    ctx = ctx_for(real, tmp_path)
    x, y = init_synset("noise", real, 2, ctx)
    assert x.shape == (20, 1, 8, 8) and y.tolist() == [c for c in range(10) for _ in range(2)]
    r = init_synset("real", real, 2, ctx)
    sel = get_method("random")(get_method("random").resolve_config(None, None), ctx).select(real, 2)
    assert torch.equal(torch.sort(r.indices).values, torch.sort(sel.indices).values)
    h = init_synset("herding", real, 2, ctx, params=get_method("herding").SMOKE_PARAMS)
    assert h.labels.tolist() == y.tolist()
    assert torch.equal(real.labels[h.indices], h.labels)
    assert torch.allclose(h.images, real.batch(h.indices)[0])
    with pytest.raises(ConfigError, match="unknown init"):
        init_synset("smart", real, 2, ctx)
