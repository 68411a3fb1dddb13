"""The weight average of train.ema_decay (effseg.engine.ema), against values computed by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from effseg.config import config_from_dict
from effseg.engine.ema import WeightEMA, ema_decay_at
from effseg.errors import ConfigError
from helpers_engine import tiny_config


def test_decay_warms_up_to_its_value() -> None:
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay_at(0.999, 10_000) == 0.999
    assert ema_decay_at(0.9, 80) == 0.9  # (1 + 80) / 90 = 0.9: the cap takes over from here


def test_average_of_weights_and_batchnorm_statistics() -> None:
    net = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    ema = WeightEMA(net, decay=0.5)
    w, bn = net[0].weight, net[1]

    def step(value: float, mean: float) -> None:
        with torch.no_grad():
            w.fill_(value)
        bn.running_mean.fill_(mean)
        bn.num_batches_tracked += 1
        ema.update(net)

    step(1.0, 10.0)  # the first update copies
    avg = ema.module
    assert avg[0].weight.item() == 1.0 and avg[1].running_mean.item() == 10.0
    step(3.0, 20.0)  # d = min(0.5, 2/11): 2/11 * 1 + 9/11 * 3
    assert avg[0].weight.item() == pytest.approx(2 / 11 * 1 + 9 / 11 * 3)
    assert avg[1].running_mean.item() == pytest.approx(2 / 11 * 10 + 9 / 11 * 20)
    before = avg[0].weight.item()
    step(5.0, 0.0)  # d = min(0.5, 3/12) = 0.25
    assert avg[0].weight.item() == pytest.approx(0.25 * before + 0.75 * 5)
    assert int(avg[1].num_batches_tracked) == 3  # a counter: copied, never averaged
    assert ema.updates == 3
    assert w.item() == 5.0  # the trained network is untouched


def test_restored_average_continues_like_the_original() -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    a = WeightEMA(net, decay=0.9)
    for _ in range(3):
        with torch.no_grad():
            net.weight.add_(1.0)
        a.update(net)
    b = WeightEMA(net, decay=0.9)
    b.load_state_dict(a.module.state_dict(), a.updates, "test")
    with torch.no_grad():
        net.weight.add_(1.0)
    a.update(net)
    b.update(net)
    assert torch.equal(a.module.weight, b.module.weight) and b.updates == 4


@pytest.mark.parametrize("value", [0, 1, 1.5, -0.1])
def test_decay_outside_0_1_is_a_config_error(value: float) -> None:
    with pytest.raises(ConfigError, match=r"^key 'train.ema_decay': expected a number in \(0, 1\)"):
        config_from_dict(tiny_config("data/none", train={"ema_decay": value}))
