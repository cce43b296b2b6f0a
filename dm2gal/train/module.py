"""LightningModule: one network, one loss, optimiser and scheduler from config.

Batches are dicts from :class:`dm2gal.data.FieldDataModule`: ``input`` (B, C, n+2c, ...),
``target`` (B, 1, n, ...) normalised, ``occupied`` (B, 1, n, ...) bool and, from data across
universes, ``params`` (B, P) the universe parameters (raw units), which a conditioned network
(``model.conditioning=film``) takes. Metrics are logged under
``train/`` and ``val/`` (``val/loss`` is what checkpoints and sweeps optimise).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from dm2gal.errors import ConfigError
from dm2gal.models.base import FieldNet, count_parameters

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]
INTERVALS = ("epoch", "step")


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    final_factor: float = 0.01,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay, stepped once per optimiser step.

    With ``w = round(warmup_fraction * total_steps)`` warm-up steps, the learning rate is the
    optimiser's ``lr`` times ``(s + 1) / w`` for steps ``s < w``, then
    ``final_factor + (1 - final_factor) (1 + cos(pi t)) / 2`` with
    ``t = (s - w) / (total_steps - w)`` going from 0 to 1 (held at ``final_factor`` past
    ``total_steps``).
    """
    if int(total_steps) != total_steps or total_steps < 1:
        raise ValueError(f"warmup_cosine: total_steps must be an integer >= 1, got {total_steps}")
    if not 0 <= warmup_fraction < 1:
        raise ValueError(f"optim.scheduler.warmup_fraction: expected [0, 1), got {warmup_fraction}")
    if not 0 <= final_factor <= 1:
        raise ValueError(f"optim.scheduler.final_factor: expected [0, 1], got {final_factor}")
    warmup = round(warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / (total_steps - warmup))
        return final_factor + (1.0 - final_factor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class PlateauStep(L.Callback):
    """Step the ``ReduceLROnPlateau`` schedulers at the end of every validation of ``fit`` (once
    per epoch by default) with the monitored metric, before any checkpoint is written.

    Lightning steps them at the end of the epoch, after the checkpoints written at validation
    end, and skips that step when a run resumes from one of those: the resumed run never
    reduces the learning rate the uninterrupted one does. :class:`Dm2galModule` leaves its
    plateau scheduler to this callback, which must come before the checkpointing callbacks in
    the trainer's list. A validation without the monitored metric does not step.
    """

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for config in trainer.lr_scheduler_configs:
            value = trainer.callback_metrics.get(config.monitor)
            if config.reduce_on_plateau and value is not None:
                config.scheduler.step(float(value))


class UniverseParameters(L.Callback):
    """Check that the data's universe parameters are the network's conditioning and, when
    fitting, record the data's training ranges in the network (:meth:`Dm2galModule.
    check_parameters`), at set-up and before any other callback copies the network (the average
    of :class:`dm2gal.train.callbacks.EMAWeights` would keep unset ranges): it must come first in
    the trainer's list."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.datamodule is not None:
            pl_module.check_parameters(trainer.datamodule, record_ranges=stage == "fit")


class Dm2galModule(L.LightningModule):
    """Train a :class:`FieldNet` on field crops.

    Args:
        net: the network (declares ``context``).
        loss: a loss module with a ``name`` and ``forward(output, batch)``.
        optimizer: partial optimiser (e.g. ``torch.optim.AdamW`` with lr, weight_decay).
        scheduler: partial scheduler or ``None``; ``ReduceLROnPlateau`` watches ``monitor``.
        monitor: metric a plateau scheduler watches (``val/loss``).
        scheduler_interval: "epoch" (the scheduler steps once per epoch) or "step" (once per
            optimiser step; the factory is then called with ``total_steps``, the run's number of
            optimiser steps, as :func:`warmup_cosine` expects).
        channels_last: use the channels-last 3D memory format (faster convolutions on GPUs).
        compile: wrap the network with ``torch.compile``.
    """

    def __init__(
        self,
        net: FieldNet,
        loss: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        monitor: str = "val/loss",
        scheduler_interval: str = "epoch",
        channels_last: bool = False,
        compile: bool = False,
    ):
        super().__init__()
        if scheduler_interval not in INTERVALS:
            raise ValueError(
                f"module.scheduler_interval: expected one of {INTERVALS}, "
                f"got {scheduler_interval!r}"
            )
        # factories stay out of the checkpoint: it holds plain values only
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.n_parameters = count_parameters(net)

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        transform = getattr(datamodule, "transform", None)
        if transform is not None and hasattr(self.net, "empty_value"):
            self.net.empty_value = float(transform.empty_value)
        if transform is not None and hasattr(self.net, "set_target_transform"):
            self.net.set_target_transform(transform)
        if self.hparams.channels_last:
            self.net.to(memory_format=torch.channels_last_3d)
        if self.hparams.compile and stage == "fit":
            # kept out of the module registry so that checkpoints hold the weights once
            object.__setattr__(self, "_compiled_net", torch.compile(self.net))
        log.info(
            "%s: %d parameters, context %d voxels, loss %s",
            type(self.net).__name__,
            self.n_parameters,
            self.net.context,
            self.loss.name,
        )

    def check_parameters(self, datamodule: Any, record_ranges: bool) -> None:
        """The data's universe parameters must be the network's conditioning, except that an
        unconditioned network may train on data at one parameter point (a single universe
        that records its parameters, e.g. a hypercube's centre); when fitting, a conditioned
        network records the data's training ranges (they travel in its buffers)."""
        names = tuple(getattr(datamodule, "parameter_names", ()) or ())
        ranges = getattr(datamodule, "parameter_ranges", {}) or {}
        one_point = all(low == high for low, high in ranges.values())
        conditioned = bool(self.net.parameter_names)
        if names != self.net.parameter_names and (conditioned or not one_point):
            raise ConfigError(
                f"model.parameters: the network is conditioned on {list(self.net.parameter_names)}"
                f" (model.conditioning), the data gives parameters {list(names)}; a conditioned "
                "network needs data across universes, an unconditioned one data at one "
                "parameter point"
            )
        if conditioned and record_ranges:
            self.net.film.set_ranges(datamodule.parameter_ranges)

    def on_fit_start(self) -> None:
        plateau = any(c.reduce_on_plateau for c in self.trainer.lr_scheduler_configs)
        if plateau and not any(isinstance(c, PlateauStep) for c in self.trainer.callbacks):
            raise ValueError(
                "a ReduceLROnPlateau scheduler (optim.scheduler) needs the trainer callback "
                "dm2gal.train.module.PlateauStep, before the checkpointing callbacks"
            )
        if self.net.film is not None and not self.net.film.has_ranges:
            raise ValueError(
                "a conditioned network (model.conditioning) needs its training ranges: the "
                "trainer callback dm2gal.train.module.UniverseParameters, first in the list"
            )
        summary = {"model.params": self.n_parameters, "model.context": self.net.context}
        if self.net.film is not None:  # the training ranges the parameters are normalised by
            summary["model.parameter_ranges"] = self.net.film.ranges
        for logger in self.loggers:
            logger.log_hyperparams(summary)

    # -- steps ----------------------------------------------------------------------------------
    def _input(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = batch["input"]
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return x

    def _params(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """``(batch["params"],)`` for a conditioned network, ``()`` otherwise (an
        unconditioned network ignores them: :meth:`check_parameters` allows it data at one
        parameter point only); a :class:`ConfigError` for a conditioned network and a batch
        without them."""
        if not self.net.parameter_names:
            return ()
        if "params" not in batch:
            raise ConfigError(
                f"model.conditioning: the network is conditioned on "
                f"{list(self.net.parameter_names)} but the batch has no universe parameters "
                "('params')"
            )
        return (batch["params"],)

    def forward(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """Prediction of the normalised target for input crops ``x`` (``params`` ``(B, P)``:
        the universe parameters of a conditioned network)."""
        return self.net.infer(x, params)

    def _step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        net = self.__dict__.get("_compiled_net", self.net)
        output = net(self._input(batch), *self._params(batch))
        loss = self.loss(output, batch)
        batch_size = batch["input"].shape[0]
        on_step = split == "train"
        self.log(
            f"{split}/loss",
            loss,
            prog_bar=True,
            on_step=on_step,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=not on_step,
        )
        self.log(
            f"{split}/{self.loss.name}",
            loss,
            on_step=False,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=True,
        )
        return loss

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # a network with a data-dependent start (ProbabilisticNet) takes the first batch
        if self.global_step == 0 and hasattr(self.net, "initialise"):
            self.net.initialise(batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test")

    # -- optimisation ---------------------------------------------------------------------------
    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Lightning's step, except for ``ReduceLROnPlateau``: :class:`PlateauStep` steps it."""
        if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            super().lr_scheduler_step(scheduler, metric)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.net.parameters())
        if self.scheduler_factory is None:
            return optimizer
        interval = self.hparams.scheduler_interval
        if interval == "step":
            total = int(self.trainer.estimated_stepping_batches)
            scheduler = self.scheduler_factory(optimizer=optimizer, total_steps=total)
        else:
            scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.hparams.monitor,
                "interval": interval,
                "frequency": 1,
                # a plateau scheduler steps in PlateauStep; epochs without the monitored
                # statistic (e.g. no field_stats callback) skip it
                "strict": False,
            },
        }
