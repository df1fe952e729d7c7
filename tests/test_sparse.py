import pytest
import torch
from torch import nn

from sparsecli.sparse import KWinners, KWinners2d, SparseWeights


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.8, 0.9, 0.95])
@pytest.mark.parametrize("fan_in", [20, 64, 101])
def test_exact_nonzeros_per_output_unit(sparsity, fan_in):
    layer = SparseWeights(nn.Linear(fan_in, 17), sparsity, torch.Generator().manual_seed(0))
    expected = round((1 - sparsity) * fan_in)
    assert (layer.mask.sum(dim=1) == expected).all()
    assert ((layer.module.weight != 0).sum(dim=1) == expected).all()


def test_conv_masks_count_per_output_channel():
    conv = SparseWeights(nn.Conv2d(3, 8, 3), 0.75, torch.Generator().manual_seed(0))
    fan_in = 3 * 3 * 3
    assert ((conv.mask.view(8, -1).sum(dim=1)) == round(0.25 * fan_in)).all()


def test_masks_survive_training_steps_via_rezero():
    layer = SparseWeights(nn.Linear(10, 5), 0.6, torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    for _ in range(3):
        layer(torch.randn(4, 10)).sum().backward()
        opt.step()
        layer.rezero()
    assert ((layer.module.weight != 0) == layer.mask.bool()).all()


def test_masks_are_deterministic_in_the_seed():
    def mask(seed):
        return SparseWeights(nn.Linear(30, 20), 0.7, torch.Generator().manual_seed(seed)).mask

    assert torch.equal(mask(3), mask(3))
    assert not torch.equal(mask(3), mask(4))


def test_masks_ignore_global_rng_state():
    torch.manual_seed(0)
    a = SparseWeights(nn.Linear(30, 20), 0.7, torch.Generator().manual_seed(5))
    torch.manual_seed(123)
    b = SparseWeights(nn.Linear(30, 20), 0.7, torch.Generator().manual_seed(5))
    assert torch.equal(a.mask, b.mask)
    assert torch.equal(a.module.weight, b.module.weight)


@pytest.mark.parametrize("units, percent_on", [(10, 0.1), (64, 0.25), (100, 0.05)])
def test_kwta_keeps_exactly_k_per_sample(units, percent_on):
    kw = KWinners(units, percent_on, boost_strength=1.0, k_inference_factor=1.5)
    x = torch.randn(32, units)
    k = round(percent_on * units)
    out = kw.train()(x)
    assert ((out != 0).sum(dim=1) == k).all()
    out = kw.eval()(x)
    assert ((out != 0).sum(dim=1) == min(units, round(k * 1.5))).all()


def test_kwta_outputs_unboosted_values_of_winners():
    kw = KWinners(8, 0.25, boost_strength=2.0)
    kw.duty_cycle.copy_(torch.tensor([0.0] * 4 + [1.0] * 4))
    x = torch.arange(1.0, 9.0).unsqueeze(0)  # the largest raw values are units 4..7
    out = kw.eval()(x)
    winners = out.nonzero()[:, 1].tolist()
    assert all(w < 4 for w in winners)  # boosting picked the rarely active units
    assert torch.equal(out[out != 0], x[out != 0])


def test_boosting_raises_win_rate_of_rarely_active_units():
    """Units with smaller (positive) inputs rarely win without boosting; boosting lets them win more.

    Boosting multiplies, so it favours units on the positive values a ReLU-like layer makes.
    """
    def win_rate(boost):
        kw = KWinners(20, 0.2, boost_strength=boost, duty_cycle_period=100).train()
        generator = torch.Generator().manual_seed(0)
        scale = torch.ones(20)
        scale[:5] = 0.6  # units 0..4 are disadvantaged
        wins = torch.zeros(20)
        for _ in range(200):
            out = kw(torch.rand(16, 20, generator=generator) * scale)
            wins += (out != 0).float().sum(dim=0)
        return float(wins[:5].sum() / wins.sum())

    assert win_rate(3.0) > 2 * win_rate(0.0)


def test_duty_cycle_only_moves_in_training_and_is_in_state_dict():
    kw = KWinners(10, 0.3)
    kw.eval()(torch.randn(4, 10))
    assert kw.duty_cycle.sum() == 0
    kw.train()(torch.randn(4, 10))
    assert kw.duty_cycle.sum() > 0
    state = kw.state_dict()
    assert {"duty_cycle", "boost_strength", "learning_iterations"} <= set(state)
    kw.update_boost_strength()
    assert float(kw.boost_strength) == pytest.approx(1.5 * 0.9)


@pytest.mark.parametrize("local", [False, True])
def test_kwta2d_counts(local):
    kw = KWinners2d(8, 4, 4, percent_on=0.25, local=local).train()
    out = kw(torch.randn(3, 8, 4, 4))
    if local:
        assert ((out != 0).sum(dim=1) == 2).all()
    else:
        assert ((out != 0).flatten(1).sum(dim=1) == round(0.25 * 128)).all()


def test_k_is_fixed_at_construction():
    kw = KWinners(40, 0.1, k_inference_factor=2.0)
    assert (kw.k, kw.k_inference) == (4, 8)
    with pytest.raises(ValueError):
        KWinners(10, 0.01)
