import pytest
import torch

from benchmark.errors import ConfigError
from benchmark.kmeans import kmeans, nearest_distinct
from benchmark.seed import make_generator


def blobs(n_per=30, k=4, d=8, seed=0, spread=0.1):
    g = make_generator(seed, "blobs")
    centers = torch.randn(k, d, generator=g) * 5
    x = centers.repeat_interleave(n_per, 0) + spread * torch.randn(k * n_per, d, generator=g)
    return x, torch.arange(k).repeat_interleave(n_per)


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_same_seed_same_init_and_assignment(init):
    x, _ = blobs()
    a = kmeans(x, 5, generator=make_generator(1, "k"), init=init, max_iter=1)
    b = kmeans(x, 5, generator=make_generator(1, "k"), init=init, max_iter=1)
    assert torch.equal(a.centers, b.centers) and torch.equal(a.labels, b.labels)
    full_a = kmeans(x, 5, generator=make_generator(1, "k"), init=init)
    full_b = kmeans(x, 5, generator=make_generator(1, "k"), init=init)
    assert torch.equal(full_a.centers, full_b.centers) and torch.equal(full_a.labels, full_b.labels)
    c = kmeans(x, 5, generator=make_generator(2, "k"), init=init, max_iter=1)
    assert not torch.equal(a.centers, c.centers)


def test_recovers_separated_blobs_and_assignment_is_nearest_centre():
    x, y = blobs()
    r = kmeans(x, 4, generator=make_generator(0, "k"))
    assert r.converged
    # each true blob maps to exactly one cluster
    for c in range(4):
        assert r.labels[y == c].unique().numel() == 1
    assert r.labels.unique().numel() == 4
    d = torch.cdist(x, r.centers)
    assert torch.equal(r.labels, d.argmin(1))
    assert torch.allclose(r.inertia, d.min(1).values.pow(2).sum(), rtol=1e-4)


def test_batched_and_masked():
    x1, _ = blobs(seed=1)
    x2, _ = blobs(seed=2)
    x = torch.stack([x1, x2])
    valid = torch.ones(2, x.shape[1], dtype=torch.bool)
    valid[1, -10:] = False
    r = kmeans(x, 4, generator=make_generator(0, "k"), valid=valid)
    assert r.centers.shape == (2, 4, 8) and r.labels.shape == (2, 120)
    assert bool((r.labels[1, -10:] == -1).all()) and bool((r.labels[0] >= 0).all())
    # masked points never move a centre: each centre is the mean of its valid members
    for j in range(4):
        m = r.labels[1] == j
        assert torch.allclose(r.centers[1, j], x[1][m].mean(0), atol=1e-4)


def test_kmeanspp_never_seeds_duplicates_and_random_init_distinct():
    x = torch.cat([torch.zeros(20, 3), torch.eye(3)])  # 20 identical points + 3 others
    r = kmeans(x, 4, generator=make_generator(0, "k"), max_iter=1)
    assert torch.unique(r.centers, dim=0).shape[0] == 4
    r2 = kmeans(torch.randn(50, 3, generator=make_generator(0, "x")), 50, generator=make_generator(0, "k"),
                init="random", max_iter=1)
    assert torch.unique(r2.centers, dim=0).shape[0] == 50


def test_nearest_distinct_and_errors():
    x = torch.tensor([[0.0], [1.0], [10.0]])
    assert nearest_distinct(x, torch.tensor([[0.1], [0.2]])).tolist() == [0, 1]
    with pytest.raises(ConfigError):
        kmeans(x, 4, generator=make_generator(0, "k"))
    with pytest.raises(ConfigError):
        kmeans(x, 2, generator=make_generator(0, "k"), init="bogus")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cpu_gpu_same_seeding():
    x, _ = blobs()
    a = kmeans(x, 4, generator=make_generator(0, "k"))
    b = kmeans(x.cuda(), 4, generator=make_generator(0, "k"))
    assert torch.equal(a.labels, b.labels.cpu())
