"""Networks used for distillation and evaluation (DC-lineage definitions for 32-px data).

Every model exposes one feature surface:

* ``embed(x)``: the flattened pre-classifier feature (what DM, herding and k-center use);
* ``block_outputs(x)``: the output of every feature block (attention matching, DREAM);
* ``classifier``: the final linear layer.

Names follow the reference ``get_network`` (``ConvNet``, ``ConvNetD4``, ``ConvNetBN``,
``AlexNetBN``, ``ResNet18BN_AP`` …); lookups are case-insensitive and ``timm:<name>``
passes through to timm when it is installed. Parameters are initialised from an explicit
``torch.Generator`` (:func:`init_parameters`), never from the global RNG, with the init scheme
of each architecture's reference code (:attr:`ArchSpec.init`): PyTorch's defaults for the
VICO-UoE networks (ConvNet, MLP, LeNet, AlexNet, VGG, ResNet-18 variants: no custom init) and
kuangliu's ``densenet_cifar``; Kaiming-normal (fan-out, ReLU) convolutions for IDC's ResNet-10
(snu-mllab/Efficient-Dataset-Condensation@ceac95a ``models/resnet.py``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import DatasetInfo
from .errors import UnknownNameError


class FeatureNet(nn.Module):
    """Base: ``features`` is a list of blocks, ``classifier`` maps ``embed`` to logits."""

    blocks: nn.ModuleList
    classifier: nn.Module

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for b in self.blocks:
            x = b(x)
            outs.append(x)
        return outs

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return torch.flatten(self.pool_out(x), 1)

    def pool_out(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def make_norm(norm: str, c: int, hw: tuple[int, int]) -> nn.Module:
    if norm == "instancenorm":  # DC-lineage "instancenorm" is GroupNorm(C, C) with affine
        return nn.GroupNorm(c, c, affine=True)
    if norm == "batchnorm":
        return nn.BatchNorm2d(c)
    if norm == "layernorm":
        return nn.LayerNorm([c, *hw], elementwise_affine=True)
    if norm == "groupnorm":
        return nn.GroupNorm(4, c, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}")


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


ACTS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "sigmoid": nn.Sigmoid,
    "leakyrelu": lambda: nn.LeakyReLU(0.01),
    "swish": Swish,
}


class ConvNet(FeatureNet):
    """depth x [conv3x3(width) -> norm -> act -> pool] -> linear (DC-lineage ConvNet)."""

    def __init__(self, channels: int, num_classes: int, im_size: tuple[int, int], width: int = 128, depth: int = 3,
                 act: str = "relu", norm: str = "instancenorm", pooling: str = "avgpooling"):
        super().__init__()
        blocks = []
        c_in, (h, w) = channels, im_size
        if channels == 1:  # first conv padded by 3: 28 px behaves as 32 px
            h, w = h + 4, w + 4
        for d in range(depth):
            layers: list[nn.Module] = [
                nn.Conv2d(c_in, width, 3, padding=3 if (channels == 1 and d == 0) else 1),
                make_norm(norm, width, (h, w)),
                ACTS[act](),
            ]
            if pooling == "avgpooling":
                layers.append(nn.AvgPool2d(2, 2))
                h, w = h // 2, w // 2
            elif pooling == "maxpooling":
                layers.append(nn.MaxPool2d(2, 2))
                h, w = h // 2, w // 2
            blocks.append(nn.Sequential(*layers))
            c_in = width
        self.blocks = nn.ModuleList(blocks)
        self.feat_dim = width * h * w
        self.classifier = nn.Linear(self.feat_dim, num_classes)


class MLP(FeatureNet):
    def __init__(self, channels: int, num_classes: int, im_size: tuple[int, int]):
        super().__init__()
        d = channels * im_size[0] * im_size[1]
        # DC's MLP assumes 28x28 for 1-channel data; we use the true input size.
        self.blocks = nn.ModuleList([nn.Sequential(nn.Flatten(), nn.Linear(d, 128), nn.ReLU(inplace=True)),
                                     nn.Sequential(nn.Linear(128, 128), nn.ReLU(inplace=True))])
        self.classifier = nn.Linear(128, num_classes)


class LeNet(FeatureNet):
    def __init__(self, channels: int, num_classes: int, im_size: tuple[int, int]):
        super().__init__()
        pad = 2 if channels == 1 else 0
        h = ((im_size[0] + 2 * pad - 4) // 2 - 4) // 2
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.Conv2d(channels, 6, 5, padding=pad), nn.ReLU(inplace=True), nn.MaxPool2d(2)),
            nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2)),
            nn.Sequential(nn.Flatten(), nn.Linear(16 * h * h, 120), nn.ReLU(inplace=True),
                          nn.Linear(120, 84), nn.ReLU(inplace=True)),
        ])
        self.classifier = nn.Linear(84, num_classes)


class AlexNet(FeatureNet):
    def __init__(self, channels: int, num_classes: int, im_size: tuple[int, int], bn: bool = False):
        super().__init__()

        def conv(ci, co, k, p):
            return [nn.Conv2d(ci, co, k, padding=p)] + ([nn.BatchNorm2d(co)] if bn else []) + [nn.ReLU(inplace=True)]

        self.blocks = nn.ModuleList([
            nn.Sequential(*conv(channels, 128, 5, 4 if channels == 1 else 2), nn.MaxPool2d(2)),
            nn.Sequential(*conv(128, 192, 5, 2), nn.MaxPool2d(2)),
            nn.Sequential(*conv(192, 256, 3, 1), *conv(256, 192, 3, 1), *conv(192, 192, 3, 1), nn.MaxPool2d(2)),
        ])
        h = (im_size[0] + (8 if channels == 1 else 4) - 4) // 8
        self.classifier = nn.Linear(192 * h * h, num_classes)


class VGG11(FeatureNet):
    CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, channels: int, num_classes: int, im_size: tuple[int, int], norm: str = "instancenorm"):
        super().__init__()
        blocks, cur, c_in, first = [], [], channels, True
        h = im_size[0] + (4 if channels == 1 else 0)
        for v in self.CFG:
            if v == "M":
                cur.append(nn.MaxPool2d(2, 2))
                blocks.append(nn.Sequential(*cur))
                cur, h = [], h // 2
            else:
                cur += [nn.Conv2d(c_in, v, 3, padding=3 if (channels == 1 and first) else 1),
                        make_norm(norm, v, (h, h)), nn.ReLU(inplace=True)]
                c_in, first = v, False
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(512 * max(h, 1) * max(h, 1), num_classes)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c: int, stride: int, norm: str, ap: bool = False):
        super().__init__()
        s = 1 if ap else stride
        self.conv1 = nn.Conv2d(c_in, c, 3, stride=s, padding=1, bias=False)
        self.bn1 = make_norm(norm, c, (1, 1))
        self.conv2 = nn.Conv2d(c, c, 3, stride=1, padding=1, bias=False)
        self.bn2 = make_norm(norm, c, (1, 1))
        self.pool = nn.AvgPool2d(2, 2) if (ap and stride != 1) else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c, 1, stride=s, bias=False)]
            if ap and stride != 1:
                layers.append(nn.AvgPool2d(2, 2))
            layers.append(make_norm(norm, c, (1, 1)))
            self.shortcut = nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.pool(out)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(FeatureNet):
    """CIFAR ResNet (3x3 stride-1 stem). ``ap=True`` gives ResNet18BN_AP (avg-pool downsampling);
    ``widths=(32, 64, 128, 256)`` with one block per stage is IDC/DREAM's ResNet-10."""

    def __init__(self, channels: int, num_classes: int, im_size: tuple[int, int], layers=(2, 2, 2, 2),
                 norm: str = "instancenorm", ap: bool = False, widths=(64, 128, 256, 512)):
        super().__init__()
        w0 = widths[0]
        stem = [nn.Conv2d(channels, w0, 3, stride=1, padding=1, bias=False), make_norm(norm, w0, (1, 1)),
                nn.ReLU(inplace=True)]
        blocks: list[nn.Module] = [nn.Sequential(*stem)]
        c_in = w0
        for i, (c, n) in enumerate(zip(widths, layers)):
            stage = []
            for j in range(n):
                stride = (1 if i == 0 else 2) if j == 0 else 1
                stage.append(BasicBlock(c_in, c, stride, norm, ap))
                c_in = c
            blocks.append(nn.Sequential(*stage))
        self.blocks = nn.ModuleList(blocks)
        self.ap = ap
        h = im_size[0] // 8
        self.classifier = nn.Linear(widths[-1] * h * h if ap else widths[-1], num_classes)

    def pool_out(self, x):
        return x if self.ap else F.adaptive_avg_pool2d(x, 1)


