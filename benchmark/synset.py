"""Synthetic sets: what a method produces, how it is decoded for training, and its file format.

A synthetic set is stored as one ``.safetensors`` file: tensors ``images`` and ``labels``
(and ``indices`` for coreset selections), plus a JSON manifest in the safetensors metadata
(dataset, space, mean/std, decode, ipc, method, cell hash, sha256 of the images).
Writes are atomic (temp file + rename). ``.pt`` files are read with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .data import DatasetInfo, RealData
from .errors import ArtifactError

Space = Literal["normalized", "pixel", "zca"]


@dataclass
class Decode:
    """Multi-formation decode: each stored image is split into ``factor`` x ``factor`` patches,
    each upsampled (bilinear) back to full size, labels repeated factor**2 times."""

    factor: int = 1
    order: Literal["idc", "idm"] = "idc"  # idc: (0,0),(0,1),(1,0),(1,1); idm: TL, BL, TR, BR

    def to_dict(self) -> dict:
        return {"factor": self.factor, "order": self.order}


def multi_formation(images: torch.Tensor, labels: torch.Tensor, decode: Decode, pad_value: float = 0.5):
    f = decode.factor
    if f <= 1:
        return images, labels
    n, c, h, w = images.shape
    ph, pw = math.ceil(h / f), math.ceil(w / f)
    if ph * f != h or pw * f != w:
        images = F.pad(images, (0, pw * f - w, 0, ph * f - h), value=pad_value)
    coords = [(i, j) for i in range(f) for j in range(f)]
    if decode.order == "idm":
        coords = [(i, j) for j in range(f) for i in range(f)]
    patches = [images[:, :, i * ph : (i + 1) * ph, j * pw : (j + 1) * pw] for i, j in coords]
    out = torch.cat([F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False) for p in patches])
    return out, labels.repeat(f * f)


@dataclass
class SyntheticSet:
    images: torch.Tensor  # stored form [n, C, H, W] float32
    labels: torch.Tensor  # [n] int64 (class-major for distilled sets)
    dataset: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    space: Space = "normalized"
    decode: Decode = field(default_factory=Decode)
    meta: dict[str, Any] = field(default_factory=dict)
    indices: torch.Tensor | None = None  # for coreset selections: indices into the train split

    # ------------------------------------------------------------------ training view
    def training_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The tensors an evaluation network trains on: decoded and normalised."""
        x = self.images.float()
        if self.space == "pixel":
            mean = torch.tensor(self.mean).view(1, -1, 1, 1)
            std = torch.tensor(self.std).view(1, -1, 1, 1)
            x = (x.clamp(0, 1) - mean) / std
        elif self.space == "zca":
            raise ArtifactError("ZCA-space sets need the fitted ZCA transform; invert it before evaluation.")
        return multi_formation(x, self.labels, self.decode)

    def __len__(self) -> int:
        return self.labels.numel()

    @property
    def n_train_images(self) -> int:
        return len(self) * self.decode.factor**2

    def per_class(self) -> list[int]:
        return torch.bincount(self.labels.long()).tolist()

    def sha256(self) -> str:
        return hashlib.sha256(self.images.detach().cpu().contiguous().float().numpy().tobytes()).hexdigest()

    def manifest(self) -> dict[str, Any]:
        return {
            "format": "dbench.synset/1",
            "dataset": self.dataset,
            "mean": list(self.mean),
            "std": list(self.std),
            "space": self.space,
            "decode": self.decode.to_dict(),
            "n_stored": len(self),
            "n_train_images": self.n_train_images,
            "shape": list(self.images.shape),
            "images_sha256": self.sha256(),
            "meta": self.meta,
        }

    # -------------------------------------------------------------------- factories
    @classmethod
    def from_indices(cls, real: RealData, indices: torch.Tensor, meta: dict | None = None) -> SyntheticSet:
        x, y = real.batch(indices)
        return cls(x, y, real.info.name, real.info.mean, real.info.std, meta=dict(meta or {}), indices=indices.clone())

    # ------------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"images": self.images.detach().cpu().contiguous().float(),
                   "labels": self.labels.detach().cpu().long()}
        if self.indices is not None:
            tensors["indices"] = self.indices.cpu().long()
        from .claims import tmp_prefix
        from .store import write_error

        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=tmp_prefix(), suffix=".safetensors")
            os.close(fd)
            try:
                save_file(tensors, tmp, metadata={"dbench": json.dumps(self.manifest(), sort_keys=True)})
            except OSError:
                raise
            except Exception as e:  # noqa: BLE001 - safetensors reports I/O errors as its own type
                raise _as_oserror(e) from None
            os.replace(tmp, path)
        except OSError as e:
            raise write_error(path, e) from None
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, info: DatasetInfo | None = None) -> SyntheticSet:
        path = Path(path)
        if not path.exists():
            raise ArtifactError(f"{path}: no such file.")
        if path.suffix == ".pt" or path.suffix == ".pth":
            return _load_pt(path, info)
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except Exception as e:  # noqa: BLE001 - any parse failure is a corrupt file
            raise ArtifactError(f"{path}: not a readable safetensors synthetic set ({type(e).__name__}); "
                                f"{_corrupt_fix(path)}") from None
        if "images" not in tensors or "labels" not in tensors:
            raise ArtifactError(f"{path}: missing 'images'/'labels' tensors; {_corrupt_fix(path)}")
        try:
            man = json.loads(meta.get("dbench", "{}"))
            if not isinstance(man, dict):
                raise ValueError("not a JSON object")
            ds = man.get("dataset", info.name if info else "")
            s = cls(
                tensors["images"], tensors["labels"].long(), ds,
                tuple(man.get("mean", info.mean if info else ())), tuple(man.get("std", info.std if info else ())),
                man.get("space", "normalized"), Decode(**man.get("decode", {})), man.get("meta", {}),
                tensors.get("indices"),
            )
        except (ValueError, TypeError, AttributeError) as e:
            raise ArtifactError(f"{path}: its dbench manifest is not valid ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:80] if str(e) else ''}); {_corrupt_fix(path)}") from None
        if not man and info is None:
            raise ArtifactError(f"{path}: no dbench manifest; pass --dataset so the normalisation is known.")
        if man.get("images_sha256") and man["images_sha256"] != s.sha256():
            raise ArtifactError(f"{path}: image checksum mismatch (file corrupt or edited); {_corrupt_fix(path)}")
        if len(s) == 0:
            raise ArtifactError(f"{path}: the synthetic set holds no images; nothing can be evaluated on it.")
        if info is not None:
            _checked(s, info, path)
        return s

    def check(self, info: DatasetInfo) -> None:
        """Shape/label contract against a dataset."""
        x, y = self.images, self.labels
        if y.numel() == 0 or (x.ndim >= 1 and x.shape[0] == 0):
            raise ArtifactError(f"the synthetic set holds no images; nothing can be trained on it ({info.name}).")
        want = (info.channels, *info.im_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ArtifactError(f"synthetic images have shape {tuple(x.shape)}, "
                                f"expected [N, {', '.join(map(str, want))}] for {info.name}.")
        if y.ndim != 1 or y.numel() != x.shape[0]:
            raise ArtifactError(f"labels have shape {tuple(y.shape)}, expected [{x.shape[0]}].")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
            raise ArtifactError(f"labels must lie in [0, {info.num_classes - 1}] for {info.name}.")
        if not torch.isfinite(x).all():
            raise ArtifactError("synthetic images contain NaN or inf.")


def _corrupt_fix(path: Path) -> str:
    """What to do about a corrupt set file: a stored one (``<results>/synsets/``) is deleted
    and re-made by the next run; a file of the user's is re-exported."""
    if path.parent.name == "synsets":
        return f"delete {path} and rerun: the set is made again (its rows and other cells are kept)."
    return "re-export it (a dbench .safetensors, or a .pt holding images and labels)."


def _as_oserror(e: Exception) -> OSError:
    """safetensors' I/O failures (e.g. a full disk) as an OSError with an errno where known."""
    import errno

    text = str(e)
    for marker, code in (("No space left", errno.ENOSPC), ("Read-only file system", errno.EROFS),
                         ("Permission denied", errno.EACCES), ("quota", errno.EDQUOT)):
        if marker in text:
            return OSError(code, os.strerror(code))
    return OSError(errno.EIO, text.splitlines()[0][:120] if text else type(e).__name__)


def _load_pt(path: Path, info: DatasetInfo | None) -> SyntheticSet:
    """Import a ``.pt``: ``{'images','labels'}``, a (images, labels) pair, or a VICO
    ``res_*.pt`` (``{'data': [[images, labels], ...]}``, first experiment). Loaded with
    ``weights_only=True``; images are assumed normalised with the dataset's stats."""
    if info is None:
        raise ArtifactError(f"{path}: a .pt file carries no dataset; pass --dataset.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        reason = ("untrusted content (not plain tensors)" if "weights_only" in str(e) or "Unsupported" in str(e)
                  else type(e).__name__)
        raise ArtifactError(f"{path}: cannot load as a tensor file: {reason}. "
                            "Only plain tensor files are accepted.") from None
    images = labels = None
    if isinstance(obj, dict) and "images" in obj and "labels" in obj:
        images, labels = obj["images"], obj["labels"]
    elif isinstance(obj, dict) and "data" in obj and obj["data"]:
        images, labels = obj["data"][0][0], obj["data"][0][1]
    elif isinstance(obj, (list, tuple)) and len(obj) == 2:
        images, labels = obj
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ArtifactError(f"{path}: expected tensors 'images' and 'labels' (dict, pair or VICO res_*.pt).")
    if labels.ndim == 2:  # one-hot / soft labels -> hard labels
        labels = labels.argmax(1)
    s = SyntheticSet(images.float(), labels.long(), info.name, info.mean, info.std, meta={"imported_from": str(path)})
    return _checked(s, info, path)


def _checked(s: SyntheticSet, info: DatasetInfo, path: Path) -> SyntheticSet:
    try:
        s.check(info)
    except ArtifactError as e:
        raise ArtifactError(f"{path}: {e}") from None
    return s
