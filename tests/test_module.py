"""Dm2galModule's optimisation: the per-step warm-up + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch

from dm2gal.models import UNet3d
from dm2gal.train.build import build
from dm2gal.train.losses import MSELoss
from dm2gal.train.module import Dm2galModule, warmup_cosine


def _lrs(steps: int, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = warmup_cosine(optimizer, **kwargs)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_warmup_cosine_values():
    lrs = _lrs(13, total_steps=10, warmup_fraction=0.4, final_factor=0.1)
    # linear warm-up: (s + 1) / 4 of lr = 2
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    # cosine from 1 at step 4 to 0.1 at step 10: 0.1 + 0.9 (1 + cos(pi t)) / 2, t = (s - 4) / 6
    for s in range(4, 11):
        expected = 2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 4) / 6)))
        assert lrs[s] == pytest.approx(expected), s
    assert lrs[7] == pytest.approx(2.0 * 0.55)
    # held at the final value past the end
    assert lrs[10:] == pytest.approx([0.2, 0.2, 0.2])


def test_warmup_cosine_without_warmup_starts_at_lr():
    assert _lrs(1, total_steps=5, warmup_fraction=0.0)[0] == pytest.approx(2.0)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"total_steps": 0}, "total_steps"),
        ({"total_steps": 10, "warmup_fraction": 1.0}, "optim.scheduler.warmup_fraction"),
        ({"total_steps": 10, "final_factor": 1.5}, "optim.scheduler.final_factor"),
    ],
)
def test_warmup_cosine_bad_values_name_the_key(kwargs, key):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=key):
        warmup_cosine(optimizer, **kwargs)


def test_the_default_schedule_steps_every_optimiser_step(compose):
    """Fitting 3 steps with a 2-step warm-up (round(0.5 * 3)) ends at final_factor * lr."""
    cfg = compose(
        [
            "optim=warmup_cosine",
            "optim.scheduler.warmup_fraction=0.5",
            "trainer.limit_train_batches=3",
            "callbacks=none",
            "model.channels=4",
        ]
    )
    datamodule, module, trainer = build(cfg)
    trainer.fit(module, datamodule=datamodule)
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert trainer.global_step == 3
    assert lr == pytest.approx(cfg.optim.optimizer.lr * cfg.optim.scheduler.final_factor)


def test_bad_scheduler_interval_names_the_key():
    net, loss = UNet3d(channels=2, levels=1, convs=1), MSELoss()
    with pytest.raises(ValueError, match="module.scheduler_interval"):
        Dm2galModule(net, loss, torch.optim.AdamW, scheduler_interval="batch")


def test_ema_averages_floats_and_copies_flags():
    """A bool or integer buffer (a head's "initialised" flag) follows the model; floats average."""
    from dm2gal.train.callbacks import EMAWeights, ema_decay

    ema = EMAWeights(decay=0.9)
    n = torch.tensor(50)
    flag = ema._average(torch.tensor([False]), torch.tensor([True]), n)
    assert flag.dtype == torch.bool and bool(flag)
    avg = ema._average(torch.tensor([1.0]), torch.tensor([3.0]), n)
    assert float(avg) == pytest.approx(1.0 + 2.0 * (1.0 - ema_decay(0.9, n)))