class _DenseLayer(nn.Module):
    """Bottleneck: BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k), output concatenated to the input."""

    def __init__(self, c_in: int, growth: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, 4 * growth, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(4 * growth), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class DenseNetCifar(FeatureNet):
    """kuangliu ``densenet_cifar`` as used by IDC/DREAM under the name DenseNet-121: bottleneck
    blocks [6, 12, 24, 16], growth rate 12, compression 0.5, 3x3 stem to 24 channels, BatchNorm,
    global average pool (= avg-pool 4 at 32 px). Much narrower than torchvision's DenseNet-121."""

    def __init__(self, channels: int, num_classes: int, im_size: tuple[int, int], layers=(6, 12, 24, 16),
                 growth: int = 12, reduction: float = 0.5):
        super().__init__()
        c = 2 * growth
        blocks: list[nn.Module] = [nn.Conv2d(channels, c, 3, padding=1, bias=False)]
        for i, n in enumerate(layers):
            stage: list[nn.Module] = []
            for _ in range(n):
                stage.append(_DenseLayer(c, growth))
                c += growth
            if i < len(layers) - 1:
                out = int(math.floor(c * reduction))
                stage += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, out, 1, bias=False), nn.AvgPool2d(2)]
                c = out
            else:
                stage += [nn.BatchNorm2d(c), nn.ReLU()]
            blocks.append(nn.Sequential(*stage))
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(c, num_classes)

    def pool_out(self, x):
        return F.adaptive_avg_pool2d(x, 1)


