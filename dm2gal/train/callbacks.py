"""Lightning callbacks: in-training validation statistics, an exponential moving average of the
weights, and checkpoints before preemption.

:class:`FieldStatsCallback` predicts the whole validation region every N epochs with
:func:`dm2gal.infer.predict.predict_region` and scores it against the true stellar-mass field with
the torch statistics (:mod:`dm2gal.stats.torch_backend`, on the module's device). Like the
evaluation report, the (non-periodic) validation cube is treated as periodic with its own side
as the box (see :mod:`dm2gal.stats.pylians`): truth and prediction are measured the same way, so the
ratio and cross-correlation compare like with like. :class:`EMAWeights` validates, checkpoints,
tests and evaluates the moving average of the weights. :class:`PreemptionCheckpoint` keeps
``last.ckpt`` and its predecessor ``last-1.ckpt`` (after every validation, and when SLURM
announces the end of a job), so a killed or requeued job resumes exactly.
:class:`NonFiniteGuard` stops training (or skips the batch) at the first non-finite loss or
gradient, before the optimiser applies it.
"""

from __future__ import annotations

import logging
import math
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from dm2gal.data.crops import read_crop
from dm2gal.errors import ConfigError, UserError, integer_option
from dm2gal.infer.parameters import bind_parameters
from dm2gal.infer.predict import DEFAULT_TILE, PredictOptions, predict_fields
from dm2gal.stats.base import nyquist
from dm2gal.stats.torch_backend import cross_power_torch
from dm2gal.train.checkpoints import LAST, rotate_in
from dm2gal.train.figures import plot_slices, save_png
from dm2gal.train.loggers import find_wandb
from dm2gal.train.wandb_curves import curve_payload

log = logging.getLogger(__name__)

METRICS = ("val/pk_ratio_abs_err", "val/rk_mean", "val/total_mass_rel_err")


def field_scores(
    truth: torch.Tensor, pred: torch.Tensor, box: float, k_max: float | None = None
) -> dict[str, float]:
    """P(k) ratio error, mean r(k) and total-mass relative error of ``pred`` against ``truth``.

    Both are mass-per-voxel cubes (Msun/h) of a periodic box of side ``box`` (Mpc/h), CIC
    window corrected. ``pk_ratio_abs_err`` is mean |P_pred / P_truth - 1| and ``rk_mean`` the mean
    r(k) over the k bins with k <= ``k_max`` (h/Mpc; default Nyquist), as ``stats.summary``.
    An empty prediction (no mass anywhere, e.g. early in training) has P = 0 and no defined
    r(k): it scores ``pk_ratio_abs_err = 1`` and ``rk_mean = 0``. An empty truth (a validation
    region without galaxies) leaves every score undefined: all are NaN.
    """
    total_truth = float(truth.sum(dtype=torch.float64))
    if not total_truth > 0:
        return dict.fromkeys(METRICS, math.nan)
    total_pred = float(pred.sum(dtype=torch.float64))
    k_max = nyquist(box, truth.shape[0]) if k_max is None else float(k_max)
    scores = {"val/total_mass_rel_err": total_pred / total_truth - 1.0}
    if total_pred > 0:
        k, pk_truth, pk_pred, _, r = cross_power_torch(truth, pred, box, mas="CIC")
        sel = k <= k_max
        if not bool(sel.any()):
            raise ValueError(f"k_max={k_max} h/Mpc is below the first k bin ({float(k[0]):.4g})")
        scores["val/pk_ratio_abs_err"] = float((pk_pred[sel] / pk_truth[sel] - 1.0).abs().mean())
        scores["val/rk_mean"] = float(r[sel].mean())
    else:
        scores["val/pk_ratio_abs_err"], scores["val/rk_mean"] = 1.0, 0.0
    return scores


