"""Datasets: a registry of canonical facts (channels, size, classes, mean/std) and loaders.

Real data is held once, as uint8 ``[N, C, H, W]`` with per-class index lists, and is
normalised per batch (:meth:`RealData.batch`), so memory stays at the raw size.

Where a dataset comes from, in order:

1. a data directory (``--data-dir`` / ``DBENCH_DATA_DIR``) holding either the ``.npz``
   layout of dbench's shared data (``mnist.npz``, ``cifar10_train_part{0..4}.npz`` …) or
   torchvision's on-disk layouts (``MNIST/raw``, ``cifar-10-batches-py``,
   ``cifar-100-python``, ``train_32x32.mat``, ``tiny-imagenet-200`` …);
2. Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``);
3. torchvision's downloader, when online (into the data directory or the user cache);
4. scikit-learn's bundled ``digits`` (the embedded offline default).

Any ``.npz`` (``npz:/path/file.npz``) or ImageFolder tree (``folder:/path`` with
``train/`` and ``test/``) can be used as a dataset too.

Loaded arrays are checked before anything runs, and a problem is one line naming the file:
unreadable or truncated files, images that are not 3-D/4-D, NaN/inf pixels, labels that
are strings, fractional, negative or outside the classes, classes without training images,
test labels never seen in training. Float pixels are accepted in [0, 1] or [0, 255]
(detected, or declared with a ``pixel_range`` array in the ``.npz``) and converted to
uint8 with a one-line note saying which; they are never truncated.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, DataNotFoundError, DbenchError, DbenchNote
from .registry import Registry

DSA_DEFAULT = "color_crop_cutout_flip_scale_rotate"
DSA_DIGITS = "color_crop_cutout_scale_rotate"  # no flips on digit datasets


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    display_name: str  # spelling used in reference_results.csv
    num_classes: int
    channels: int
    im_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str
    dsa_strategy: str = DSA_DEFAULT
    classes: tuple[str, ...] = ()
    is_digits: bool = False  # digit datasets: no flips, DC-aug on MNIST
    # training images per class in the canonical train split (() where unknown): an IPC
    # above the smallest is refused before any compute (:func:`check_ipc_fits`)
    class_sizes: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "channels": self.channels,
            "im_size": list(self.im_size),
            "mean": list(self.mean),
            "std": list(self.std),
        }


Loader = Callable[["DataSource", bool], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class DatasetEntry:
    info: DatasetInfo
    loader: Loader  # (source, train) -> (uint8 images [N,C,H,W] or [N,H,W], int labels [N])


DATASETS: Registry[DatasetEntry] = Registry("dataset")


@dataclass(frozen=True)
class DataSource:
    """Where to look for files, and whether downloading is allowed."""

    data_dir: Path | None = None
    download: bool = True

    @classmethod
    def from_env(cls, data_dir: str | os.PathLike | None = None, download: bool | None = None) -> DataSource:
        d = data_dir or os.environ.get("DBENCH_DATA_DIR") or None
        if download is None:
            download = os.environ.get("DBENCH_NO_DOWNLOAD", "") not in ("1", "true", "yes")
        return cls(Path(d).expanduser() if d else None, download)

    def roots(self) -> list[Path]:
        out = [self.data_dir] if self.data_dir else []
        return out + [Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dbench" / "data"]

    def download_root(self) -> Path:
        return self.roots()[0]


def register_dataset(info: DatasetInfo):
    def deco(loader: Loader) -> Loader:
        DATASETS.add(info.name, DatasetEntry(info, loader))
        return loader

    return deco


# --------------------------------------------------------------------------- real data


class RealData:
    """A class-indexed uint8 image set; batches are normalised on the way out."""

    def __init__(self, info: DatasetInfo, images: torch.Tensor, labels: torch.Tensor, split: str,
                 subset: str | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise DbenchError(f"{info.name}: expected uint8 [N,C,H,W] images, got {images.dtype} {tuple(images.shape)}")
        self.info, self.images, self.labels, self.split = info, images, labels.long(), split
        # which part of the split this is (e.g. 'classes=[26, 86]'), for caches keyed by the data
        self.subset = subset
        order = torch.argsort(self.labels, stable=True)
        counts = torch.bincount(self.labels, minlength=info.num_classes).tolist()
        self.class_indices: list[torch.Tensor] = list(torch.split(order, counts))
        self._mean = torch.tensor(info.mean).view(1, -1, 1, 1)
        self._std = torch.tensor(info.std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return self.labels.numel()

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def normalize(self, x: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        """uint8 -> float normalised with the dataset's canonical mean/std."""
        device = device or x.device
        x = x.to(device, non_blocking=True).float().div_(255.0)
        return x.sub_(self._mean.to(device)).div_(self._std.to(device))

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        return self.normalize(self.images[idx], device), self.labels[idx].to(device)

    def pixels(self, idx: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 -> float in [0, 1] (the IDC lineage's pixel space), not normalised."""
        return self.images[idx].to(device, non_blocking=True).float().div_(255.0)

    def images_of(self, c: int, n: int, generator: torch.Generator, device="cpu") -> torch.Tensor:
        """DC-style class sampler: a random permutation of class c, first n (whole class if n is larger)."""
        idx = self.class_indices[c]
        pick = idx[torch.randperm(idx.numel(), generator=generator)[:n]]
        return self.normalize(self.images[pick], device)

    def iter_batches(
        self, batch_size: int, device="cpu", generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.arange(len(self)) if generator is None else torch.randperm(len(self), generator=generator)
        for s in range(0, len(self), batch_size):
            yield self.batch(order[s : s + batch_size], device)

    def nbytes(self) -> int:
        return self.images.numel() * self.images.element_size()


def validation_split(real: RealData, per_class: int, seed: int, tag: str = "val"):
    """(train minus validation, validation, train indices, validation indices): ``per_class``
    images of every class held out, drawn with a generator seeded from ``seed``; no image is in
    both. The parts are named by ``tag``, seed and size (``subset``), so caches keyed by the data
    (a feature extractor) never serve one split's training part to another split."""
    g = torch.Generator().manual_seed(seed)
    val_idx, train_idx = [], []
    for c, idx in enumerate(real.class_indices):
        if idx.numel() <= per_class:
            raise DbenchError(f"{real.info.name}: class {c} has {idx.numel()} training images, too few to hold out "
                              f"validation_per_class={per_class}. Lower validation_per_class.")
        perm = idx[torch.randperm(idx.numel(), generator=g)]
        val_idx.append(perm[:per_class])
        train_idx.append(perm[per_class:])
    tr, va = torch.cat(train_idx).sort().values, torch.cat(val_idx).sort().values
    name = f"{tag}:seed={seed}:val={per_class}/class"
    return (RealData(real.info, real.images[tr], real.labels[tr], "train-minus-val", subset=f"{name}:train"),
            RealData(real.info, real.images[va], real.labels[va], "val", subset=f"{name}:val"), tr, va)

class RealSubset:
    """A training source that is a subset (or all) of a RealData; nothing is copied."""

    def __init__(self, real: RealData, indices: torch.Tensor | None = None):
        self.real = real
        self.indices = indices

    def __len__(self) -> int:
        return len(self.real) if self.indices is None else self.indices.numel()

    def batch(self, idx: torch.Tensor, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        return self.real.batch(idx if self.indices is None else self.indices[idx], device)


# ------------------------------------------------------------------------ loading API


class DataNote(DbenchNote):
    """How data was read where it could have been read otherwise (float pixel range); the
    CLI prints it as one 'note:' line."""


def check_ipc_fits(info: DatasetInfo, ipc: int, class_sizes: list[int] | tuple[int, ...] | None = None) -> None:
    """Refuse an IPC larger than a class (one line naming the dataset, the class and its
    size). ``class_sizes``: the loaded split's (default: the registry's canonical sizes)."""
    sizes = tuple(class_sizes) if class_sizes is not None else info.class_sizes
    if not sizes or ipc <= min(sizes):
        return
    c = min(range(len(sizes)), key=lambda i: (sizes[i], i))
    name = info.classes[c] if c < len(info.classes) and info.classes[c] != str(c) else ""
    raise ConfigError(f"ipc {ipc} is larger than class {c}{f' ({name})' if name else ''} of {info.name}, which has "
                      f"{sizes[c]} training images; use ipc <= {min(sizes)}.")


def _pixels_uint8(x: np.ndarray, where: str, declared: np.ndarray | None = None,
                  note_as: str | None = None) -> np.ndarray:
    """Images as uint8 0..255. uint8 passes; integers within 0..255 are cast; floats must be
    finite and in [0, 1] or [0, 255] (``declared`` [lo, hi] wins over detection) and are
    scaled and rounded, with a note. Anything else is refused, never truncated."""
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind in "iu":
        lo, hi = (int(x.min()), int(x.max())) if x.size else (0, 0)
        if lo < 0 or hi > 255:
            raise DataNotFoundError(f"{where}: integer pixels span {lo}..{hi}; give uint8 0..255 "
                                    "(or floats in [0, 1]).")
        return x.astype(np.uint8)
    if x.dtype.kind != "f":
        raise DataNotFoundError(f"{where}: images have dtype {x.dtype}; give uint8 0..255 or floats in [0, 1].")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
        raise DataNotFoundError(f"{where}: {bad} image(s) contain NaN or inf pixels; fix or drop them.")
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if declared is not None:
        d = np.asarray(declared, dtype=np.float64).reshape(-1)
        if d.size != 2 or not d[1] > d[0]:
            raise DataNotFoundError(f"{where}: pixel_range must be two numbers [low, high], got {d.tolist()}.")
        rlo, rhi, how = float(d[0]), float(d[1]), "declared by pixel_range"
    elif lo >= 0.0 and hi <= 1.0:
        rlo, rhi, how = 0.0, 1.0, "detected"
    elif lo >= 0.0 and hi <= 255.0:
        rlo, rhi, how = 0.0, 255.0, "detected"
    else:
        raise DataNotFoundError(f"{where}: float pixels span [{lo:.4g}, {hi:.4g}], neither [0, 1] nor [0, 255]; "
                                "rescale them or add a pixel_range array [low, high] to the .npz.")
    if lo < rlo or hi > rhi:
        raise DataNotFoundError(f"{where}: float pixels span [{lo:.4g}, {hi:.4g}], outside the declared pixel_range "
                                f"[{rlo:g}, {rhi:g}].")
    import warnings

    warnings.warn(f"{note_as or where}: float pixels read as range [{rlo:g}, {rhi:g}] ({how}), scaled to uint8 0..255.",
                  DataNote, stacklevel=2)
    return np.rint((x.astype(np.float64) - rlo) * (255.0 / (rhi - rlo))).astype(np.uint8)


def _int_labels(y: np.ndarray, where: str, num_images: int) -> np.ndarray:
    """Labels as int64 [N]: refused (one line) if strings, fractional, not one per image."""
    y = np.asarray(y)
    if y.dtype.kind in "USOb" or y.dtype.kind not in "iuf":
        sample = ", ".join(repr(v) for v in y.reshape(-1)[:3].tolist())
        raise DataNotFoundError(f"{where}: labels are {y.dtype} ({sample}, ...), not integer class indices; "
                                "store classes as integers 0..K-1.")
    if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
        raise DataNotFoundError(f"{where}: labels have shape {tuple(y.shape)}; give one integer label per image "
                                "(not one-hot).")
    y = y.reshape(-1)
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.array_equal(y, np.round(y)):
            raise DataNotFoundError(f"{where}: labels have fractional or NaN values; give integer class indices.")
    if y.shape[0] != num_images:
        raise DataNotFoundError(f"{where}: {num_images} images but {y.shape[0]} labels.")
    return y.astype(np.int64)


def _images_4d(x: np.ndarray, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise DataNotFoundError(f"{where}: images have shape {tuple(x.shape)} ({x.ndim}-D); give [N, H, W], "
                                "[N, H, W, C] or [N, C, H, W].")
    return _to_nchw(x)


def _to_nchw(x: np.ndarray) -> np.ndarray:
    """[N,H,W] or [N,H,W,C] (C in 1, 3) -> [N,C,H,W]; [N,C,H,W] passes through."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        return x.transpose(0, 3, 1, 2)
    return x


@lru_cache(maxsize=8)
def _load_cached(name: str, train: bool, source: DataSource) -> RealData:
    entry = get_dataset_entry(name)
    x, y = entry.loader(source, train)
    split = "train" if train else "test"
    user = name.startswith(("npz:", "folder:"))
    where = f"{name.partition(':')[2]} ({split})" if user else f"{name} ({split} split)"
    x = _images_4d(x, where)
    info = entry.info
    if x.shape[1:] != (info.channels, *info.im_size):
        raise DbenchError(
            f"{name}: loaded images have shape {x.shape[1:]}, expected "
            f"{(info.channels, *info.im_size)}. Check the files in the data directory."
        )
    if x.shape[0] == 0:
        raise DataNotFoundError(f"{where}: holds no images.")
    x = np.ascontiguousarray(_pixels_uint8(x, where))
    images = torch.from_numpy(x if x.flags.writeable else x.copy())
    y = _int_labels(y, where, images.shape[0])
    if y.size and (int(y.min()) < 0 or int(y.max()) >= info.num_classes):
        raise DataNotFoundError(f"{where}: labels span {int(y.min())}..{int(y.max())}, outside the {info.num_classes} "
                                f"classes 0..{info.num_classes - 1}.")
    return RealData(info, images, torch.from_numpy(y), split)


def load_dataset(name: str, train: bool = True, source: DataSource | None = None) -> RealData:
    """Load a registered dataset (or ``npz:PATH`` / ``folder:PATH``) split as RealData."""
    return _load_cached(name, train, source or DataSource.from_env())


def get_dataset_entry(name: str) -> DatasetEntry:
    if name.startswith(("npz:", "folder:")):
        return _custom_entry(name)
    return DATASETS.get(name)


def get_info(name: str) -> DatasetInfo:
    return get_dataset_entry(name).info


# --------------------------------------------------------------------------- readers


def npz_content_sha256(path: Path) -> str:
    """sha256 over arrays in sorted-key order: key + dtype + shape + raw C-order bytes."""
    h = hashlib.sha256()
    with np.load(path, allow_pickle=False) as z:
        for k in sorted(z.files):
            a = np.ascontiguousarray(z[k])
            h.update(k.encode())
            h.update(str(a.dtype).encode())
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
    return h.hexdigest()


# content hashes of the shared .npz files (see ../shared/data/PROVENANCE.md)
KNOWN_NPZ = {
    "mnist.npz": "9da677e8c284b1807785ea4e9cd36a5e13aab7f5543d6004689cd269718cf799",
    "fashion_mnist.npz": "e112e911fbcb42322146775aebdaecdc81b66d6035a4c4b9be191105b81bea89",
    "cifar10_train_part0.npz": "a48316d48d88460c22400489e04849efb306e07c47355f9dc993c67a7c5f309e",
    "cifar10_train_part1.npz": "ea47b84724347725e5149037841f2f8616a73c9be509713de57369f1218fa210",
    "cifar10_train_part2.npz": "d0bdd46857156993f6ce413456303bcac2790849373b40e74ece8972c77b5ee7",
    "cifar10_train_part3.npz": "238723d43d273b76ab8e7a08119b6a4f203946722c378cd2edad6cfc9ee7ff08",
    "cifar10_train_part4.npz": "eb2870022472d4cc17e646f3de3a89fd8194cce03c8fdf4bb23b029df01385a7",
    "cifar10_test.npz": "8bf1f29aeda07cd5149f8f73485a3e44b90cd42615e80791f0bcaeef04f1c7b4",
}


def _npz_problem(e: BaseException) -> str:
    """A short reason for an unreadable .npz (numpy/zipfile messages can be paragraphs)."""
    import zipfile
    import zlib

    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if "pickled" in text or "allow_pickle" in text:
        return "not an .npz archive"
    if isinstance(e, (EOFError, zipfile.BadZipFile, zlib.error)) or "truncated" in text.lower():
        return f"truncated or damaged: {text[:80] or type(e).__name__}"
    return f"{type(e).__name__}: {text[:100]}" if text else type(e).__name__


def _read_npz(path: Path, keys: tuple[str, str], verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    if path.is_dir():
        raise DataNotFoundError(f"{path}: is a folder, expected a .npz file.")
    if verify and path.name in KNOWN_NPZ and os.environ.get("DBENCH_VERIFY_DATA", "1") != "0":
        try:
            digest = _npz_hash_cached(str(path), path.stat().st_mtime_ns, path.stat().st_size)
        except Exception as e:  # noqa: BLE001 - truncated / garbage archives fail in many ways
            raise DataNotFoundError(f"{path}: unreadable .npz ({_npz_problem(e)}); "
                                    "replace it with a fresh copy.") from None
        if digest != KNOWN_NPZ[path.name]:
            raise DataNotFoundError(
                f"{path}: content checksum mismatch (corrupt or modified file). Replace it with a fresh copy."
            )
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                has = ", ".join(z.files) or "none"
                raise DataNotFoundError(f"{path}: no array {', '.join(missing)} (it has: {has}); "
                                        f"a dataset .npz holds {keys[0]} and {keys[1]}.")
            return z[keys[0]], z[keys[1]]
    except DataNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - BadZipFile, EOFError, zlib.error, ValueError, OSError ...
        raise DataNotFoundError(f"{path}: unreadable .npz ({_npz_problem(e)}); replace it with a fresh copy.") from None


@lru_cache(maxsize=32)
def _npz_hash_cached(path: str, mtime: int, size: int) -> str:
    return npz_content_sha256(Path(path))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST format), plain or gzip'd."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataNotFoundError(f"{path}: not a uint8 IDX file.")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).exists():
            return folder / name
    return None


def _read_mnist_dir(folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray] | None:
    pre = "train" if train else "t10k"
    xi, yi = _find_idx(folder, f"{pre}-images-idx3-ubyte"), _find_idx(folder, f"{pre}-labels-idx1-ubyte")
    if xi is None or yi is None:
        return None
    return read_idx(xi), read_idx(yi)


def _read_cifar_pickles(files: list[Path], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for f in files:
        with open(f, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")  # noqa: S301 - the CIFAR python format is a pickle
        xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(d[label_key]))
    return np.concatenate(xs), np.concatenate(ys)


def _missing(name: str, source: DataSource, expected: str) -> DataNotFoundError:
    where = f"DBENCH_DATA_DIR={source.data_dir}" if source.data_dir else "no data directory set"
    return DataNotFoundError(
        f"dataset '{name}' not found ({where}; download {'failed' if source.download else 'disabled'}). "
        f"Put {expected} in a folder and pass --data-dir (or set DBENCH_DATA_DIR)."
    )


def _tv_download(cls_name: str, root: Path, **kw) -> None:
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    getattr(tvd, cls_name)(str(root), download=True, **kw)


def _try_download(source: DataSource, cls_name: str, **kw) -> bool:
    if not source.download:
        return False
    try:
        _tv_download(cls_name, source.download_root(), **kw)
        return True
    except Exception:  # noqa: BLE001 - offline, DNS, HTTP errors: fall through to the clear error
        return False


def _mnist_like(name: str, npz: str, tv_cls: str, debian: Path | None):
    def load(source: DataSource, train: bool):
        split = "train" if train else "test"
        for root in source.roots():
            if (root / npz).exists():
                return _read_npz(root / npz, (f"x_{split}", f"y_{split}"))
            for sub in (root / tv_cls / "raw", root / tv_cls, root):
                got = _read_mnist_dir(sub, train)
                if got is not None:
                    return got
        if debian is not None and (got := _read_mnist_dir(debian, train)) is not None:
            return got
        if _try_download(source, tv_cls, train=train):
            got = _read_mnist_dir(source.download_root() / tv_cls / "raw", train)
            if got is not None:
                return got
        raise _missing(name, source, f"{npz} (or torchvision's {tv_cls}/raw IDX files)")

    return load


def _cifar_like(name: str, npz_prefix: str, folder: str, tv_cls: str, label_key: bytes, train_files, test_files):
    def load(source: DataSource, train: bool):
        for root in source.roots():
            if train and (root / f"{npz_prefix}_train_part0.npz").exists():
                parts = sorted(root.glob(f"{npz_prefix}_train_part*.npz"),
                               key=lambda p: int(p.stem.rsplit("part", 1)[1]))
                arrs = [_read_npz(p, ("x_train", "y_train")) for p in parts]
                return np.concatenate([a for a, _ in arrs]), np.concatenate([b for _, b in arrs])
            if not train and (root / f"{npz_prefix}_test.npz").exists():
                return _read_npz(root / f"{npz_prefix}_test.npz", ("x_test", "y_test"))
            if (root / f"{npz_prefix}.npz").exists():
                s = "train" if train else "test"
                return _read_npz(root / f"{npz_prefix}.npz", (f"x_{s}", f"y_{s}"))
            d = root / folder
            files = [d / f for f in (train_files if train else test_files)]
            if all(f.exists() for f in files):
                return _read_cifar_pickles(files, label_key)
        if _try_download(source, tv_cls, train=train):
            return _read_cifar_pickles(
                [source.download_root() / folder / f for f in (train_files if train else test_files)], label_key
            )
        raise _missing(name, source, f"{npz_prefix}_*.npz or torchvision's {folder}/")

    return load


def _svhn(source: DataSource, train: bool):
    from scipy.io import loadmat

    fname = "train_32x32.mat" if train else "test_32x32.mat"
    for root in source.roots():
        if (root / "svhn.npz").exists():
            s = "train" if train else "test"
            return _read_npz(root / "svhn.npz", (f"x_{s}", f"y_{s}"))
        for d in (root, root / "svhn", root / "SVHN"):
            if (d / fname).exists():
                m = loadmat(d / fname)
                x = np.transpose(m["X"], (3, 2, 0, 1))  # (32,32,3,N) -> (N,3,32,32)
                y = m["y"].reshape(-1).astype(np.int64)
                y[y == 10] = 0  # SVHN stores digit 0 as label 10
                return x, y
    if _try_download(source, "SVHN", split="train" if train else "test"):
        return _svhn(DataSource(source.download_root(), download=False), train)
    raise _missing("svhn", source, f"{fname} (torchvision's SVHN layout) or svhn.npz")


def read_tinyimagenet(folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Standard ``tiny-imagenet-200`` layout: wnids.txt, train/<wnid>/images/*.JPEG,
    val/images/*.JPEG + val/val_annotations.txt (the val split is the test split)."""
    from PIL import Image

    wnids = [w.strip() for w in (folder / "wnids.txt").read_text().split() if w.strip()]
    index = {w: i for i, w in enumerate(wnids)}
    paths, labels = [], []
    if train:
        for w in wnids:
            for p in sorted((folder / "train" / w / "images").glob("*.JPEG")):
                paths.append(p)
                labels.append(index[w])
    else:
        for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                paths.append(folder / "val" / "images" / parts[0])
                labels.append(index[parts[1]])
    x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((64, 64))) for p in paths])
    return x, np.asarray(labels)


def _tinyimagenet(source: DataSource, train: bool):
    for root in source.roots():
        if (root / "tinyimagenet.npz").exists():
            s = "train" if train else "test"
            return _read_npz(root / "tinyimagenet.npz", (f"x_{s}", f"y_{s}"))
        for d in (root / "tiny-imagenet-200", root):
            if (d / "wnids.txt").exists():
                return read_tinyimagenet(d, train)
    raise _missing("tinyimagenet", source, "the tiny-imagenet-200/ folder (wnids.txt, train/, val/)")


def _digits(source: DataSource, train: bool):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    y = d.target
    # fixed, documented split: every 4th sample of each class (in file order) is test
    test_mask = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        test_mask[idx[::4]] = True
    keep = ~test_mask if train else test_mask
    return x[keep], y[keep]


# ---------------------------------------------------------------------- registrations

_MNIST_CLASSES = tuple(str(i) for i in range(10))

register_dataset(
    DatasetInfo("mnist", "MNIST", 10, 1, (28, 28), (0.1307,), (0.3081,),
                "MNIST handwritten digits, 60k/10k, 28x28 grey",
                DSA_DIGITS, _MNIST_CLASSES, is_digits=True,
                class_sizes=(5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949))
)(_mnist_like("mnist", "mnist.npz", "MNIST", None))

register_dataset(
    DatasetInfo("fashion_mnist", "FashionMNIST", 10, 1, (28, 28), (0.2861,), (0.3530,),
                "Fashion-MNIST (Zalando), 60k/10k, 28x28 grey",
                DSA_DEFAULT, ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                              "Bag", "Ankle boot"), class_sizes=(6000,) * 10)
)(_mnist_like("fashion_mnist", "fashion_mnist.npz", "FashionMNIST", Path("/usr/share/datasets/fashion-mnist")))

_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
register_dataset(
    DatasetInfo("cifar10", "CIFAR-10", 10, 3, (32, 32), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010),
                "CIFAR-10, 50k/10k, 32x32 colour (DC-lineage std constants)", DSA_DEFAULT, _CIFAR10_CLASSES,
                class_sizes=(5000,) * 10)
)(_cifar_like("cifar10", "cifar10", "cifar-10-batches-py", "CIFAR10", b"labels",
              [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]))