class TimmNet(FeatureNet):
    def __init__(self, name: str, channels: int, num_classes: int):
        super().__init__()
        try:
            import timm
        except ImportError:
            raise UnknownNameError("arch", f"timm:{name}",
                                   ["(install the `timm` extra: pip install 'dbench[timm]')"]) from None
        self.net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=channels)
        self.blocks = nn.ModuleList()
        self.classifier = self.net.get_classifier()

    def embed(self, x):
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

    def block_outputs(self, x):
        return [self.net.forward_features(x)]

    def forward(self, x):
        return self.net(x)


# --------------------------------------------------------------------------- registry


INIT_SCHEMES = ("torch_default", "kaiming_fan_out")


@dataclass(frozen=True)
class ArchSpec:
    name: str
    display_name: str
    description: str
    build: Callable[[int, int, tuple[int, int]], nn.Module]  # (channels, num_classes, im_size)
    # the reference code's init: "torch_default" (no custom init in VICO-UoE networks.py or
    # kuangliu densenet) or "kaiming_fan_out" (IDC models/resnet.py: conv ~ N(0, 2 / (k*k*out)))
    init: str = "torch_default"
    # bumped when a change alters the numbers a network gives (its init, its layers): part of
    # every cell/set identity from version 2 on, so finished cells of the old net are not reused
    version: int = 1


ARCHS: dict[str, ArchSpec] = {}


def _reg(name: str, display: str, desc: str, build, init: str = "torch_default", version: int = 1):
    if init not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {init!r}")
    ARCHS[name] = ArchSpec(name, display, desc, build, init, version)