class FieldStatsCallback(L.Callback):
    """Every ``every_n_epochs`` epochs, predict the validation region and log its statistics.

    Logs ``val/pk_ratio_abs_err``, ``val/rk_mean`` and ``val/total_mass_rel_err`` (see
    :func:`field_scores`) with ``pl_module.log``, so every logger (W&B, CSV) and every callback
    (checkpointing, early stopping) sees them. The global-zero process predicts and scores; the
    values are broadcast so that every DDP rank logs the same numbers. A PNG of projected slabs
    (truth | prediction) goes to ``<trainer.default_root_dir>/val_slices/epoch_XXX.png`` and, when
    a W&B logger is present, to W&B as ``val/slices``, with the P(k) and r(k) curves as tables and
    line charts (``val/curves/pk``, ``val/charts/pk_ratio``, ...; see :meth:`_log_curves`).

    Args:
        every_n_epochs: run after the validation of every n-th epoch (sanity checks skipped).
        tile: requested output tile side (voxels) of the prediction (see ``predict_region``).
        batch_size: tiles per forward pass.
        k_max: upper k (h/Mpc) of the P(k) and r(k) scores; None: the validation cube's Nyquist.
        slice_width: slab thickness (voxels) of the slice image.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        tile: int = DEFAULT_TILE,
        batch_size: int = 4,
        k_max: float | None = None,
        slice_width: int = 4,
    ):
        for key, value in (
            ("every_n_epochs", every_n_epochs),
            ("tile", tile),
            ("batch_size", batch_size),
            ("slice_width", slice_width),
        ):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(
                    f"FieldStatsCallback.{key}: expected an integer >= 1, got {value!r}"
                )
        if k_max is not None and not k_max > 0:
            raise ValueError(f"FieldStatsCallback.k_max: expected > 0 h/Mpc or null, got {k_max}")
        self.every_n_epochs, self.tile, self.batch_size = every_n_epochs, tile, batch_size
        self.k_max, self.slice_width = k_max, slice_width

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "splits"):
            raise ValueError("FieldStatsCallback needs a FieldDataModule passed to trainer.fit")

    def _due(self, trainer: L.Trainer) -> bool:
        return (
            not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._due(trainer):
            return
        scores = self._measure(trainer, pl_module) if trainer.is_global_zero else None
        scores = trainer.strategy.broadcast(scores, src=0)
        for name in METRICS:
            pl_module.log(name, scores[name], on_step=False, on_epoch=True, sync_dist=False)

    def _measure(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Predict the validation region, write and log the slice image, return the scores."""
        dm = trainer.datamodule
        region = dm.splits.val
        if len(set(region.size)) != 1:
            raise ValueError(
                f"data.splits.val: FieldStatsCallback needs a cubic region, got {region.size}"
            )
        options = PredictOptions(
            self.tile,
            self.batch_size,
            pl_module.hparams.get("channels_last", False),
            str(pl_module.device),
            progress=False,
        )
        inputs = [dm.store.read(name) for name in dm.inputs]
        # a conditioned network predicts the universe of the store it scores
        net = bind_parameters(pl_module.net, dm.store, None)
        pred = predict_fields(net, dm.transform, inputs, region, options)
        truth = read_crop(dm.store.read(dm.target), region.start, region.size)
        side = region.size[0] * dm.box / dm.grid
        truth_t = torch.from_numpy(truth).to(pl_module.device)
        pred_t = torch.from_numpy(pred).to(pl_module.device)
        scores = field_scores(truth_t, pred_t, side, self.k_max)
        self._write_slices(trainer, truth, pred, side)
        self._log_curves(trainer, truth_t, pred_t, side)
        if not truth.any():
            log.warning(
                "data.splits.val %s holds no stellar mass: the validation field statistics are "
                "NaN; choose a validation region with galaxies",
                region,
            )
        return scores

    def _log_curves(
        self, trainer: L.Trainer, truth: torch.Tensor, pred: torch.Tensor, side: float
    ) -> None:
        """Log the P(k) and r(k) curves to W&B (when a W&B logger is present and both fields
        hold mass) as ``val/curves/pk`` and ``val/curves/rk`` tables and ``val/charts/pk_ratio``
        and ``val/charts/rk`` line charts, named as the evaluation's
        (:mod:`dm2gal.train.wandb_curves`)."""
        wandb = find_wandb(trainer.loggers)
        if wandb is None or not (truth.sum() > 0 and pred.sum() > 0):
            return
        k, pk_truth, pk_pred, _, r = (
            t.cpu().numpy() for t in cross_power_torch(truth, pred, side, mas="CIC")
        )
        curves = {
            "pk": {
                "k": k,
                "pk_truth": pk_truth,
                "pk_model": pk_pred,
                "ratio_model": pk_pred / pk_truth,
            },
            "rk": {"k": k, "r_model": r},
        }
        wandb.log_metrics(curve_payload("val", curves), step=trainer.global_step)

    def _write_slices(
        self, trainer: L.Trainer, truth: np.ndarray, pred: np.ndarray, side: float
    ) -> Path:
        width = min(self.slice_width, truth.shape[0])
        path = (
            Path(trainer.default_root_dir) / "val_slices" / f"epoch_{trainer.current_epoch:03d}.png"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(plot_slices({"truth": truth, "prediction": pred}, width, side), path)
        wandb = find_wandb(trainer.loggers)
        if wandb is not None:
            wandb.log_image(key="val/slices", images=[str(path)], step=trainer.global_step)
        return path


def ema_decay(decay: float, updates: torch.Tensor) -> torch.Tensor:
    """Decay of the moving average at its ``updates``-th update (``updates`` >= 1 made before):
    ``min(decay, (1 + updates) / (10 + updates))``, which averages about the last tenth of the
    steps early in a run and ``1 / (1 - decay)`` steps later."""
    return torch.clamp((1.0 + updates) / (10.0 + updates), max=decay)


class EMAWeights(WeightAveraging):
    """Exponential moving average of the weights, BatchNorm statistics included: after every
    optimiser step ``w_avg <- d * w_avg + (1 - d) * w`` with ``d = ema_decay(decay, n)`` after
    ``n`` updates (the first update copies ``w``).

    Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` swaps the average in for
    every validation (so :class:`FieldStatsCallback`, placed before this callback, scores it),
    writes it as the checkpoint's ``state_dict`` (the trained weights go to
    ``current_model_state``) and leaves it in the module when fitting ends. One change: a
    checkpoint loaded outside fitting (``trainer.test(ckpt_path=...)``) keeps the averaged
    weights of its ``state_dict``, where Lightning's callback would load the trained ones back.

    Args:
        decay: largest weight of the old average per step, in [0, 1); late in a run about
            ``1 / (1 - decay)`` steps are averaged.
    """

    def __init__(self, decay: float = 0.995) -> None:
        if isinstance(decay, bool) or not 0 <= decay < 1:
            raise ValueError(f"EMAWeights.decay: expected a number in [0, 1), got {decay!r}")
        self.decay = float(decay)
        super().__init__(avg_fn=self._average)

    def _average(
        self, averaged: torch.Tensor, current: torch.Tensor, updates: torch.Tensor
    ) -> torch.Tensor:
        if not averaged.is_floating_point():  # flags and counters (e.g. a head's "initialised")
            return current.clone()
        return averaged + (current - averaged) * (1.0 - ema_decay(self.decay, updates))

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class PreemptionCheckpoint(L.Callback):
    """Keep ``<dirpath>/last.ckpt``, the exact resume point after a kill or a preemption, and the
    one before it, ``last-1.ckpt``, to resume from when the newest is damaged.

    It is written at the end of every validation of ``fit`` (once per epoch by default; the
    plateau scheduler has stepped by then, see :class:`dm2gal.train.module.PlateauStep`, which must
    come before this callback) and once more when training ends.

    SLURM sends a signal ``signal_delay_s`` seconds before a time limit or a preemption
    (submitit asks for ``SIGUSR2``, Lightning's own SLURM requeue for ``SIGUSR1``); submitit's
    handler requeues the job and exits at once. For each of ``signums`` that already has a
    handler, this callback takes the signal first, lets the current optimiser step finish,
    writes ``last.ckpt`` (all ranks agree on the step), then calls that handler. The requeued
    job resumes from the checkpoint, so no step is lost or repeated.
    """

    def __init__(
        self, dirpath: str | Path, signums: tuple[int, ...] = (signal.SIGUSR1, signal.SIGUSR2)
    ):
        self.path = Path(dirpath) / LAST
        self.signums = signums
        self.previous: dict[int, Any] = {}
        self.pending: tuple[int, FrameType | None] | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.warning("signal %d: checkpoint at the end of this step, then requeue", signum)
        self.pending = (signum, frame)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for signum in self.signums:
            previous = signal.getsignal(signum)
            if callable(previous):
                self.previous[signum] = previous
                signal.signal(signum, self._on_signal)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._maybe_checkpoint(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._save(trainer)
        log.info("resume point %s written (global step %d)", self.path, trainer.global_step)
        self._maybe_checkpoint(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the final state: a job requeued during test or evaluation does not train again
        self._save(trainer)
        handlers = self._restore()
        if self.pending is not None and self.pending[0] in handlers:
            handlers[self.pending[0]](*self.pending)

    def _save(self, trainer: L.Trainer) -> None:
        for callback in trainer.checkpoint_callbacks:
            if Path(getattr(callback, "dirpath", None) or "") == self.path.parent:
                callback.last_model_path = str(self.path)  # it keeps writing this file
        # a kill while writing must not leave a truncated last.ckpt: write, then rename (the
        # previous one becomes last-1.ckpt)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        # a full resume point (optimiser, loops, callbacks); said explicitly, Lightning logs its
        # default at every save
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            rotate_in(tmp, self.path)
        trainer.strategy.barrier("last.ckpt")

    def _maybe_checkpoint(self, trainer: L.Trainer) -> None:
        if not self.previous:
            return
        if not trainer.strategy.reduce_boolean_decision(self.pending is not None, all=False):
            return
        self._save(trainer)
        log.warning("saved %s at global step %d", self.path, trainer.global_step)
        handlers = self._restore()
        signum, frame = self.pending or (next(iter(handlers)), None)  # a rank not signalled
        self.pending = None
        handlers[signum](signum, frame)

    def _restore(self) -> dict[int, Any]:
        """Put the previous handlers back and return them by signal number."""
        handlers, self.previous = self.previous, {}
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        return handlers


class DivergedError(UserError, FloatingPointError):
    """Training produced a non-finite loss or gradient (the message names the step and the
    likely cause). ``step`` is the global step that was not taken."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


NONFINITE_ACTIONS = ("stop", "skip")


class NonFiniteGuard(L.Callback):
    """Catch a non-finite training loss or gradient before the optimiser applies it.

    ``action="stop"`` raises :class:`DivergedError` at the first bad step: one line naming the
    step and the likely cause (the learning rate, the precision); the weights, and the
    ``last.ckpt`` written before, stay finite. ``action="skip"`` drops that batch's gradients, so
    the optimiser step changes no weight, puts back the buffers its forward pass changed (the
    BatchNorm statistics and counts), counts it (logged as ``train/skipped_batches``, with a
    warning) and goes on; ``max_consecutive`` bad batches in a row stop as ``"stop"`` does. All
    DDP ranks take the same decision. Under 16-bit mixed precision the gradient scaler skips
    steps with overflowing gradients itself; only the loss is checked there.

    Args:
        action: ``"stop"`` or ``"skip"``.
        max_consecutive: in ``"skip"`` mode, how many bad batches in a row end the run.
    """

    def __init__(self, action: str, max_consecutive: int) -> None:
        if action not in NONFINITE_ACTIONS:
            raise ConfigError(
                f"nonfinite.action: expected one of {NONFINITE_ACTIONS}, got {action!r}"
            )
        self.action = action
        self.max_consecutive = integer_option(max_consecutive, "nonfinite.max_consecutive", 1)
        self.skipped = self.consecutive = 0
        self.loss: torch.Tensor | None = None
        self.batch_idx = 0
        self.buffers: dict[str, torch.Tensor] = {}

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict["skipped"])

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.batch_idx, self.loss = batch_idx, None
        if self.action == "skip":  # what a skipped batch's forward pass must not change
            self.buffers = {k: b.clone() for k, b in pl_module.named_buffers()}

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        self.loss = loss.detach()

    def _problem(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str | None:
        """What is non-finite on this rank ("loss nan", "gradients"), else None."""
        if self.loss is not None and not bool(torch.isfinite(self.loss)):
            return f"loss {float(self.loss)}"
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return None
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            return "gradients (the loss is finite)"
        return None

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        problem = self._problem(trainer, pl_module)
        if not trainer.strategy.reduce_boolean_decision(problem is not None, all=False):
            self.consecutive = 0
            return
        problem = problem or "values on another process"
        self.consecutive += 1
        if self.action == "stop" or self.consecutive >= self.max_consecutive:
            raise DivergedError(self._message(trainer, optimizer, problem), trainer.global_step)
        for param in pl_module.parameters():
            param.grad = None
        for name, buffer in pl_module.named_buffers():
            buffer.copy_(self.buffers[name])
        self.skipped += 1
        log.warning(
            "non-finite %s at global step %d (epoch %d, batch %d): batch skipped (%d so far)",
            problem,
            trainer.global_step,
            trainer.current_epoch,
            self.batch_idx,
            self.skipped,
        )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        if self.action == "skip":
            pl_module.log("train/skipped_batches", float(self.skipped), on_step=True)

    def _message(self, trainer: L.Trainer, optimizer: torch.optim.Optimizer, problem: str) -> str:
        lr = optimizer.param_groups[0]["lr"]
        last = next(
            (c.path for c in trainer.callbacks if isinstance(c, PreemptionCheckpoint)), None
        )
        kept = (
            f"the last finite checkpoint is kept: {last}"
            if last is not None and last.is_file()
            else "no checkpoint was written before it"
        )
        streak = f" ({self.consecutive} batches in a row)" if self.action == "skip" else ""
        return (
            f"training diverged at global step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}, batch {self.batch_idx}): non-finite {problem}{streak}; "
            f"likely cause: a learning rate too high (lr {lr:g} now, optim.optimizer.lr) or too "
            f"little precision (trainer.precision={trainer.precision}); {kept}"
        )
