"""The adapter contract, checked for every registered method and selector.

Every test here is parametrised over the method registry (``benchmark.api.METHODS`` after
``load_plugins()``), as timm's ``tests/test_models.py`` is over ``list_models()``: a new file
in ``methods/`` or ``baselines/`` gets all of these tests with no edit to this file. Runs use
the adapter's own ``SMOKE_PARAMS`` on the embedded ``digits`` dataset at the ``smoke`` budget
(2 distillation iterations, 1 proxy epoch), at IPC 2.

* the built set keeps the contract (exactly IPC per class for selectors; at most IPC x
  classes stored images covering every class for distillers; right shape, finite values,
  in the declared space, and it saves and loads back unchanged);
* the same seed gives a bit-identical set; another seed gives another set exactly when the
  adapter drew from one of the run's seeded streams (``ctx.generator`` / ``ctx.new_model``);
* a distillation run killed after its first checkpoint resumes to the uninterrupted result;
* every preset validates and names its provenance, and the resolved config is plain JSON
  with every value the adapter resolves filled in.

The ``reference`` row (``full``) builds no set; it gets the metadata and preset checks.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from benchmark.api import (
    METHODS,
    ComponentConfig,
    CoresetSelector,
    DistillMethod,
    RunContext,
    WholeDataset,
)
from benchmark.budgets import BUDGETS
from benchmark.build import build_set, resolved_config, resolved_values
from benchmark.data import get_info
from benchmark.errors import ConfigError
from benchmark.registry import load_plugins
from benchmark.synset import SyntheticSet

load_plugins()

IPC = 2
SMOKE = BUDGETS.get("smoke")
KILL_AT = 2  # the interrupted run dies while logging this iteration, after checkpointing the one before

ALL = [pytest.param(cls, id=key) for key, cls in METHODS.items()]
BUILDERS = [pytest.param(cls, id=key) for key, cls in METHODS.items() if cls.kind != "reference"]
DISTILLERS = [pytest.param(cls, id=key) for key, cls in METHODS.items() if cls.kind == "distill"]
PRESETS = [pytest.param(cls, preset, id=f"{key}.{preset}" if preset else key)
           for key, cls in METHODS.items() for preset in (None, *cls.PRESETS)]


# ------------------------------------------------------------------------ helpers


@dataclass
class TracingContext(RunContext):
    """A run context that remembers which seeded streams the adapter took and drew from."""

    taken: list = field(default_factory=list, repr=False)

    def generator(self, stream: str) -> torch.Generator:
        g = super().generator(stream)
        self.taken.append((stream, g, g.get_state()))
        return g

    def new_model(self, stream: str, arch: str | None = None):
        self.taken.append((f"model:{stream}", None, None))
        return super().new_model(stream, arch)

    def streams_drawn(self) -> list[str]:
        """Streams whose generator advanced, plus every network drawn (its weights depend on the seed)."""
        return sorted({s for s, g, start in self.taken if g is None or not torch.equal(g.get_state(), start)})


def make_context(real, workdir: Path, seed: int = 0, log=None) -> TracingContext:
    """A CPU context at the smoke budget that checkpoints every iteration. ``workdir`` follows
    the runner's ``<store>/work/<cell>`` layout, so extractors are cached under ``<store>``."""
    return TracingContext(device=torch.device("cpu"), seed=seed, arch="ConvNet", info=real.info, budget=SMOKE,
                          workdir=workdir, checkpoint_every=1, log=log or (lambda metrics, step: None))


def smoke_config(cls) -> ComponentConfig:
    return cls.resolve_config(None, cls.SMOKE_PARAMS)


def build(cls, real, workdir: Path, seed: int = 0, cfg: ComponentConfig | None = None, log=None) -> SyntheticSet:
    return build_set(cls, cfg or smoke_config(cls), real, IPC, make_context(real, workdir, seed, log))


class Interrupted(Exception):
    """Raised from the metrics hook: the run is killed there."""