def arch_identity(name: str) -> str:
    """What a cell hash records of an architecture: its name, plus ``@v<k>`` once its numbers
    changed (version 1 hashes as the bare name, so older cells keep their hashes)."""
    if name.startswith(("timm:", NAS_PREFIX)):
        return name
    v = ARCHS[canonical_arch(name)].version
    return name if v == 1 else f"{name}@v{v}"


def _convnet(**kw):
    return lambda ch, k, hw: ConvNet(ch, k, hw, **kw)


# NAS search-space candidates (benchmark.nas): ``nas:D<depth>_W<width>_<act>_<norm>_<pool>``, e.g.
# ``nas:D3_W128_relu_instancenorm_avg`` (= ConvNet), a ConvNet built on demand, never listed in ARCHS
NAS_PREFIX = "nas:"
NAS_POOLING = {"none": "none", "max": "maxpooling", "avg": "avgpooling"}
NAS_NORMS = ("none", "batchnorm", "layernorm", "instancenorm", "groupnorm")


def nas_convnet_kwargs(name: str) -> dict:
    """ConvNet keyword arguments of a ``nas:`` candidate name (ValueError if it is not one)."""
    parts = name.removeprefix(NAS_PREFIX).split("_")
    try:
        d, w, act, norm, pool = parts
        kw = {"depth": int(d.removeprefix("D")), "width": int(w.removeprefix("W")), "act": act, "norm": norm,
              "pooling": NAS_POOLING[pool]}
        ok = d.startswith("D") and w.startswith("W") and kw["depth"] >= 1 and kw["width"] >= 1
    except (ValueError, KeyError):
        ok = False
    if not ok or act not in ACTS or norm not in NAS_NORMS:
        raise UnknownNameError("arch", name, ["nas:D<depth>_W<width>_<relu|sigmoid|leakyrelu>_<norm>_<none|max|avg>"],
                               hint="`dbench nas` candidate ids look like nas:D3_W128_relu_instancenorm_avg")
    return kw


_reg("ConvNet", "ConvNet-3", "ConvNet-3: 3x[conv128-instancenorm-relu-avgpool] + linear (the default)", _convnet())
for _d in (1, 2, 3, 4, 5):
    _reg(f"ConvNetD{_d}", f"ConvNet-{_d}", f"ConvNet of depth {_d}", _convnet(depth=_d))
    _reg(f"ConvNetD{_d}BN", f"ConvNet-{_d}-BN", f"ConvNet of depth {_d} with BatchNorm",
         _convnet(depth=_d, norm="batchnorm"))
for _w in (32, 64, 128, 256):
    _reg(f"ConvNetW{_w}", f"ConvNet-3-W{_w}", f"ConvNet of width {_w}", _convnet(width=_w))
for _tag, _act in (("AS", "sigmoid"), ("AR", "relu"), ("AL", "leakyrelu"), ("ASwish", "swish")):
    _reg(f"ConvNet{_tag}", f"ConvNet-3-{_act}", f"ConvNet with {_act} activation", _convnet(act=_act))
_reg("ConvNetASwishBN", "ConvNet-3-swish-BN", "ConvNet with swish and BatchNorm",
     _convnet(act="swish", norm="batchnorm"))
for _tag, _norm in (("NN", "none"), ("BN", "batchnorm"), ("LN", "layernorm"), ("IN", "instancenorm"),
                    ("GN", "groupnorm")):
    _disp = {"BN": "ConvNet-3-BN", "IN": "ConvNet-3"}.get(_tag, f"ConvNet-3-{_tag}")
    _reg(f"ConvNet{_tag}", _disp, f"ConvNet with {_norm}", _convnet(norm=_norm))
for _tag, _pool in (("NP", "none"), ("MP", "maxpooling"), ("AP", "avgpooling")):
    _reg(f"ConvNet{_tag}", f"ConvNet-3-{_tag}", f"ConvNet with {_pool}", _convnet(pooling=_pool))
