"""What the training loop reports to: the console, TensorBoard, and the run's history and plot.

The loop (training/loop.py) runs the steps, reads their results every --log_every steps and
saves the checkpoints; it tells each observer what happened, in this order per epoch:
`epoch_started`, `steps_done` per window of steps read in one host sync, `epoch_done` (before
the epoch's checkpoint is saved, so a crash in between leaves a history row the resumed run drops
and rewrites), then `epoch_saved` or, when the save failed, `epoch_unsaved`.
"""
import dataclasses
import datetime
import os
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from host.console import ProgressBar
from rundir.roles import Role
from training.summaries import Summaries


@dataclasses.dataclass(frozen=True)
class Window:
    """Steps `first_step`+1 .. `step` as read in one host sync: their per-tower means."""
    first_step: int
    step: int
    means: dict
    lr: float
    images_per_second: float
    seconds: float

    @property
    def loss(self) -> float:
        return float(np.mean(self.means["total_loss"]))

    @property
    def top1(self) -> float:
        return float(np.mean(self.means["accuracy"]))


@dataclasses.dataclass(frozen=True)
class EpochSummary:
    """A finished epoch: its train means, held-out scores (None when not due; the validation
    split's under "val" with --val_fraction), learning rate at its last step and speed;
    `train_seconds` are its steps' (a resumed epoch's included), `wall_seconds` what it took in
    this process, its evaluation included."""
    epoch: int
    step: int
    train_loss: float
    train_cross_entropy: float
    train_top1: float
    heldout: Optional[dict]
    lr: float
    images_per_second: float
    train_seconds: float
    eval_seconds: float
    wall_seconds: float


class Observer:
    """Does nothing at each event; observers override what they use."""

    def epoch_started(self, epoch: int, steps_done: int) -> None:
        pass

    def first_batch(self, step: int, images: object) -> None:
        pass

    def steps_done(self, window: Window) -> None:
        pass

    def epoch_done(self, summary: EpochSummary) -> None:
        pass

    def epoch_unsaved(self) -> None:
        pass

    def epoch_saved(self, summary: EpochSummary, checkpoint: str) -> None:
        pass


class Console(Observer):
    """The progress bar of each epoch and the line that ends it."""

    def __init__(self, print_fn: Callable[..., None], steps_per_epoch: int, epochs: int,
                 held_out_name: str) -> None:
        self.print = print_fn
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.held_out_name = held_out_name
        self.progress = None

    def epoch_started(self, epoch: int, steps_done: int) -> None:
        # The bar counts this epoch's steps, from where it starts (0, or the resumed step).
        self.epoch_start = epoch * self.steps_per_epoch
        self.progress = ProgressBar(self.steps_per_epoch, enabled=self.print is print)
        self.progress.update(steps_done)

    def steps_done(self, window: Window) -> None:
        self.progress.update(window.step - self.epoch_start, loss=window.loss, top1=window.top1,
                             **{"img/s": round(window.images_per_second)})

    def epoch_saved(self, summary: EpochSummary, checkpoint: str) -> None:
        line = (f"Epoch {summary.epoch}/{self.epochs}: train loss {summary.train_loss:.4f} "
                f"top-1 {summary.train_top1:.4f}")
        result = summary.heldout
        validation = (result or {}).get("val")
        if validation:
            line += f" | validation top-1 {validation['top1']:.4f}"
            if "ema" in validation:
                line += f" (averaged weights: {validation['ema']['top1']:.4f})"
        if result:
            line += (f" | {self.held_out_name} top-1 {result['top1']:.4f} "
                     f"top-5 {result['top5']:.4f}")
            if "tta" in result:
                line += f" (with TTA: top-1 {result['tta']['top1']:.4f})"
            if "ema" in result:
                line += (f" (averaged weights: top-1 {result['ema']['top1']:.4f} "
                         f"top-5 {result['ema']['top5']:.4f}")
                if "tta" in result["ema"]:
                    line += f"; with TTA: top-1 {result['ema']['tta']['top1']:.4f}"
                line += ")"
        self.print(line + f" | {summary.wall_seconds:.1f}s | saved "
                   f"{os.path.basename(checkpoint)}")


