"""Feature extractors for coreset selectors: a spec that is part of the cell config, and
trained extractors cached on disk so that a grid trains each one once.

The spec (:class:`ExtractorSpec`) says which network, how it was trained and which layer
is read. It is a field of every feature-based selector's ``Config``, so it is part of the
cell's ``method_config``, of its synset hash, and of every result row.

Trained extractors
------------------
``weights="trained"``: the network (``arch``, parameters drawn from ``seed``) is trained
on the **whole** training split for ``epochs`` epochs (capped by the budget's
``selector_epochs``) and optionally at most ``max_steps`` SGD steps: SGD lr ``lr``,
momentum 0.9, weight decay 5e-4, batch ``batch_size``, shuffled by a seeded generator,
with the dataset's DSA augmentation (single mode, no flips on digits) when
``aug="dsa"``. While it trains, whether each example's training-time prediction was
correct is recorded per presentation; the forgetting selector reads those records, so it
shares the same training run.

Cache layout (``extractor_dir``)::

    <results store>/extractors/<hash>.pt          final weights + correctness record
    <results store>/extractors/<hash>.json        the spec and training facts, readable
    <results store>/extractors/<hash>.partial.pt  last finished epoch (resume point)

``<results store>`` is ``ctx.workdir.parent.parent`` (the runner's workdir is
``<store>/work/<synset_hash>``); ``DBENCH_EXTRACTOR_DIR`` overrides it. ``<hash>`` covers
the training fields of the spec (not ``layer``), the effective epoch count, the dataset
facts and the trainer version. Files are written atomically and read with
``weights_only=True``; a killed training resumes from its last finished epoch.

``weights="random"``: a freshly initialised network (seeded by ``seed``), nothing trained.

Features are the network's ``embed`` (flattened pre-classifier feature, as used by DC/DM
herding and k-center) or the flattened output of block ``k`` (``layer="block<k>"``,
1-based), computed in eval mode without augmentation. The features of the last
(extractor, dataset) are kept in memory, so the selectors of one grid share one pass.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, field_validator

from . import augment as A
from .data import RealData
from .errors import ArtifactError, ConfigError
from .fields import canonical_arch_name
from .models import create_model
from .progress import NullProgress, Progress
from .seed import derive_seed, make_generator

TRAINER_VERSION = "1"


class ExtractorSpec(BaseModel):
    """Which network produces the features a selector works on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str = "ConvNet"
    weights: Literal["trained", "random"] = "trained"
    epochs: int = 10  # passes over the whole training split (capped by the budget's selector_epochs)
    max_steps: int | None = None  # optional cap on SGD steps (cheap CPU extractors); None: no cap
    aug: Literal["dsa", "none"] = "dsa"
    lr: float = 0.01
    batch_size: int = 256
    layer: str = "embed"  # "embed" or "block<k>" (1-based)
    seed: int = 0  # fixed by default, so every cell of a grid shares one extractor

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        return canonical_arch_name(v)  # an unknown name is a one-line validation error naming the field

    @field_validator("layer")
    @classmethod
    def _layer(cls, v: str) -> str:
        if v != "embed" and not (v.startswith("block") and v[5:].isdigit() and int(v[5:]) >= 1):
            raise ValueError(f"layer must be 'embed' or 'block<k>' (k >= 1), got {v!r}")
        return v

    @field_validator("epochs", "batch_size")
    @classmethod
    def _pos(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be >= 1 (or null for no cap)")
        return v

    def effective_epochs(self, budget=None) -> int:
        return budget.cap("selector_epochs", self.epochs) if budget is not None else self.epochs

    def describe(self, budget=None) -> str:
        """One line for reports, e.g. 'ConvNet trained 5 ep (dsa aug), embed'."""
        if self.weights == "random":
            return f"{self.arch} random init (seed {self.seed}), {self.layer}"
        steps = f", <= {self.max_steps} steps" if self.max_steps else ""
        return (f"{self.arch} trained on the full train split {self.effective_epochs(budget)} ep{steps} "
                f"({self.aug} aug, seed {self.seed}), {self.layer}")


def training_identity(spec: ExtractorSpec, real: RealData, epochs: int) -> dict[str, Any]:
    return {
        "trainer_version": TRAINER_VERSION,
        "spec": spec.model_dump(mode="json", exclude={"layer", "epochs"}),
        "epochs": epochs,
        "dataset": real.info.to_dict(),
        "n_train": len(real),
        # a part of the split (continual learning's per-step classes) trains its own extractor
        **({"subset": real.subset} if getattr(real, "subset", None) else {}),
    }


def training_hash(spec: ExtractorSpec, real: RealData, epochs: int) -> str:
    from .grid import short_hash

    return short_hash(training_identity(spec, real, epochs))


def extractor_dir(ctx) -> Path:
    env = os.environ.get("DBENCH_EXTRACTOR_DIR")
    if env:
        return Path(env).expanduser()
    return Path(ctx.workdir).parent.parent / "extractors"


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # torch rejects dot-names without a suffix
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001
        raise ArtifactError(f"{path}: corrupt extractor file; delete it to retrain.") from None


@dataclass
class TrainedExtractor:
    model: torch.nn.Module  # eval mode, on the requested device
    correct: torch.Tensor  # int8 [epochs, N]: 1 correct, 0 wrong, -1 not presented that epoch
    hash: str
    epochs: int
    steps: int


def train_extractor(spec: ExtractorSpec, real: RealData, *, device: torch.device | str = "cpu", budget=None,
                    cache_dir: Path | None = None, progress: Progress = NullProgress()) -> TrainedExtractor:
    """Train (or load from ``cache_dir``) the extractor ``spec`` describes on ``real``."""
    if spec.weights != "trained":
        raise ConfigError("train_extractor: the spec has weights='random'; nothing to train")
    device = torch.device(device)
    E = spec.effective_epochs(budget)
    h = training_hash(spec, real, E)
    model = create_model(spec.arch, real.info, make_generator(derive_seed(spec.seed, "extractor"), "init"))
    final = cache_dir / f"{h}.pt" if cache_dir else None
    if final is not None and final.exists():
        st = _load(final)
        model.load_state_dict(st["model"])
        return TrainedExtractor(model.to(device).eval(), st["correct"], h, E, int(st["steps"]))

    model = model.to(device)
    N = len(real)
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=0.9, weight_decay=5e-4)
    g = make_generator(derive_seed(spec.seed, "extractor"), "train")
    correct = torch.full((E, N), -1, dtype=torch.int8)
    start, step = 0, 0
    partial = cache_dir / f"{h}.partial.pt" if cache_dir else None
    if partial is not None and partial.exists():
        st = _load(partial)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        g.set_state(st["gen"])
        correct, start, step = st["correct"], int(st["epoch"]), int(st["steps"])
    steps_per_epoch = -(-N // spec.batch_size)
    total = E * steps_per_epoch if spec.max_steps is None else min(E * steps_per_epoch, spec.max_steps)
    bar = progress.task(f"extractor {spec.arch} on {real.info.name} ({E} ep)", total)
    if step:
        bar.advance(step)
    strategy = real.info.dsa_strategy
    model.train()
    for ep in range(start, E):
        if step >= total:
            break
        perm = torch.randperm(N, generator=g)
        loss_sum, n_b = 0.0, 0
        for s in range(0, N, spec.batch_size):
            if step >= total:
                break
            idx = perm[s : s + spec.batch_size]
            x, y = real.batch(idx, device)
            if spec.aug == "dsa":
                x = A.apply(x, A.sample_dsa(strategy, x.shape[0], real.info.im_size, g, siamese=False).to(device))
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct[ep, idx] = (out.detach().argmax(1) == y).to(torch.int8).cpu()
            loss_sum += float(loss.detach())
            n_b += 1
            step += 1
            bar.advance()
        bar.update(epoch=ep + 1, loss=loss_sum / max(n_b, 1))
        if partial is not None and ep + 1 < E and step < total:
            _atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": g.get_state(),
                          "correct": correct, "epoch": ep + 1, "steps": step}, partial)
    bar.close()
    model.eval()
    if final is not None:
        _atomic_save({"model": {k: v.cpu() for k, v in model.state_dict().items()}, "correct": correct,
                      "steps": step}, final)
        meta = {"hash": h, **training_identity(spec, real, E), "steps": step,
                "description": spec.describe(budget)}
        tmp = final.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
        os.replace(tmp, final.with_suffix(".json"))
        if partial is not None and partial.exists():
            partial.unlink()
    return TrainedExtractor(model, correct, h, E, step)


