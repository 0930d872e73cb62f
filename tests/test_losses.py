"""Matching losses against hand-computed values on tiny tensors."""

import math

import pytest
import torch

from benchmark.losses import attention_map, attention_match, ce_regulariser, class_means, mean_embedding_mmd


def test_mmd_per_class_hand_computed():
    # class 0 real: (1,2),(3,4) -> mean (2,3); class 1 real: (0,0),(2,2) -> mean (1,1)
    fr = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 0.0], [2.0, 2.0]])
    # class 0 syn: (1,1); class 1 syn: (0,1)
    fs = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    # (2-1)^2 + (3-1)^2 + (1-0)^2 + (1-1)^2 = 1 + 4 + 1 + 0
    assert mean_embedding_mmd(fr, fs, 2).item() == pytest.approx(6.0)
    # one group: global means (1.5, 2) vs (0.5, 1) -> 1 + 1
    assert mean_embedding_mmd(fr, fs, 1).item() == pytest.approx(2.0)


def test_mmd_flattens_feature_maps_and_runs_in_fp32():
    fr = torch.ones(4, 2, 2, 2, dtype=torch.bfloat16)
    fs = torch.zeros(2, 2, 2, 2, dtype=torch.bfloat16)
    out = mean_embedding_mmd(fr, fs, 2)
    assert out.dtype == torch.float32 and out.item() == pytest.approx(2 * 8)
    assert class_means(fr, 2).shape == (2, 8)
    with pytest.raises(ValueError):
        class_means(torch.zeros(5, 3), 2)


def test_attention_map_hand_computed():
    # one sample, 2 channels, 1x2 map: ch0 = (1, -2), ch1 = (3, 0)
    f = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])
    a1 = attention_map(f, power=1)  # (|1|+|3|, |-2|+0) = (4, 2) / sqrt(20)
    assert torch.allclose(a1, torch.tensor([[4.0, 2.0]]) / math.sqrt(20))
    a4 = attention_map(f, power=4)  # (1+81, 16+0) = (82, 16)
    assert torch.allclose(a4, torch.tensor([[82.0, 16.0]]) / math.sqrt(82**2 + 16**2))
    assert torch.allclose(attention_map(f, power=1, normalize="none"), torch.tensor([[4.0, 2.0]]))
    assert torch.allclose(attention_map(f, power=1, normalize="l1"), torch.tensor([[4.0, 2.0]]) / 6)


def test_attention_match_hand_computed():
    real = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])  # A = (4, 2)/sqrt(20) = (2, 1)/sqrt(5)
    syn = torch.tensor([[[[0.0, 5.0]], [[0.0, 0.0]]]])  # A = (0, 1)
    a = torch.tensor([2.0, 1.0]) / math.sqrt(5)
    want = float(((a - torch.tensor([0.0, 1.0])) ** 2).sum())
    got = attention_match([real, real], [syn, syn], num_classes=1, power=1)
    assert got.item() == pytest.approx(2 * want, rel=1e-6)  # two layers, summed


def test_ce_regulariser_matches_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    want = (-(math.log(math.exp(2) / (math.exp(2) + 1))) + math.log(2)) / 2
    assert ce_regulariser(logits, torch.tensor([0, 1])).item() == pytest.approx(want, rel=1e-6)
