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
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
            root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnids[i % 2]}\t0\t0\t64\t64")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines))
    src = DataSource(tmp_path, download=False)
    tr, te = load_dataset("tinyimagenet", True, src), load_dataset("tinyimagenet", False, src)
    assert tr.images.shape == (6, 3, 64, 64) and te.labels.tolist() == [0, 1, 0, 1]


def test_user_npz_and_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "toy.npz", x_train=rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8),
             y_train=np.arange(8) % 2,
             x_test=rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8), y_test=np.arange(4) % 2)
    d = load_dataset(f"npz:{tmp_path / 'toy.npz'}")
    assert d.images.shape == (8, 3, 16, 16) and d.num_classes == 2
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (tmp_path / "imgs" / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(
                    tmp_path / "imgs" / split / c / f"{i}.png")
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


# ------------------------------------------------------------- checks on loaded arrays


def _toy_npz(path, **arrays):
    rng = np.random.default_rng(0)
    base = dict(x_train=rng.integers(0, 256, (12, 8, 8), dtype=np.uint8), y_train=np.arange(12) % 3,
                x_test=rng.integers(0, 256, (6, 8, 8), dtype=np.uint8), y_test=np.arange(6) % 3)
    np.savez(path, **{**base, **arrays})
    return f"npz:{path}"


def test_float_pixels_are_scaled_with_a_note_never_truncated(tmp_path):
    from benchmark.data import DataNote

    x = np.random.default_rng(1).random((12, 8, 8)).astype(np.float32)
    spec = _toy_npz(tmp_path / "unit.npz", x_train=x, x_test=x[:6])
    with pytest.warns(DataNote, match=r"range \[0, 1\] \(detected\)"):
        d = load_dataset(spec, True)
    assert torch.equal(d.images[:, 0], torch.from_numpy(np.rint(x * 255).astype(np.uint8)))
    x255 = x * 255
    spec = _toy_npz(tmp_path / "byte.npz", x_train=x255, x_test=x255[:6])
    with pytest.warns(DataNote, match=r"range \[0, 255\] \(detected\)"):
        assert torch.equal(load_dataset(spec, True).images[:, 0], torch.from_numpy(np.rint(x255).astype(np.uint8)))
    # a declared range wins over detection: these dark [0, 255] images stay dark
    dark = x * 2
    spec = _toy_npz(tmp_path / "dark.npz", x_train=dark, x_test=dark[:6], pixel_range=np.array([0.0, 255.0]))
    with pytest.warns(DataNote, match="declared by pixel_range"):
        assert int(load_dataset(spec, True).images.max()) <= 2


@pytest.mark.parametrize("arrays,match", [
    ({"x_train": np.full((12, 8, 8), np.inf, np.float32)}, "NaN or inf"),
    ({"x_train": np.full((12, 8, 8), 300, np.int32)}, "integer pixels span 300..300"),
    ({"x_train": np.full((12, 8, 8), 1.5, np.float32), "pixel_range": np.array([0.0, 1.0])}, "outside the declared"),
    ({"y_train": np.arange(12) % 3 + 0.5}, "fractional"),
    ({"y_train": np.eye(3)[np.arange(12) % 3]}, "not one-hot"),
    ({"y_train": np.arange(11) % 3}, "12 images but 11 labels"),
    ({"y_test": np.array([0, 1, 2, 3, 0, 1])}, "label\\(s\\) 3 never occur in training"),
    ({"y_train": np.array([0, 3] * 6)}, "class\\(es\\) 1, 2 of 0..3 have no training images"),
    ({"x_train": np.zeros((12, 8, 8), np.uint8)}, "same value"),
])
def test_user_npz_problems_are_one_line_naming_the_file(tmp_path, arrays, match):
    from benchmark.errors import DbenchError

    with pytest.raises(DbenchError, match=match) as e:
        load_dataset(_toy_npz(tmp_path / "user.npz", **arrays), True)
    assert "user.npz" in str(e.value) and "\n" not in str(e.value)


def test_registered_dataset_labels_outside_its_classes(tmp_path, monkeypatch):
    monkeypatch.setenv("DBENCH_VERIFY_DATA", "0")
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.array([3, 10]),
             x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.array([0, 1]))
    with pytest.raises(DataNotFoundError, match=r"mnist \(train split\): labels span 3..10, outside the 10 classes"):
        load_dataset("mnist", True, DataSource(tmp_path, download=False))


def test_image_folder_test_split_uses_the_train_numbering(tmp_path):
    from PIL import Image

    from benchmark.errors import DbenchError

    rng = np.random.default_rng(0)
    for split, classes in (("train", ("cat", "dog", "emu")), ("test", ("dog", "emu"))):
        for c in classes:
            (tmp_path / "imgs" / split / c).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 255, (6, 6), dtype=np.uint8)).save(tmp_path / "imgs" / split / c / "0.png")
    te = load_dataset(f"folder:{tmp_path / 'imgs'}", False)
    assert te.labels.tolist() == [1, 2] and te.info.classes == ("cat", "dog", "emu")  # not [0, 1]
    (tmp_path / "imgs" / "test" / "yak").mkdir()
    with pytest.raises(DbenchError, match="yak do not exist in train"):
        load_dataset(f"folder:{tmp_path / 'imgs'}", False, DataSource(tmp_path / "other"))


def test_registry_class_sizes_match_the_data(digits):
    from benchmark.data import check_ipc_fits
    from benchmark.errors import ConfigError

    tr, _ = digits
    assert list(tr.info.class_sizes) == [len(c) for c in tr.class_indices]
    assert all(len(get_info(n).class_sizes) == get_info(n).num_classes
               for n in ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "tinyimagenet", "digits"))
    check_ipc_fits(tr.info, 130)
    with pytest.raises(ConfigError, match=r"ipc 131 is larger than class 8 of digits, which has 130 training images"):
        check_ipc_fits(tr.info, 131)


@pytest.mark.data
def test_registry_class_sizes_match_real_mnist(shared_data):
    m = load_dataset("mnist", True, DataSource(shared_data, download=False))
    assert list(m.info.class_sizes) == [len(c) for c in m.class_indices]