def build_extractor(spec: ExtractorSpec, real: RealData, ctx) -> tuple[torch.nn.Module, str]:
    """The network for ``spec`` (trained and cached, or random), and a cache key for its features."""
    if spec.weights == "random":
        model = create_model(spec.arch, real.info, make_generator(derive_seed(spec.seed, "extractor"), "init"))
        key = "random:" + json.dumps(spec.model_dump(mode="json", exclude={"layer"}), sort_keys=True)
        return model.to(ctx.device).eval(), key
    t = train_extractor(spec, real, device=ctx.device, budget=ctx.budget, cache_dir=extractor_dir(ctx),
                        progress=ctx.progress)
    return t.model, t.hash


def _layer_fn(model: torch.nn.Module, layer: str):
    if layer == "embed":
        return model.embed
    k = int(layer[5:])
    blocks = getattr(model, "blocks", None)
    if blocks is None or k > len(blocks):
        raise ConfigError(f"extractor layer {layer!r}: the network has {0 if blocks is None else len(blocks)} blocks")

    def fn(x):
        for b in list(blocks)[:k]:
            x = b(x)
        return torch.flatten(x, 1)

    return fn


@torch.no_grad()
def compute_features(model: torch.nn.Module, real: RealData, layer: str = "embed", device="cpu",
                     batch_size: int = 500, progress: Progress = NullProgress(),
                     desc: str = "features") -> torch.Tensor:
    """[N, d] float32 features of every image of ``real`` (CPU tensor), eval mode, no augmentation."""
    model.eval()
    fn = _layer_fn(model, layer)
    N = len(real)
    bar = progress.task(desc, -(-N // batch_size))
    chunks = []
    for s in range(0, N, batch_size):
        x, _ = real.batch(torch.arange(s, min(N, s + batch_size)), device)
        chunks.append(fn(x).float().cpu())
        bar.advance()
    bar.close()
    return torch.cat(chunks)


_FEATURE_CACHE: dict[tuple, torch.Tensor] = {}


def extract_features(spec: ExtractorSpec, real: RealData, ctx) -> torch.Tensor:
    """Features of the whole training split for ``spec`` ([N, d] float32, CPU). The last
    result is memoised in-process, so the selectors of one grid run embed once."""
    model, key = build_extractor(spec, real, ctx)
    ck = (key, spec.layer, real.info.name, len(real), id(real))
    if ck in _FEATURE_CACHE:
        return _FEATURE_CACHE[ck]
    feats = compute_features(model, real, spec.layer, ctx.device, progress=ctx.progress,
                             desc=f"features {spec.arch}/{spec.layer} on {real.info.name}")
    _FEATURE_CACHE.clear()
    _FEATURE_CACHE[ck] = feats
    return feats


__all__ = ["ExtractorSpec", "TrainedExtractor", "train_extractor", "build_extractor", "compute_features",
           "extract_features", "extractor_dir", "training_hash"]
