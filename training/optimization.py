"""The optimizers (SGD with momentum, AdamW, LAMB) and the learning-rate schedules, defined in
epochs (converted to steps here).

Every schedule is `lr * warmup(step) * decay(step)`. A --lr given when resuming takes over at that
step: from then on the rate is `new_lr * factor(step) / factor(resume_step)`, so the given value is
exactly the rate at the resume step and the schedule's shape continues from there.
"""
import math
from typing import TYPE_CHECKING, Optional

import keras
import tensorflow as tf

from training.plateau import Plateau
from training.step import is_decayed

if TYPE_CHECKING:  # settings/config.py imports this module for the schedules' names
    from settings.config import TrainConfig

class EpochSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate at a (float) optimiser step, from a schedule written in epochs."""

    def __init__(self, lr, schedule, steps_per_epoch, epochs, warmup_epochs=0.0,
                 decay_epochs=(), gamma=0.1, overrides=(), plateau: Optional[Plateau] = None):
        """`plateau`: the run's training/plateau.py state, whose reductions the plateau schedule
        multiplies in (without it, as before any reduction)."""
        self.lr = float(lr)
        self.schedule = schedule
        self.steps_per_epoch = int(steps_per_epoch)
        self.total_steps = max(1, int(epochs * steps_per_epoch))
        self.warmup_steps = int(round(warmup_epochs * steps_per_epoch))
        # The tolerance keeps a fractional epoch that is a whole step (28/30 of a 30-step epoch,
        # 27.999999999999996 in floating point) on that step, not the one before.
        self.boundaries = [int(e * steps_per_epoch + 1e-6) for e in decay_epochs]
        self.gamma = float(gamma)
        self.overrides = sorted((int(s), float(v)) for s, v in overrides)
        self.plateau = plateau

    def factor(self, step):
        """The multiplier of the base rate at `step` (a float tensor)."""
        step = tf.cast(step, tf.float32)
        if self.schedule == "exponential_step":
            passed = tf.add_n([tf.cast(step >= b, tf.float32) for b in self.boundaries] + [0.0])
            decay = tf.pow(self.gamma, passed)
        elif self.schedule == "polynomial":  # power 1: linear to zero at the last step
            decay = tf.maximum(0.0, 1.0 - step / self.total_steps)
        elif self.schedule == "cosine":
            progress = tf.minimum(1.0, step / self.total_steps)
            decay = 0.5 * (1.0 + tf.cos(math.pi * progress))
        elif self.schedule == "plateau" and self.plateau is not None:
            decay = self.plateau.factor()
        else:
            decay = tf.constant(1.0)
        if self.warmup_steps:
            decay *= tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return decay

    def __call__(self, step):
        lr = self.lr * self.factor(step)
        for start, value in self.overrides:
            # max() keeps a zero factor (the end of a polynomial schedule) from dividing by zero.
            override = value * self.factor(step) / tf.maximum(self.factor(start), 1e-12)
            lr = tf.where(tf.cast(step, tf.float32) >= start, override, lr)
        return lr

    def describe(self) -> str:
        """The schedule as the start line gives it, in epochs, from the steps it uses: e.g.
        'lr 0.1 (1-epoch warm-up; x0.3 at epochs 70, 140, 210, 280)'."""
        def epochs(steps):
            return f"{round(steps / self.steps_per_epoch, 3):g}"
        parts = []
        if self.warmup_steps:
            parts.append(f"{epochs(self.warmup_steps)}-epoch warm-up")
        if self.schedule == "exponential_step" and self.boundaries:
            steps = sorted(set(self.boundaries))
            plural = "s" if len(steps) > 1 else ""
            if len(steps) == len(self.boundaries):
                parts.append(f"x{self.gamma:g} at epoch{plural} "
                             f"{', '.join(epochs(b) for b in steps)}")
            else:  # a short run: several decay epochs fall on one step, and multiply there
                parts.append(", ".join(
                    f"x{self.gamma ** self.boundaries.count(b):.3g} at epoch {epochs(b)}"
                    for b in steps) + f" ({len(self.boundaries)} decays on {len(steps)} "
                    f"step{plural}: those on one step multiply)")
        elif self.schedule in ("polynomial", "cosine"):
            shape = "linear" if self.schedule == "polynomial" else "cosine"
            parts.append(f"{shape} to 0 at epoch {epochs(self.total_steps)}")
        elif self.schedule == "plateau":
            patience = self.plateau.patience if self.plateau is not None else "N"
            parts.append(f"x{self.gamma:g} after each {patience} evaluations without a better "
                         f"validation top-1")
        else:
            parts.append("constant")
        parts += [f"set to {rate:g} at step {step}" for step, rate in self.overrides]
        return f"lr {self.lr:g} ({'; '.join(parts)})"

    def get_config(self):
        return dict(lr=self.lr, schedule=self.schedule, steps_per_epoch=self.steps_per_epoch)


def schedule_change(previous: "TrainConfig", config: "TrainConfig", steps_per_epoch: int,
                    step: int) -> Optional[str]:
    """A line for the start of a resumed run whose schedule this command reshaped (another
    --epochs stretches a cosine or linear decay, and a finished run's rate rises again from
    zero), giving the rate at the resume step before and now; None when it is unchanged or a
    --lr given now sets it."""
    if any(start == step for start, _ in config.lr_overrides):
        return None
    before = float(schedule_from_config(previous, steps_per_epoch, previous.lr_overrides)(step))
    now = float(schedule_from_config(config, steps_per_epoch, config.lr_overrides)(step))
    if math.isclose(before, now, rel_tol=1e-6, abs_tol=1e-12):
        return None
    changed = [f"--{key}={getattr(config, key)} (was {getattr(previous, key)})"
               for key in ("epochs", "lr_schedule", "warmup_epochs", "lr_decay_epochs",
                           "lr_gamma") if getattr(config, key) != getattr(previous, key)]
    return (f"This command reshapes the run's learning-rate schedule ({', '.join(changed)}): at "
            f"step {step} the rate is {now:.4g}, where it was {before:.4g}, and it follows the "
            f"new schedule from there.")


def schedule_from_config(config, steps_per_epoch, overrides, plateau=None):
    return EpochSchedule(config.lr, config.lr_schedule, steps_per_epoch, config.epochs,
                         config.warmup_epochs, config.lr_decay_epochs or (), config.lr_gamma,
                         overrides, plateau)


def settled_overrides(config: "TrainConfig", steps_per_epoch: int) -> tuple:
    """The run's --lr overrides without the last one if it equals the rate the schedule gives at
    its step without it (a resume that repeats the rate in force changes nothing). Compared with
    the scheduled rate there, not with the base rate: after a decay from 0.1 to 0.03, --lr=0.1 is
    a change."""
    if not config.lr_overrides:
        return config.lr_overrides
    start, value = config.lr_overrides[-1]
    before = schedule_from_config(config, steps_per_epoch, config.lr_overrides[:-1])
    if math.isclose(float(before(start)), value, rel_tol=1e-6):
        return config.lr_overrides[:-1]
    return config.lr_overrides


def build_optimizer(config, steps_per_epoch, model: Optional[keras.Model] = None,
                    plateau: Optional[Plateau] = None):
    """The --optimizer on the epoch schedule (with `plateau`'s reductions on a plateau
    schedule); loss scaling for float16.

    SGD's weight decay is L2 in the loss (training/step.py); AdamW's and LAMB's is Keras'
    decoupled decay, kept off every weight of `model` that `step.is_decayed` leaves out, so the
    same weights decay whichever optimizer trains them."""
    schedule = schedule_from_config(config, steps_per_epoch, config.lr_overrides, plateau)
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum,
                                         nesterov=config.nesterov)
    else:
        kind = {"adamw": keras.optimizers.AdamW, "lamb": keras.optimizers.Lamb}[config.optimizer]
        optimizer = kind(schedule, weight_decay=config.weight_decay or None)
        if model is not None and config.weight_decay:
            optimizer.exclude_from_weight_decay(
                var_list=[v for v in model.trainable_variables if not is_decayed(v)])
    if keras.mixed_precision.global_policy().compute_dtype == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer, schedule


def step_weight_decay(config) -> float:
    """The L2 weight decay the training step adds to the loss: SGD's; the other optimizers
    decay the weights themselves (`build_optimizer`)."""
    return config.weight_decay if config.optimizer == "sgd" else 0.0