class TensorBoard(Observer):
    """train/ and eval/ logs: the graph and first inputs, per-tower losses per window, held-out
    scores and per-epoch curves."""

    def __init__(self, summaries: Summaries, strategy: tf.distribute.Strategy, model: keras.Model,
                 image_size: int, augment: Optional[Callable] = None) -> None:
        """`augment`: the pipeline's augmentation when the towers apply it (the batches then
        hold the cached squares and the drawn parameters)."""
        self.summaries, self.strategy, self.model = summaries, strategy, model
        self.image_size, self.augment = image_size, augment

    def first_batch(self, step: int, images: object) -> None:
        """The graph and the first batch, as the model sees it."""
        local = self.strategy.experimental_local_results(images)[0]
        if self.augment is not None:
            local = self.augment(local)
        self.summaries.write_model_and_inputs(step, self.model, local, self.image_size)

    def steps_done(self, window: Window) -> None:
        self.summaries.write_train(window.step, window.means, window.lr,
                                   window.images_per_second)

    def epoch_done(self, summary: EpochSummary) -> None:
        if summary.heldout:
            self.summaries.write_eval(summary.step, summary.heldout)
            if summary.heldout.get("val"):
                self.summaries.write_validation(summary.step, summary.epoch,
                                                summary.heldout["val"])
        self.summaries.write_epoch(summary.epoch, summary.train_cross_entropy,
                                   summary.train_top1, summary.heldout)


def validation_columns(validation: Optional[dict]) -> dict:
    """history.csv's val_* columns of the validation split's scores (None: all empty)."""
    validation = validation or {}
    ema = validation.get("ema") or {}
    return dict(val_loss=validation.get("loss"), val_top1=validation.get("top1"),
                val_top5=validation.get("top5"), val_ema_loss=ema.get("loss"),
                val_ema_top1=ema.get("top1"), val_ema_top5=ema.get("top5"),
                val_tta_top1=(validation.get("tta") or {}).get("top1"),
                val_ema_tta_top1=(ema.get("tta") or {}).get("top1"))


class HistoryRows(Observer):
    """history.csv's row per epoch (taken back when its checkpoint did not land) and the
    history.png redrawn after each save; the chief's alone (rundir/roles.py)."""

    def __init__(self, role: Role) -> None:
        self.role = role

    def epoch_done(self, summary: EpochSummary) -> None:
        result = summary.heldout or {}
        ema = result.get("ema") or {}
        tta, ema_tta = result.get("tta") or {}, ema.get("tta") or {}
        self.role.record_epoch(
            epoch=summary.epoch, step=summary.step, train_loss=summary.train_loss,
            train_cross_entropy=summary.train_cross_entropy, train_top1=summary.train_top1,
            heldout_loss=result.get("loss"), heldout_top1=result.get("top1"),
            heldout_top5=result.get("top5"), heldout_ema_loss=ema.get("loss"),
            heldout_ema_top1=ema.get("top1"), heldout_ema_top5=ema.get("top5"),
            heldout_tta_loss=tta.get("loss"), heldout_tta_top1=tta.get("top1"),
            heldout_tta_top5=tta.get("top5"), heldout_ema_tta_top1=ema_tta.get("top1"),
            **validation_columns(result.get("val")),
            lr=summary.lr,
            images_per_second=round(summary.images_per_second, 1),
            epoch_seconds=round(summary.train_seconds + summary.eval_seconds, 2),
            wall_time=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))

    def epoch_unsaved(self) -> None:
        self.role.unrecord_epoch()

    def epoch_saved(self, summary: EpochSummary, checkpoint: str) -> None:
        self.role.epoch_saved()
