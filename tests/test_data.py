import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from benchmark.data import DataSource, get_info, load_dataset, npz_content_sha256, read_idx
from benchmark.errors import DataNotFoundError


def _write_idx(path, arr, gz=False):
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_canonical_stats():
    assert get_info("cifar10").std == (0.2023, 0.1994, 0.2010)
    assert get_info("cifar100").mean == (0.5071, 0.4866, 0.4409)
    assert get_info("mnist").mean == (0.1307,) and get_info("fashion_mnist").std == (0.3530,)
    assert get_info("tinyimagenet").im_size == (64, 64)


def test_digits_offline_split_and_stats(digits):
    tr, te = digits
    assert tr.images.dtype == torch.uint8 and tr.images.shape[1:] == (1, 8, 8)
    assert len(tr) + len(te) == 1797 and len(te) == 454
    x = tr.images.float() / 255
    assert abs(x.mean().item() - tr.info.mean[0]) < 1e-3 and abs(x.std().item() - tr.info.std[0]) < 1e-3
    assert [len(c) for c in tr.class_indices] == torch.bincount(tr.labels).tolist()
    xb, yb = tr.batch(torch.arange(5))
    assert xb.dtype == torch.float32 and torch.allclose(xb, (tr.images[:5].float() / 255 - 0.3057) / 0.3762)


def test_mnist_idx_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    x = np.random.default_rng(0).integers(0, 255, (20, 28, 28))
    y = np.arange(20) % 10
    _write_idx(raw / "train-images-idx3-ubyte", x)
    _write_idx(raw / "train-labels-idx1-ubyte.gz", y, gz=True)
    assert read_idx(raw / "train-labels-idx1-ubyte.gz").tolist() == y.tolist()
    d = load_dataset("mnist", True, DataSource(tmp_path, download=False))
    assert d.images.shape == (20, 1, 28, 28) and torch.equal(d.labels, torch.from_numpy(y))


def test_cifar100_pickle_layout(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 10)):
        d = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"fine_labels": list(range(n))}
        pickle.dump(d, open(folder / split, "wb"))
    tr = load_dataset("cifar100", True, DataSource(tmp_path, download=False))
    te = load_dataset("cifar100", False, DataSource(tmp_path, download=False))
    assert tr.images.shape == (30, 3, 32, 32) and len(te) == 10 and tr.num_classes == 100
    assert tr.info.mean == (0.5071, 0.4866, 0.4409)  # its own stats, never CIFAR-10's


def test_svhn_mat_layout(tmp_path):
    from scipy.io import savemat

    x = np.random.default_rng(0).integers(0, 255, (32, 32, 3, 12)).astype(np.uint8)
    y = np.array([[10], [1], [2], [3], [4], [5], [6], [7], [8], [9], [10], [1]])
    savemat(tmp_path / "train_32x32.mat", {"X": x, "y": y})
    d = load_dataset("svhn", True, DataSource(tmp_path, download=False))
    assert d.images.shape == (12, 3, 32, 32)
    assert d.labels[0] == 0 and d.labels[1] == 1  # label 10 means digit 0
    assert torch.equal(d.images[3], torch.from_numpy(x[..., 3].transpose(2, 0, 1)))


def test_tinyimagenet_folder_layout(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    (root).mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids))
    rng = np.random.default_rng(0)
    for w in wnids:
        d = root / "train" / w / "images"
        d.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / f"{w}_{i}.JPEG")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnids[i % 2]}\t0\t0\t64\t64")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines))
    src = DataSource(tmp_path, download=False)
    tr, te = load_dataset("tinyimagenet", True, src), load_dataset("tinyimagenet", False, src)
    assert tr.images.shape == (6, 3, 64, 64) and te.labels.tolist() == [0, 1, 0, 1]


def test_user_npz_and_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "toy.npz", x_train=rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8), y_train=np.arange(8) % 2,
             x_test=rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8), y_test=np.arange(4) % 2)
    d = load_dataset(f"npz:{tmp_path / 'toy.npz'}")
    assert d.images.shape == (8, 3, 16, 16) and d.num_classes == 2
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (tmp_path / "imgs" / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "imgs" / split / c / f"{i}.png")
    f = load_dataset(f"folder:{tmp_path / 'imgs'}", False)
    assert f.images.shape == (4, 3, 12, 12) and f.labels.tolist() == [0, 0, 1, 1]


def test_missing_data_is_one_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="DBENCH_DATA_DIR") as e:
        load_dataset("cifar10", True, DataSource(tmp_path / "empty", download=False))
    assert "\n" not in str(e.value)


def test_corrupt_known_npz_detected(tmp_path):
    np.savez_compressed(tmp_path / "mnist.npz", x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(2, np.uint8),
                        x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.zeros(2, np.uint8))
    with pytest.raises(DataNotFoundError, match="checksum mismatch"):
        load_dataset("mnist", True, DataSource(tmp_path, download=False))


@pytest.mark.data
def test_real_mnist_and_cifar10(shared_data):
    src = DataSource(shared_data, download=False)
    m = load_dataset("mnist", True, src)
    assert m.images.shape == (60000, 1, 28, 28) and m.labels[:5].tolist() == [5, 0, 4, 1, 9]
    c = load_dataset("cifar10", True, src)
    assert c.images.shape == (50000, 3, 32, 32) and [len(i) for i in c.class_indices] == [5000] * 10
    assert c.nbytes() == 50000 * 3072  # held once as uint8 (~150 MB)
    t = load_dataset("cifar10", False, src)
    assert t.labels[:5].tolist() == [3, 8, 8, 0, 6]
    assert npz_content_sha256(shared_data / "cifar10_test.npz").startswith("8bf1f29a")


def test_fashion_mnist_from_debian_package(tmp_path):
    """`apt-get install dataset-fashion-mnist` puts the IDX .gz files where dbench looks."""
    from pathlib import Path

    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    d = load_dataset("fashion_mnist", False, DataSource(tmp_path / "empty", download=False))
    assert d.images.shape == (10000, 1, 28, 28) and [len(c) for c in d.class_indices] == [1000] * 10
