import pytest
import torch

from benchmark.data import get_info
from benchmark.evaluate import PROFILES, TensorSource, TrainSettings, evaluate, get_protocol, model_seeds, train_model


def test_protocol_presets_and_dc_rules():
    assert set(PROFILES.list()) >= {"dc", "dsa", "dm", "idc", "idm", "datadam"}
    dsa = get_protocol("dsa").resolve(get_info("mnist"), "ConvNet")
    assert dsa.dsa_strategy == "color_crop_cutout_scale_rotate" and dsa.epochs == 1000 and dsa.batch_size == 256
    assert (get_protocol("dsa").resolve(get_info("cifar10"), "ConvNet").dsa_strategy
            == "color_crop_cutout_flip_scale_rotate")
    dc_cifar = get_protocol("dc").resolve(get_info("cifar10"), "ConvNet")
    assert dc_cifar.aug == "none" and dc_cifar.epochs == 300
    dc_mnist = get_protocol("dc").resolve(get_info("mnist"), "ConvNet")
    assert dc_mnist.aug == "dc" and dc_mnist.epochs == 1000 and dc_mnist.dsa_strategy == "crop_scale_rotate"
    assert get_protocol("dc").resolve(get_info("cifar10"), "ConvNetBN").dsa_strategy == "crop_noise"
    idc = get_protocol("idc").resolve(get_info("mnist"), "ConvNet")  # IDC's MNIST setting: no CutMix anywhere
    assert idc.dsa_strategy == "color_crop_scale_rotate" and idc.cutmix_p == 0.0 and idc.batch_size == 64
    idc_c = get_protocol("idc").resolve(get_info("cifar10"), "ConvNet")
    assert idc_c.dsa_strategy == "color_crop_flip_scale_rotate" and idc_c.cutmix_p == 0.5
    assert get_protocol("datadam").epochs == 1800 and get_protocol("datadam").batch_size == 64


def _tiny(digits, ipc=2):
    tr, te = digits
    idx = torch.cat([c[:ipc] for c in tr.class_indices])
    return TensorSource(*tr.batch(idx)), tr.info, te


def test_halfstep_schedule_recreates_optimizer(monkeypatch, digits):
    made = []
    real_sgd = torch.optim.SGD

    def spy(params, lr, **kw):
        made.append(lr)
        return real_sgd(params, lr=lr, **kw)

    monkeypatch.setattr(torch.optim, "SGD", spy)
    src, info, te = _tiny(digits)
    p = get_protocol("dsa").model_copy(update={"epochs": 4}).resolve(info, "ConvNet")
    r = train_model(src, p, "ConvNet", info, te, seed=0)
    assert made == pytest.approx([0.01, 0.001])  # new optimizer (momentum reset) after epoch E//2+1
    assert r.steps == 5  # epochs 0..E


def test_same_seed_same_result_and_final_epoch_only(digits):
    src, info, te = _tiny(digits)
    p = get_protocol("dsa").model_copy(update={"epochs": 3})
    seeds = model_seeds(0, "ConvNet", 2)
    a = evaluate(src, p, "ConvNet", info, te, seeds)
    b = evaluate(src, p, "ConvNet", info, te, seeds)
    assert [r.test_acc for r in a] == [r.test_acc for r in b]
    assert seeds[0] != seeds[1] and 0 <= a[0].test_acc <= 100


def test_idc_protocol_trains_with_cutmix_and_multistep(digits):
    src, info, te = _tiny(digits, 3)
    p = get_protocol("idc").model_copy(update={"epochs": 3})
    r = evaluate(src, p, "ConvNet", info, te, [1], TrainSettings(precision="bf16"))
    assert r[0].steps == 3  # IDC's loop runs E epochs (not E+1)


def test_evaluation_learns_on_digits(digits):
    src, info, te = _tiny(digits, 5)
    p = get_protocol("dsa").model_copy(update={"epochs": 40})
    r = evaluate(src, p, "ConvNet", info, te, [0], TrainSettings(precision="bf16"))
    assert r[0].test_acc > 50  # 5 real images per class on digits: far above chance (10%)