_reg("MLP", "MLP", "MLP: input -> 128 -> 128 -> classes (ReLU)", lambda ch, k, hw: MLP(ch, k, hw))
_reg("LeNet", "LeNet", "LeNet-5 (DC variant)", lambda ch, k, hw: LeNet(ch, k, hw))
_reg("AlexNet", "AlexNet", "AlexNet, DC variant for 32 px", lambda ch, k, hw: AlexNet(ch, k, hw))
_reg("AlexNetBN", "AlexNet-BN", "AlexNet with BatchNorm", lambda ch, k, hw: AlexNet(ch, k, hw, bn=True))
_reg("VGG11", "VGG-11", "VGG-11 with instancenorm (GroupNorm(C,C))", lambda ch, k, hw: VGG11(ch, k, hw))
_reg("VGG11BN", "VGG-11-BN", "VGG-11 with BatchNorm", lambda ch, k, hw: VGG11(ch, k, hw, norm="batchnorm"))
_reg("ResNet18", "ResNet-18", "CIFAR ResNet-18 with instancenorm", lambda ch, k, hw: ResNet(ch, k, hw))
_reg("ResNet18BN", "ResNet-18-BN", "CIFAR ResNet-18 with BatchNorm",
     lambda ch, k, hw: ResNet(ch, k, hw, norm="batchnorm"))
_reg("ResNet18BN_AP", "ResNet-18-BN-AP", "ResNet-18-BN with avg-pool downsampling (DC variant)",
     lambda ch, k, hw: ResNet(ch, k, hw, norm="batchnorm", ap=True))
_reg("ResNet18_AP", "ResNet-18-AP", "ResNet-18 (instancenorm) with avg-pool downsampling (MTT/IDM eval pool)",
     lambda ch, k, hw: ResNet(ch, k, hw, ap=True))
_reg("ResNet10BN", "ResNet-10-BN", "IDC/DREAM ResNet-10: 32-channel stem, widths 32/64/128/256, one BasicBlock per "
     "stage, BatchNorm, Kaiming-normal (fan-out) convs as IDC's models/resnet.py",
     lambda ch, k, hw: ResNet(ch, k, hw, (1, 1, 1, 1), "batchnorm", widths=(32, 64, 128, 256)), init="kaiming_fan_out",
     version=2)  # v2: IDC's init (v1 had PyTorch's default)
_reg("DenseNet121_cifar_k12", "DenseNet-121 (CIFAR, k=12)", "IDC/DREAM 'DenseNet-121': kuangliu densenet_cifar, "
     "growth 12, blocks 6/12/24/16, BatchNorm", lambda ch, k, hw: DenseNetCifar(ch, k, hw))

# Named evaluation pools (grids: eval_archs: [pool:dc]); each codebase's own, never mixed.
EVAL_POOLS: dict[str, tuple[str, ...]] = {
    "dc": ("MLP", "ConvNet", "LeNet", "AlexNet", "VGG11", "ResNet18"),  # DC/DSA eval_mode=M (instancenorm variants)
    "dm_bn": ("ConvNetBN", "ConvNetASwishBN", "AlexNetBN", "VGG11BN", "ResNet18BN"),  # DM eval_mode=B
    "mtt": ("ConvNet", "AlexNet", "VGG11", "ResNet18_AP", "ResNet18"),  # MTT / IDM eval_mode=M
    "idc": ("ConvNet", "ResNet10BN", "DenseNet121_cifar_k12"),  # IDC / DREAM / DREAM+ (CIFAR)
}

_LOWER = {k.lower(): k for k in ARCHS}
_LOWER.update({"convnet3": "ConvNet", "convnet3_bn": "ConvNetBN", "convnet4": "ConvNetD4",
               "convnet4_bn": "ConvNetD4BN", "resnet18_bn": "ResNet18BN", "alexnet_bn": "AlexNetBN",
               "vgg11_bn": "VGG11BN", "resnet10_bn": "ResNet10BN",
               "densenet_cifar": "DenseNet121_cifar_k12"})