def interrupted_then_resumed(cls, cfg: ComponentConfig, real, workdir: Path, seed: int = 0) -> SyntheticSet:
    """Run ``cls`` until it logs iteration ``KILL_AT`` and kill it there (its checkpoint holds
    iteration ``KILL_AT - 1``), then run it again in the same workdir and return that set."""

    def kill(metrics, step):
        if step >= KILL_AT:
            raise Interrupted

    try:
        build(cls, real, workdir, seed, cfg, log=kill)
    except Interrupted:
        pass
    else:
        pytest.fail(f"'{cls.key}' finished without logging iteration {KILL_AT} through ctx.log: a distiller logs "
                    f"its per-iteration metrics there, and its smoke run needs at least {KILL_AT} iterations")
    assert make_context(real, workdir).checkpoint_path.exists(), \
        f"'{cls.key}' wrote no checkpoint before it was killed (RunContext.checkpoint_every = 1)"
    resumed = build(cls, real, workdir, seed, cfg)
    assert resumed.meta.get("resumed_from") == KILL_AT - 1, \
        f"'{cls.key}' should report meta['resumed_from'] = {KILL_AT - 1}, got {resumed.meta.get('resumed_from')}"
    return resumed


def difference(a: SyntheticSet, b: SyntheticSet) -> str:
    """'' when the two sets are bit-identical, else what differs."""
    if (a.indices is None) != (b.indices is None):
        return "one set has source indices, the other has none"
    for name in ("indices", "labels", "images"):
        x, y = getattr(a, name), getattr(b, name)
        if x is None:
            continue
        if x.shape != y.shape:
            return f"{name} have shapes {tuple(x.shape)} and {tuple(y.shape)}"
        if not torch.equal(x, y):
            return f"{name} differ (max abs difference {float((x.double() - y.double()).abs().max()):.3g})"
    return ""


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # 8x8 images gain nothing from intra-op threads, and on a busy 2-core machine two OpenMP
    # threads competing with other processes made each smoke run 10-40x slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _extractors_in_the_store(monkeypatch):
    # selectors cache trained extractors beside the run's workdir, never in a user's directory
    monkeypatch.delenv("DBENCH_EXTRACTOR_DIR", raising=False)


@pytest.fixture(scope="module")
def real(digits):
    return digits[0]


@pytest.fixture(scope="module")
def reference_set(real, tmp_path_factory):
    """The seed-0 smoke set of an adapter, built once per module and shared by the checks."""
    store = tmp_path_factory.mktemp("contract-store")
    built: dict[str, SyntheticSet] = {}

    def get(cls) -> SyntheticSet:
        if cls.key not in built:
            built[cls.key] = build(cls, real, store / "work" / cls.key)
        return built[cls.key]

    return get


# ----------------------------------------------------------------------- metadata


@pytest.mark.parametrize("cls", ALL)
def test_registration_and_metadata(cls):
    key = next(k for k, c in METHODS.items() if c is cls)
    assert cls.key == key and re.fullmatch(r"[a-z][a-z0-9_]*", key)
    assert cls.display_name.strip() and cls.description.strip()
    assert isinstance(cls.version, str) and cls.version.strip()
    base = {"distill": DistillMethod, "select": CoresetSelector, "reference": WholeDataset}[cls.kind]
    assert issubclass(cls, base)
    assert issubclass(cls.Config, ComponentConfig)
    with pytest.raises(ConfigError, match=key):  # unknown keys are an error, not ignored
        cls.resolve_config(None, {"no_such_field_anywhere": 1})
    smoke_config(cls)  # SMOKE_PARAMS are valid params


# ---------------------------------------------------------------- (a) set contract