register_dataset(
    DatasetInfo("cifar100", "CIFAR-100", 100, 3, (32, 32), (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762),
                "CIFAR-100, 50k/10k, 32x32 colour (its own stats, not CIFAR-10's)", class_sizes=(500,) * 100)
)(_cifar_like("cifar100", "cifar100", "cifar-100-python", "CIFAR100", b"fine_labels", ["train"], ["test"]))

register_dataset(
    DatasetInfo("svhn", "SVHN", 10, 3, (32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                "SVHN street-view digits, 73k/26k, 32x32 colour", DSA_DIGITS, _MNIST_CLASSES, is_digits=True,
                class_sizes=(4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659))
)(_svhn)

register_dataset(
    DatasetInfo("tinyimagenet", "TinyImageNet", 200, 3, (64, 64), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                "TinyImageNet-200, 100k/10k (val), 64x64 colour", class_sizes=(500,) * 200)
)(_tinyimagenet)

register_dataset(
    DatasetInfo("digits", "Digits", 10, 1, (8, 8), (0.3057,), (0.3762,),
                "scikit-learn's bundled UCI digits, 1343/454 fixed split, 8x8 grey (offline default)",
                DSA_DIGITS, _MNIST_CLASSES, is_digits=True,
                class_sizes=(133, 136, 132, 137, 135, 136, 135, 134, 130, 135))
)(_digits)


# ------------------------------------------------------------- user-pointed datasets


@lru_cache(maxsize=16)
def _custom_entry(spec: str) -> DatasetEntry:
    kind, _, path_s = spec.partition(":")
    path = Path(path_s).expanduser()
    if not path.exists():
        raise DataNotFoundError(f"{spec}: {path} does not exist.")
    if kind == "npz":
        if path.is_dir():
            raise DataNotFoundError(f"{spec}: {path} is a folder; npz: takes a .npz file "
                                    "(folder: takes an image tree).")

        def loader(source: DataSource, train: bool):
            s = "train" if train else "test"
            x, y = _read_npz(path, (f"x_{s}", f"y_{s}"), verify=False)
            declared = _npz_optional(path, "pixel_range")
            return _pixels_uint8(_images_4d(x, f"{path} (x_{s})"), f"{path} (x_{s})", declared, note_as=str(path)), y
        classes: tuple[str, ...] = ()
    else:
        if not path.is_dir():
            raise DataNotFoundError(f"{spec}: {path} is not a folder; folder: takes a tree train/<class>/*.png, "
                                    "test/<class>/*.png.")
        classes = tuple(_class_folders(path / "train"))

        def loader(source: DataSource, train: bool):
            return _read_image_folder(path / ("train" if train else "test"), list(classes))

    x, y = loader(DataSource(), True)
    where = f"{path} (train)"
    x = _pixels_uint8(_images_4d(x, where), where, note_as=str(path))
    y = _int_labels(y, where, x.shape[0])
    if x.shape[0] == 0:
        raise DataNotFoundError(f"{where}: holds no images.")
    if int(y.min()) < 0:
        raise DataNotFoundError(f"{where}: negative label {int(y.min())}; labels are class indices 0..K-1.")
    counts = np.bincount(y)
    empty = np.flatnonzero(counts == 0).tolist()
    if empty:
        raise DataNotFoundError(f"{where}: class(es) {', '.join(map(str, empty[:10]))} of 0..{len(counts) - 1} have no "
                                "training images; number the classes 0..K-1 without gaps.")
    xt, yt = loader(DataSource(), False)
    yt = _int_labels(yt, f"{path} (test)", np.asarray(xt).shape[0] if np.ndim(xt) else 0)
    unseen = sorted(set(np.unique(yt).tolist()) - set(range(len(counts))))
    if unseen:
        raise DataNotFoundError(f"{path} (test): label(s) {', '.join(map(str, unseen[:10]))} never occur in training "
                                f"(classes 0..{len(counts) - 1}).")
    xf = x.astype(np.float64) / 255.0
    mean = tuple(float(v) for v in xf.mean(axis=(0, 2, 3)))
    std = tuple(float(v) for v in xf.std(axis=(0, 2, 3)))
    if min(std) == 0.0:
        raise DataNotFoundError(f"{where}: every training pixel has the same value (std 0), nothing to learn from; "
                                "check the images.")
    info = DatasetInfo(spec, Path(path_s).stem, len(counts), x.shape[1], (x.shape[2], x.shape[3]), mean, std,
                       f"user data at {path} (mean/std computed from its train split)", classes=classes,
                       class_sizes=tuple(int(c) for c in counts))
    return DatasetEntry(info, loader)


def _npz_optional(path: Path, key: str) -> np.ndarray | None:
    with np.load(path, allow_pickle=False) as z:
        return z[key] if key in z.files else None


def _class_folders(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise DataNotFoundError(f"{folder}: missing; a folder: dataset holds train/ and test/, "
                                "one sub-folder per class.")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataNotFoundError(f"{folder}: expected one sub-folder per class.")
    return classes


def _read_image_folder(folder: Path, classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images of ``folder/<class>/``; labels index ``classes`` (the train split's class
    folders, so a test split uses the same numbering), default: the folder's own."""
    from PIL import Image, UnidentifiedImageError

    found = _class_folders(folder)
    classes = classes or found
    extra = sorted(set(found) - set(classes))
    if extra:
        raise DataNotFoundError(f"{folder}: class folder(s) {', '.join(extra[:5])} do not exist in train/; "
                                "every test class needs training images.")
    xs, ys = [], []
    for i, c in enumerate(classes):
        if not (folder / c).is_dir():
            continue
        for p in sorted((folder / c).iterdir()):
            if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"):
                try:
                    img = Image.open(p)
                    xs.append(np.asarray(img.convert("L" if img.mode in ("L", "1", "I") else "RGB")))
                except (OSError, UnidentifiedImageError, ValueError) as e:
                    raise DataNotFoundError(f"{p}: unreadable image ({type(e).__name__}); fix or remove it.") from None
                ys.append(i)
    if not xs:
        raise DataNotFoundError(f"{folder}: no .png/.jpg/.bmp images in its class folders.")
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        seen = ", ".join(map(str, sorted(shapes)[:3]))
        raise DataNotFoundError(f"{folder}: images differ in size or channels ({seen}); resize them to one size first.")
    return np.stack(xs), np.asarray(ys)


def with_stats(info: DatasetInfo, mean, std) -> DatasetInfo:
    return replace(info, mean=tuple(mean), std=tuple(std))


__all__ = [
    "DATASETS", "DataSource", "DatasetInfo", "RealData", "RealSubset", "load_dataset", "get_info",
    "register_dataset", "npz_content_sha256", "read_idx", "read_tinyimagenet", "check_ipc_fits", "DataNote",
]
