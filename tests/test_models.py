import pytest
import torch

from benchmark.data import get_info
from benchmark.errors import UnknownNameError
from benchmark.models import ARCHS, canonical_arch, create_model, num_params, strip_bn


@pytest.mark.parametrize("dataset,count", [("cifar10", 320_010), ("mnist", 317_706), ("cifar100", 504_420)])
def test_convnet_parameter_counts_match_reference(dataset, count):
    assert num_params(create_model("ConvNet", get_info(dataset))) == count


def test_convnet_feature_dim_and_blocks():
    m = create_model("ConvNet", get_info("cifar10"))
    x = torch.randn(2, 3, 32, 32)
    assert m.embed(x).shape == (2, 2048)
    outs = m.block_outputs(x)
    assert [o.shape[-1] for o in outs] == [16, 8, 4]
    assert isinstance(m.blocks[0][1], torch.nn.GroupNorm) and m.blocks[0][1].num_groups == 128


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_every_arch_forward_backward_and_embed(name):
    info = get_info("cifar10")
    m = create_model(name, info, torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = m(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert x.grad is not None
    assert m.embed(x).ndim == 2


def test_generator_init_is_deterministic_and_leaves_global_rng_alone():
    info = get_info("mnist")
    state = torch.random.get_rng_state()
    a = create_model("ConvNet", info, torch.Generator().manual_seed(3))
    torch.random.set_rng_state(state)
    b = create_model("ConvNet", info, torch.Generator().manual_seed(3))
    c = create_model("ConvNet", info, torch.Generator().manual_seed(4))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_names_aliases_and_errors():
    assert canonical_arch("convnet") == "ConvNet"
    assert canonical_arch("convnet3_bn") == "ConvNetBN"
    assert canonical_arch("ConvNetD4") == "ConvNetD4"
    assert strip_bn("ConvNetBN") == "ConvNet"
    with pytest.raises(UnknownNameError, match="Did you mean"):
        canonical_arch("ConvNett")


def test_timm_passthrough():
    pytest.importorskip("timm")
    m = create_model("timm:resnet18", get_info("cifar10"), torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 32, 32)
    assert m(x).shape == (2, 10) and m.embed(x).shape == (2, 512)


def test_idc_pool_architectures_match_their_definitions():
    """IDC/DREAM's ResNet-10 (32-channel stem, widths 32..256, one block per stage) and the
    narrow kuangliu DenseNet (growth 12: 24 -> 96/48 -> 192/96 -> 384/192 -> 384 channels)."""
    from benchmark.data import get_info
    from benchmark.models import EVAL_POOLS, create_model, num_params

    info = get_info("cifar10")
    x = torch.randn(2, 3, 32, 32)
    r10 = create_model("resnet10_bn", info, torch.Generator().manual_seed(0))
    assert r10.blocks[0][0].out_channels == 32 and r10.embed(x).shape == (2, 256)
    assert sum(len(stage) for stage in r10.blocks[1:]) == 4  # one BasicBlock per stage
    dn = create_model("DenseNet121_cifar_k12", info, torch.Generator().manual_seed(0))
    assert dn.embed(x).shape == (2, 384) and dn(x).shape == (2, 10)
    assert 0.9e6 < num_params(dn) < 1.1e6  # ~1.0M, not torchvision's 7M DenseNet-121
    mnist = get_info("mnist")
    for arch in {a for pool in EVAL_POOLS.values() for a in pool}:
        m = create_model(arch, mnist, torch.Generator().manual_seed(0))
        assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10), arch
