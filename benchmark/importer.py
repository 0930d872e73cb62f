"""``dbench import``: bring a published distilled set into the store, so that a grid evaluates it
beside the sets made here (``methods: [imported:<name>]``).

Readers (``--format``, ``auto`` picks by content):

* ``dbench``: a ``.safetensors`` written by dbench (its manifest gives dataset, space, mean/std
  and decode; the image checksum is verified);
* ``vico``: VICO-UoE/DatasetCondensation's ``res_*.pt`` (``{'data': [[images, labels], ...]}``,
  one entry per experiment, ``--exp`` picks one; DC, DSA, DM and DC-Bench's DC/DSA/DM files);
* ``mtt``: MTT-style separate tensors, ``images_best.pt`` + ``labels_best.pt`` (the labels file
  is found beside the images, or given with ``--labels``); MTT distilled with ``--zca`` saves
  ZCA-space images there and the un-whitened ones as ``images_zca_<it>.pt``: import those;
* ``idc``: IDC / DREAM ``data.pt`` (``[images, labels]`` in [0, 1] pixel space, multi-formation
  factor 2 unless ``--factor`` says otherwise);
* ``pair``: a plain ``{'images', 'labels'}`` dict or ``(images, labels)`` pair.

``.pt`` files are read with ``torch.load(weights_only=True)``: a pickle that would run code is
refused. Before anything is written the set is checked against the dataset: image shape,
labels in range, exactly ``ipc`` stored images for every class, finite pixels, and the
declared value space (normalised with the dataset's mean/std, or [0, 1] pixels: values that
contradict it are a normalisation mismatch). ZCA-whitened sets are refused: dbench's
protocols do not whiten the test images. Any failure is one line (``dbench`` exits 2) and
nothing is written.

Layout in the results store::

    imported/<name>/<dataset>_ipc<K>.safetensors   the set (dbench format, manifest in its metadata)
    imported/<name>/<dataset>_ipc<K>.json          the import manifest: source file(s) and their
                                                   sha256, format, space and mean/std, decode,
                                                   the paper it reproduces, per-class counts

A name is bound to its content: importing other images under an existing (name, dataset, ipc)
is refused (choose another name), so results computed for a name always belong to one set.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import torch

from .api import ComponentConfig, _Component
from .data import DatasetInfo, get_info
from .errors import ArtifactError, ConfigError
from .synset import Decode, SyntheticSet

FORMATS = ("auto", "dbench", "vico", "mtt", "idc", "pair")
SPACES = ("normalized", "pixel", "zca")
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
IMPORT_DIR = "imported"
MANIFEST_FORMAT = "dbench.import/1"


# ------------------------------------------------------------------ the grid adapter


class ImportedSet(_Component):
    """A set brought in by ``dbench import``; in a grid ``imported:<name>`` (the name is its
    preset). It builds nothing: the runner reads the set from the store. Its rows have
    ``method_kind`` 'imported'. Registered on first use (a grid naming an imported set), so the
    adapter contract suite, which builds every registered method, never sees it."""

    key: ClassVar[str] = "imported"
    kind = "imported"  # type: ignore[assignment]
    version = "1"
    display_name = "Imported"
    description = "a published distilled set read from the store (dbench import); grids: imported:<name>"

    class Config(ComponentConfig):
        name: str = ""

    @classmethod
    def resolve_config(cls, preset, params):
        if params:
            raise ConfigError(f"imported set '{preset}': takes no params (the set is fixed when imported).")
        if not preset:
            raise ConfigError("name the imported set: imported:<name> (the --method of `dbench import`).")
        if not NAME.match(preset):
            raise ConfigError(f"imported set name {preset!r}: use lower-case letters, digits, '_' and '-'.")
        return cls.Config(name=preset)

    @classmethod
    def provenance(cls, preset) -> str:
        return f"imported set '{preset}' (dbench import; source, sha256 and paper in its import manifest)"


def ensure_registered() -> None:
    from .api import METHODS, register_method

    if "imported" not in METHODS:
        register_method(ImportedSet)


# ------------------------------------------------------------------------ the store


def import_paths(root: Path, name: str, dataset: str, ipc: int) -> tuple[Path, Path]:
    d = Path(root) / IMPORT_DIR / name
    return d / f"{dataset}_ipc{ipc}.safetensors", d / f"{dataset}_ipc{ipc}.json"


def load_imported(store, cell) -> SyntheticSet:
    """The imported set of a grid cell (method ``imported``, preset = the import's name)."""
    ensure_registered()
    name = cell.method_preset
    info = get_info(cell.dataset)
    path, man_path = import_paths(store.root, name, cell.dataset, cell.ipc)
    if not path.exists():
        raise ArtifactError(f"no imported set '{name}' for {cell.dataset} ipc {cell.ipc} in {path.parent}; import it "
                            f"first: dbench import FILE --method {name} --dataset {cell.dataset} --ipc {cell.ipc}.")
    s = SyntheticSet.load(path, info)  # verifies the image checksum and the shape contract
    if man_path.exists():
        man = json.loads(man_path.read_text())
        if man.get("images_sha256") != s.sha256():
            raise ArtifactError(f"{path}: its images do not match the import manifest {man_path.name}; re-import it.")
    return s


# ------------------------------------------------------------------------ importing


@dataclass
class ImportResult:
    path: Path
    manifest_path: Path
    manifest: dict[str, Any]
    already: bool  # the same set was imported under this name before: nothing written


def _sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _torch_load(p: Path):
    if not p.is_file():
        raise ArtifactError(f"{p}: no such file.")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure is one line
        msg = str(e)
        if "Unsupported global" in msg or "reduce" in msg.lower():
            g = re.search(r"GLOBAL (\S+)", msg)
            what = f" ({g.group(1)})" if g else ""
            raise ArtifactError(f"{p}: refused: the file holds pickled Python objects{what} that would run code when "
                                "loaded; only plain tensors are read (torch.load weights_only=True). Re-save the "
                                "images and labels as tensors.") from None
        raise ArtifactError(f"{p}: not a readable torch tensor file ({type(e).__name__}).") from None


def _labels_beside(images: Path) -> Path | None:
    """MTT writes images_<x>.pt beside labels_<x>.pt (images_zca_<x>.pt: the un-whitened copy)."""
    m = re.match(r"^images_(?:zca_)?(.+)\.pt$", images.name)
    if not m:
        return None
    p = images.with_name(f"labels_{m.group(1)}.pt")
    return p if p.exists() else None


def _read(file: Path, fmt: str, labels_file: Path | None, exp: int, info: DatasetInfo) -> dict[str, Any]:
    """images, labels and what the file itself says (format, space, decode, mean/std, sources)."""
    if fmt == "auto" and file.suffix == ".safetensors":
        fmt = "dbench"
    if fmt == "dbench":
        if file.suffix != ".safetensors":
            raise ArtifactError(f"{file}: --format dbench reads a .safetensors set written by dbench.")
        s = SyntheticSet.load(file, info)  # manifest, checksum, shape contract
        if s.dataset and s.dataset != info.name:
            raise ConfigError(f"{file} was made from '{s.dataset}', not '{info.name}'; pass --dataset {s.dataset}.")
        return {"format": "dbench", "images": s.images, "labels": s.labels, "space": s.space, "decode": s.decode,
                "mean": tuple(s.mean), "std": tuple(s.std), "sources": [file], "indices": s.indices}
    obj = _torch_load(file)
    sources = [file]
    if fmt == "auto":
        if isinstance(obj, dict) and "data" in obj:
            fmt = "vico"
        elif isinstance(obj, torch.Tensor):
            fmt = "mtt"
        else:
            fmt = "pair"
    images = labels = None
    if fmt == "vico":
        data = obj.get("data") if isinstance(obj, dict) else None
        if not isinstance(data, (list, tuple)) or not data:
            raise ArtifactError(f"{file}: not a VICO res_*.pt (expected {{'data': [[images, labels], ...]}}).")
        if not -len(data) <= exp < len(data):
            raise ConfigError(f"--exp {exp}: {file} holds {len(data)} experiment(s) (0..{len(data) - 1}).")
        entry = data[exp]
        if isinstance(entry, (list, tuple)) and len(entry) >= 2:
            images, labels = entry[0], entry[1]
    elif fmt == "mtt":
        if not isinstance(obj, torch.Tensor):
            raise ArtifactError(f"{file}: --format mtt expects a file holding one image tensor (images_best.pt).")
        images = obj
        lab = labels_file or _labels_beside(file)
        if lab is None:
            raise ConfigError(f"{file}: no labels file beside it (labels_best.pt); pass --labels FILE.")
        labels = _torch_load(lab)
        sources.append(lab)
    elif fmt in ("idc", "pair"):
        if isinstance(obj, dict) and "images" in obj and "labels" in obj:
            images, labels = obj["images"], obj["labels"]
        elif isinstance(obj, (list, tuple)) and len(obj) == 2:
            images, labels = obj
        elif isinstance(obj, torch.Tensor) and labels_file is not None:
            images, labels = obj, _torch_load(labels_file)
            sources.append(labels_file)
    else:
        raise ConfigError(f"--format {fmt}: use {', '.join(FORMATS)}.")
    if fmt != "mtt" and labels_file is not None and labels_file not in sources:
        raise ConfigError(f"--labels is for files that hold images only (--format mtt); {file} has its labels.")
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ArtifactError(f"{file}: expected an image tensor and a label tensor ({fmt} format); found "
                            f"{type(images).__name__} and {type(labels).__name__}.")
    return {"format": fmt, "images": images, "labels": labels, "space": None, "decode": None, "mean": None,
            "std": None, "sources": sources, "indices": None}


def _hard_labels(labels: torch.Tensor, n: int, info: DatasetInfo, where: Path) -> tuple[torch.Tensor, str]:
    if labels.ndim == 2:
        if labels.shape != (n, info.num_classes):
            raise ArtifactError(f"{where}: labels have shape {tuple(labels.shape)}, expected [{n}] or "
                                f"[{n}, {info.num_classes}] for {info.name}.")
        y = labels.float()
        if not (((y == 0) | (y == 1)).all() and (y.sum(1) == 1).all()):
            raise ArtifactError(f"{where}: soft labels (not one-hot); dbench's protocols train on hard labels, so "
                                "a soft-label set cannot be evaluated faithfully.")
        return y.argmax(1), "one-hot -> class index"
    if labels.ndim != 1 or labels.numel() != n:
        raise ArtifactError(f"{where}: labels have shape {tuple(labels.shape)}, expected [{n}] (one per image).")
    if labels.is_floating_point():
        if not torch.isfinite(labels).all() or not (labels == labels.round()).all():
            raise ArtifactError(f"{where}: labels are not class indices (non-integer values).")
    return labels.long(), "class index"


def _check_space(x: torch.Tensor, space: str, info: DatasetInfo, where: Path) -> None:
    """The declared value space must fit the values: a set normalised with mean/std is not all in
    [0, 1], and [0, 1] pixels are not outside it."""
    lo, hi = float(x.min()), float(x.max())
    span = f"values span [{lo:.3g}, {hi:.3g}]"
    if hi > 50:
        raise ArtifactError(f"{where}: normalisation mismatch: {span}, like 0..255 pixels; scale them to [0, 1] "
                            "and pass --space pixel.")
    if space == "pixel" and (lo < -0.01 or hi > 1.01):
        raise ArtifactError(f"{where}: normalisation mismatch: declared [0, 1] pixels (--space pixel) but {span}: "
                            f"this looks normalised with mean/std; pass --space normalized.")
    if space == "normalized" and lo >= 0.0 and hi <= 1.0:
        floor = min(-m / s for m, s in zip(info.mean, info.std))
        raise ArtifactError(f"{where}: normalisation mismatch: declared normalised with {info.name}'s mean/std "
                            f"(black is {floor:.2f}) but {span}: this looks like [0, 1] pixels; pass --space pixel.")


def import_set(file: str | Path, *, name: str, dataset: str, ipc: int, store_root: str | Path,
               fmt: str = "auto", labels_file: str | Path | None = None, space: str | None = None,
               factor: int | None = None, decode_order: str = "idc", exp: int = 0, paper: str = "",
               source_url: str = "") -> ImportResult:
    """Check a published set against ``dataset`` and write it (and its manifest) under
    ``<store_root>/imported/<name>/``. Raises a one-line :class:`~benchmark.errors.DbenchError`
    (nothing written) on any problem."""
    file = Path(file)
    labels_file = Path(labels_file) if labels_file is not None else None
    if not NAME.match(name or ""):
        raise ConfigError(f"--method {name!r}: an import name uses lower-case letters, digits, '_' and '-' "
                          "(e.g. mtt_official); grids then list it as imported:<name>.")
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: use {', '.join(FORMATS)}.")
    if space is not None and space not in SPACES:
        raise ConfigError(f"--space {space}: use normalized or pixel.")
    if ipc < 1:
        raise ConfigError(f"--ipc {ipc}: give the images per class (>= 1).")
    if factor is not None and factor < 1:
        raise ConfigError(f"--factor {factor}: give the multi-formation factor (>= 1; 1 = none).")
    if decode_order not in ("idc", "idm"):
        raise ConfigError(f"--decode-order {decode_order}: use idc or idm.")
    info = get_info(dataset)
    got = _read(file, fmt, labels_file, exp, info)
    fmt = got["format"]
    x, where = got["images"], file
    # ------------------------------------------------------------------ the value space
    if space == "zca" or got["space"] == "zca":
        raise ConfigError(f"{file}: ZCA-whitened images cannot be evaluated here (dbench's protocols do not whiten "
                          "the test set); import the un-whitened set (MTT: images_zca_<it>.pt) instead.")
    if got["space"] is not None:  # a dbench file says its own space, stats and decode
        if space is not None and space != got["space"]:
            raise ConfigError(f"{file}: its manifest says space '{got['space']}', not --space {space}.")
        space = got["space"]
        mism = [f"{k} {got[k]} vs {v}" for k, v in (("mean", info.mean), ("std", info.std))
                if any(abs(a - b) > 1e-4 for a, b in zip(got[k], v)) or len(got[k]) != len(v)]
        if mism:
            raise ArtifactError(f"{file}: normalisation mismatch with {info.name}: " + "; ".join(mism) + ".")
        if factor is not None and factor != got["decode"].factor:
            raise ConfigError(f"{file}: its manifest says factor {got['decode'].factor}, not --factor {factor}.")
        decode = got["decode"]
    else:
        space = space or ("pixel" if fmt == "idc" else "normalized")
        decode = Decode(factor=factor if factor is not None else (2 if fmt == "idc" else 1), order=decode_order)
    # ------------------------------------------------------------------ shape and content
    if x.dtype == torch.uint8:
        raise ArtifactError(f"{where}: uint8 images (0..255): scale them to [0, 1] floats and pass --space pixel.")
    if not x.is_floating_point():
        raise ArtifactError(f"{where}: images have dtype {x.dtype}; expected floats.")
    want = (info.channels, *info.im_size)
    if x.ndim != 4 or tuple(x.shape[1:]) != want:
        raise ArtifactError(f"{where}: images have shape {tuple(x.shape)}, expected [N, {', '.join(map(str, want))}] "
                            f"for {info.name}.")
    x = x.detach().float().cpu().contiguous()
    bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
    if bad:
        raise ArtifactError(f"{where}: {bad} image(s) contain NaN or inf pixels.")
    y, label_kind = _hard_labels(got["labels"].detach().cpu(), x.shape[0], info, where)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
        raise ArtifactError(f"{where}: labels span {int(y.min())}..{int(y.max())}; {info.name} has classes "
                            f"0..{info.num_classes - 1}.")
    counts = torch.bincount(y, minlength=info.num_classes).tolist()
    if any(c != ipc for c in counts):
        missing = sum(c == 0 for c in counts)
        more = f", {missing} class(es) missing" if missing else ""
        raise ArtifactError(f"{where}: class counts {counts}{more}; --ipc {ipc} needs exactly {ipc} stored images "
                            f"for each of the {info.num_classes} classes.")
    _check_space(x, space, info, where)
    # ------------------------------------------------------------------ write (or not)
    order = torch.argsort(y, stable=True)  # class-major, as dbench stores distilled sets
    x, y = x[order], y[order]
    indices = got["indices"][order] if got["indices"] is not None else None
    sources = [{"path": str(p.resolve()), "file": p.name, "sha256": _sha256_file(p), "bytes": p.stat().st_size}
               for p in got["sources"]]
    synset = SyntheticSet(x, y, info.name, info.mean, info.std, space=space, decode=decode, indices=indices)
    from . import __version__

    manifest = {
        "format": MANIFEST_FORMAT, "name": name, "dataset": info.name, "ipc": ipc, "input_format": fmt,
        "exp": exp if fmt == "vico" else None, "sources": sources, "source_url": source_url, "paper": paper,
        "space": space, "normalization": {"mean": list(info.mean), "std": list(info.std)} if space == "normalized"
        else None, "zca": False, "decode": decode.to_dict(), "labels": label_kind, "n_stored": len(y),
        "n_train_images": synset.n_train_images, "per_class": counts, "shape": list(x.shape),
        "images_sha256": synset.sha256(),
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "dbench_version": __version__,
    }
    synset.meta = {"imported": {k: manifest[k] for k in ("name", "input_format", "sources", "source_url", "paper",
                                                         "space", "decode", "labels")}}
    path, man_path = import_paths(Path(store_root), name, info.name, ipc)
    if path.exists() or man_path.exists():
        old = json.loads(man_path.read_text()) if man_path.exists() else {}
        if old.get("images_sha256") == manifest["images_sha256"] and path.exists() \
                and old.get("decode") == manifest["decode"] and old.get("space") == space:
            return ImportResult(path, man_path, old, already=True)
        raise ConfigError(f"'{name}' is already imported for {info.name} ipc {ipc} with other content "
                          f"(sha256 {str(old.get('images_sha256', '?'))[:12]}); results in this store belong to "
                          "that set: choose another --method name.")
    from .store import atomic_write_text

    synset.save(path)
    atomic_write_text(man_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return ImportResult(path, man_path, manifest, already=False)


__all__ = ["FORMATS", "ImportedSet", "ImportResult", "ensure_registered", "import_paths", "import_set",
           "load_imported"]