def expand_archs(names: list[str]) -> list[str]:
    """Canonical architecture names, with ``pool:<name>`` entries replaced by that evaluation
    pool (:data:`EVAL_POOLS`); order kept, duplicates dropped."""
    out: list[str] = []
    for n in names:
        if n.startswith("pool:"):
            pool = EVAL_POOLS.get(n[5:])
            if pool is None:
                raise UnknownNameError("arch", n, [f"pool:{p}" for p in EVAL_POOLS])
            items = list(pool)
        else:
            items = [canonical_arch(n)]
        out += [a for a in items if a not in out]
    return out


def canonical_arch(name: str) -> str:
    if name.startswith("timm:"):
        return name
    if name.startswith(NAS_PREFIX):
        nas_convnet_kwargs(name)
        return name
    key = _LOWER.get(name.lower().replace("-", "_"))
    if key is None:
        raise UnknownNameError("arch", name, ARCHS)
    return key


def arch_display(name: str) -> str:
    return name if name.startswith(("timm:", NAS_PREFIX)) else ARCHS[canonical_arch(name)].display_name


def create_model(name: str, info: DatasetInfo, generator: torch.Generator | None = None) -> nn.Module:
    """Build ``name`` for a dataset; parameters drawn from ``generator`` if given."""
    key = canonical_arch(name)
    if key.startswith("timm:"):
        # timm models keep their own init schemes: build them inside a forked RNG seeded from
        # the generator (the global RNG state is restored afterwards, untouched).
        seed = int(torch.randint(2**62, (1,), generator=generator)) if generator is not None else None
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            return TimmNet(key[5:], info.channels, info.num_classes)
    elif key.startswith(NAS_PREFIX):  # a NAS candidate: a ConvNet with PyTorch's default init
        kw = nas_convnet_kwargs(key)
        with torch.random.fork_rng(devices=[]) if generator is not None else contextlib.nullcontext():
            model = ConvNet(info.channels, info.num_classes, tuple(info.im_size), **kw)
        if generator is not None:
            init_parameters(model, generator, "torch_default")
    else:
        spec = ARCHS[key]
        if generator is not None:
            # the constructors' default init draws from the global RNG; it is overwritten below, so
            # build inside a fork and leave the global state untouched
            with torch.random.fork_rng(devices=[]):
                model = spec.build(info.channels, info.num_classes, tuple(info.im_size))
            init_parameters(model, generator, spec.init)
        else:
            model = spec.build(info.channels, info.num_classes, tuple(info.im_size))
            if spec.init != "torch_default":  # no generator: the reference scheme, from the global RNG as its code does
                init_parameters(model, None, spec.init)
    return model


@torch.no_grad()
def init_parameters(model: nn.Module, generator: torch.Generator | None, scheme: str = "torch_default") -> nn.Module:
    """Re-draw every conv/linear parameter from ``generator`` (never the global RNG when a
    generator is given); norm layers get weight 1, bias 0 (what both schemes' references do).

    * ``torch_default``: PyTorch's default distribution (kaiming-uniform a=sqrt(5), i.e.
      U(+-1/sqrt(fan_in)) for weights and biases), as the VICO-UoE networks and kuangliu's
      DenseNet leave it.
    * ``kaiming_fan_out``: conv weights ~ N(0, sqrt(2 / (kh * kw * out_channels))) (IDC
      ``models/resnet.py``: ``normal_(0, sqrt(2 / n))``, n = k*k*out, i.e. Kaiming-normal,
      fan-out, ReLU gain); conv biases and linear layers keep the default."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; use one of {', '.join(INIT_SCHEMES)}")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            if scheme == "kaiming_fan_out" and isinstance(m, nn.Conv2d):
                fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator).mul_(math.sqrt(2.0 / fan_out)))
            else:
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator).mul_(2 * bound).sub_(bound))
            if m.bias is not None:
                m.bias.copy_(torch.rand(m.bias.shape, generator=generator).mul_(2 * bound).sub_(bound))
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            if getattr(m, "weight", None) is not None:
                m.weight.fill_(1.0)
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
    return model


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def strip_bn(name: str) -> str:
    """Eval mode 'S' of the reference code: the training arch with BatchNorm removed."""
    key = canonical_arch(name)
    cand = key.replace("BN", "")
    return cand if cand in ARCHS else key