@pytest.mark.parametrize("cls", ALL)
def test_built_set_keeps_the_contract(cls, real, reference_set, tmp_path):
    info = real.info
    if cls.kind == "reference":
        with pytest.raises(ConfigError, match="builds no set"):
            build(cls, real, tmp_path / "store" / "work" / cls.key)
        return
    s = reference_set(cls)
    k = info.num_classes
    assert s.dataset == info.name
    assert s.images.dtype == torch.float32 and s.images.shape[1:] == (info.channels, *info.im_size)
    assert s.labels.dtype == torch.int64 and s.labels.shape == (s.images.shape[0],)
    assert torch.isfinite(s.images).all()
    counts = torch.bincount(s.labels, minlength=k)
    if cls.kind == "select":
        assert counts.tolist() == [IPC] * k
        assert s.indices is not None and s.indices.unique().numel() == IPC * k
        assert torch.equal(real.labels[s.indices], s.labels)
        assert torch.equal(s.images, real.batch(s.indices)[0])  # the stored images are those real images
        assert s.space == "normalized" and s.decode.factor == 1
    else:
        assert len(s) <= IPC * k and counts.numel() == k and bool((counts > 0).all()), counts.tolist()
        assert s.space in ("normalized", "pixel")
        if s.space == "pixel":
            assert float(s.images.min()) >= 0 and float(s.images.max()) <= 1
    x, y = s.training_tensors()  # what evaluation networks train on
    assert x.shape[0] == y.shape[0] == s.n_train_images and torch.isfinite(x).all()
    assert set(y.tolist()) == set(range(k))
    path = s.save(tmp_path / "set.safetensors")  # metadata must be plain JSON for the manifest
    back = SyntheticSet.load(path, info)
    assert not difference(s, back) and back.space == s.space and back.decode == s.decode


# --------------------------------------------------------------- (b) determinism


@pytest.mark.parametrize("cls", BUILDERS)
def test_same_seed_same_set_and_the_seed_matters_where_drawn(cls, real, reference_set, tmp_path):
    first = reference_set(cls)
    ctx = make_context(real, tmp_path / "store" / "work" / "again")
    again = build_set(cls, smoke_config(cls), real, IPC, ctx)
    diff = difference(first, again)
    assert not diff, f"'{cls.key}' gave two different sets for one seed: {diff}"
    drawn = ctx.streams_drawn()
    other = build(cls, real, tmp_path / "store" / "work" / "seed1", seed=1)
    diff = difference(first, other)
    if drawn:
        assert diff, f"'{cls.key}' drew from {drawn}, yet seeds 0 and 1 gave the same set"
    else:
        assert not diff, (f"'{cls.key}' drew from no seeded stream of the run context, yet its set depends on the "
                          f"seed ({diff}): randomness must come from ctx.generator / ctx.new_model")


# -------------------------------------------------------------------- (c) resume


@pytest.mark.parametrize("cls", DISTILLERS)
def test_resume_after_interruption_equals_uninterrupted(cls, real, reference_set, tmp_path):
    resumed = interrupted_then_resumed(cls, smoke_config(cls), real, tmp_path / "store" / "work" / "cell")
    diff = difference(reference_set(cls), resumed)
    assert not diff, (f"'{cls.key}': resumed run != uninterrupted run ({diff}); the checkpoint must hold every "
                      "state the next iteration reads (images, optimizers, generator and sampler states, networks)")


# ------------------------------------------------------------- (d) configuration


RESOLVE_AT = [(ds, ipc, budget) for ds in ("digits", "mnist", "cifar10", "cifar100") for ipc in (1, 10, 50)
              for budget in ("paper", "smoke")]


@pytest.mark.parametrize("cls, preset", PRESETS)
def test_preset_validates_and_resolves_to_plain_values(cls, preset):
    cfg = cls.resolve_config(preset, {})
    if preset is not None:
        assert cls.provenance(preset).strip(), f"preset '{cls.key}.{preset}' has no provenance"
    for ds, ipc, budget in RESOLVE_AT:
        info, where = get_info(ds), f"{cls.key}.{preset or ''} on {ds} ipc {ipc} ({budget})"
        values = resolved_values(cls, cfg, info, ipc, BUDGETS.get(budget), "ConvNet")
        json.dumps(values, allow_nan=False)  # plain values only: no tensors or objects
        row = resolved_config(cls, cfg, info, ipc, BUDGETS.get(budget), "ConvNet")
        assert json.loads(json.dumps(row, allow_nan=False)) == row, where
        unresolved = sorted(k for k in values if k != "provenance" and row[k] is None)
        assert not unresolved, f"{where}: resolved() leaves {unresolved} as None"
        # the resolved config is itself a valid config of the adapter (a row can be re-run)
        cls.Config(**{k: v for k, v in row.items() if k in cls.Config.model_fields})
