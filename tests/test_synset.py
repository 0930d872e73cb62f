
import pytest
import torch

from benchmark.data import get_info
from benchmark.errors import ArtifactError
from benchmark.synset import Decode, SyntheticSet, multi_formation


def _set(n_per=2, k=10):
    info = get_info("cifar10")
    x = torch.randn(n_per * k, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(k).repeat_interleave(n_per)
    return SyntheticSet(x, y, "cifar10", info.mean, info.std, meta={"method": "test"}), info


def test_roundtrip_with_manifest(tmp_path):
    s, info = _set()
    p = s.save(tmp_path / "a" / "set.safetensors")
    t = SyntheticSet.load(p, info)
    assert torch.equal(s.images, t.images) and torch.equal(s.labels, t.labels)
    assert t.manifest()["images_sha256"] == s.sha256() and t.meta == {"method": "test"}
    assert not [f for f in p.parent.iterdir() if f.name.startswith(".tmp")]


def test_corrupt_and_wrong_files_are_clear_errors(tmp_path):
    s, info = _set()
    p = s.save(tmp_path / "set.safetensors")
    raw = bytearray(p.read_bytes())
    raw[-50:] = b"\x00" * 50  # flip image bytes
    (tmp_path / "bad.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="checksum|readable"):
        SyntheticSet.load(tmp_path / "bad.safetensors", info)
    (tmp_path / "junk.safetensors").write_text("not a tensor file")
    with pytest.raises(ArtifactError, match="not a readable safetensors"):
        SyntheticSet.load(tmp_path / "junk.safetensors", info)
    with pytest.raises(ArtifactError, match="expected \\[N, 1, 28, 28\\]"):
        SyntheticSet.load(p, get_info("mnist"))


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pt_import_is_weights_only(tmp_path):
    info = get_info("cifar10")
    torch.save({"images": torch.zeros(10, 3, 32, 32), "labels": torch.arange(10)}, tmp_path / "ok.pt")
    assert len(SyntheticSet.load(tmp_path / "ok.pt", info)) == 10
    torch.save({"data": [[torch.zeros(10, 3, 32, 32), torch.arange(10)]], "accs_all_exps": {}},
               tmp_path / "res_vico.pt")
    assert len(SyntheticSet.load(tmp_path / "res_vico.pt", info)) == 10
    torch.save({"images": Evil(), "labels": torch.arange(10)}, tmp_path / "evil.pt")
    with pytest.raises(ArtifactError, match="cannot load as a tensor file"):
        SyntheticSet.load(tmp_path / "evil.pt", info)
    (tmp_path / "trunc.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ArtifactError):
        SyntheticSet.load(tmp_path / "trunc.pt", info)
    torch.save({"images": torch.zeros(10, 3, 16, 16), "labels": torch.arange(10)}, tmp_path / "shape.pt")
    with pytest.raises(ArtifactError, match="shape"):
        SyntheticSet.load(tmp_path / "shape.pt", info)


def test_multi_formation_layout():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    y = torch.tensor([0, 1])
    out, lab = multi_formation(x, y, Decode(2, "idc"))
    assert out.shape == (8, 1, 4, 4) and lab.tolist() == [0, 1] * 4
    # first block = top-left patches upsampled, second block = top-right (idc order)
    assert torch.allclose(out[0], torch.nn.functional.interpolate(x[:1, :, :2, :2], size=(4, 4), mode="bilinear"))
    assert torch.allclose(out[2], torch.nn.functional.interpolate(x[:1, :, :2, 2:], size=(4, 4), mode="bilinear"))
    out_idm, _ = multi_formation(x, y, Decode(2, "idm"))
    assert torch.allclose(out_idm[2], torch.nn.functional.interpolate(x[:1, :, 2:, :2], size=(4, 4), mode="bilinear"))


def test_pixel_space_is_normalised_for_training():
    info = get_info("mnist")
    s = SyntheticSet(torch.full((10, 1, 28, 28), 0.1307), torch.arange(10), "mnist", info.mean, info.std, space="pixel")
    x, _ = s.training_tensors()
    assert torch.allclose(x, torch.zeros_like(x), atol=1e-6)
