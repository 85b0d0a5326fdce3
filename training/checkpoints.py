"""Checkpoints (model, optimizer, step, epoch, an interrupted epoch's metric sums, averaged
weights) in the run directory's `checkpoints/`.

tf.train.CheckpointManager writes each checkpoint's files first and then replaces the `checkpoint`
index file atomically, so a run killed mid-save still restores the previous checkpoint. A save
that fails (a full disk) removes its partial files and leaves the previous checkpoint the latest.
"""
import glob
import os
from typing import Optional

import keras
import tensorflow as tf

from host import disk_space
from rundir.history import EpochMeter
from rundir.layout import checkpoint_dir
from rundir.recovery import remove_partial_saves
from training.averaging import CHECKPOINT_KEY, checkpoint_object


def random_state_variables(model):
    return {f"state_{i}": v for i, v in enumerate(
        v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state"))}


def holds_average(path: str) -> bool:
    """Whether the checkpoint at `path` holds averaged weights (a run with --ema_decay)."""
    return any(name.startswith(CHECKPOINT_KEY + "/") for name, _ in tf.train.list_variables(path))


def read_average(path: str, variables: list) -> bool:
    """Reads the checkpoint's averaged weights into `variables` (averaging.averaged_weights'
    order: the averages of a WeightAverage, or a model's own weights to score the averages);
    False, reading nothing, when it holds none."""
    if not holds_average(path):
        return False
    status = tf.train.Checkpoint(**{CHECKPOINT_KEY: checkpoint_object(variables)}).read(path)
    status.assert_existing_objects_matched().expect_partial()
    return True


class Checkpoints:
    def __init__(self, run_dir, model, optimizer=None, keep=3, average=None, plateau=None):
        """`average`: the run's averaging.WeightAverage, saved beside the model (None: off);
        `plateau`: --lr_schedule=plateau's state (training/plateau.py), saved beside it too."""
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        objects = dict(model=model, step=self.step, epoch=self.epoch,
                       # Dropout's random state: not tracked by the model, but without it a resumed
                       # run would draw other dropout masks than an uninterrupted one.
                       random_states=random_state_variables(model))
        self.optimizer = optimizer
        self.loss_scale = None
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            # Saved beside the inner optimizer, not around it: the optimizer's state keeps the
            # same names with and without float16, so a run can resume or be evaluated in another
            # precision (float16 on GPUs, bfloat16 or float32 on a CPU).
            self.loss_scale = tf.train.Checkpoint(scale=optimizer.dynamic_scale,
                                                  good_steps=optimizer.step_counter)
            optimizer = optimizer.inner_optimizer
        if optimizer is not None:
            objects["optimizer"] = optimizer
        self._restorable = tf.train.Checkpoint(**objects)
        # The interrupted epoch's metric sums, in the checkpoint itself: a crash cannot leave a
        # checkpoint without the sums that belong to it (they were a file beside it once).
        self.epoch_sums = tf.Variable(tf.zeros([len(EpochMeter.FIELDS)], tf.float64),
                                      trainable=False, name="epoch_sums")
        self._epoch_sums = tf.train.Checkpoint(epoch_sums=self.epoch_sums)
        objects["epoch_sums"] = self.epoch_sums
        if self.loss_scale is not None:
            objects["loss_scale"] = self.loss_scale
        # Read apart, like the loss scale: a checkpoint of a run without averages restores too.
        self.average = average
        self.average_restored = False
        if average is not None:
            objects[CHECKPOINT_KEY] = average.checkpoint
        self.plateau = plateau
        if plateau is not None:
            objects["plateau"] = plateau.checkpoint
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.directory = checkpoint_dir(run_dir)
        # keep=0 keeps every checkpoint (CheckpointManager's None).
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory,
                                                  max_to_keep=keep or None)

    @property
    def latest(self):
        return self.manager.latest_checkpoint

    def restore(self, path=None):
        """Restores `path` or the latest checkpoint; returns the path, or None with none there.
        `average_restored` then says whether the averaged weights were in it."""
        path = path or self.latest
        if path is None:
            return None
        status = self._restorable.restore(path)
        # What is left unread is expected: evaluation restores the model without its optimizer,
        # and the loss scale and the average are read apart below (or not at all, in a run in
        # another precision than a float16 one or without --ema_decay).
        status.assert_existing_objects_matched().expect_partial()
        if self.loss_scale is not None:
            # A checkpoint of a run in another precision has none: the scale starts afresh.
            tf.train.Checkpoint(loss_scale=self.loss_scale).read(path).expect_partial()
        # Read apart from the rest, as checkpoints written before they held the sums have none.
        self.epoch_sums.assign(tf.zeros_like(self.epoch_sums))
        self._epoch_sums.read(path).expect_partial()
        if self.average is not None:
            # Without averages in it (a run that turns --ema_decay on), the average is left for
            # the trainer to start from the weights it goes on from.
            self.average_restored = read_average(path, self.average.averages)
        if self.plateau is not None:
            # A run that turns the plateau schedule on has no reductions yet: it starts at none.
            tf.train.Checkpoint(plateau=self.plateau.checkpoint).read(path).expect_partial()
        return path

    def restored_meter(self) -> EpochMeter:
        """The sums of the epoch the restored checkpoint interrupted (empty at an epoch's end)."""
        return EpochMeter.from_vector(self.epoch_sums.numpy())

    def saved_at(self, step: int) -> bool:
        """Whether the latest checkpoint is the one of `step`."""
        return self.latest is not None and self.latest.endswith(f"-{step}")

    def latest_bytes(self) -> int:
        """The size of the latest checkpoint's files: what the next one will need (0: none)."""
        if self.latest is None:
            return 0
        return sum(os.path.getsize(f) for f in glob.glob(glob.escape(self.latest) + ".*"))

    def save(self, step, epoch, meter: Optional[EpochMeter] = None):
        """Saves a checkpoint, with `meter`'s sums when it interrupts an epoch; raises DiskFull,
        before writing anything when the last one's size is not free, or after removing the
        partial files when the disk fills during the save."""
        needed = self.latest_bytes()
        disk_space.check_free(self.directory, needed)
        self.step.assign(step)
        self.epoch.assign(epoch)
        self.epoch_sums.assign((meter or EpochMeter()).vector())
        try:
            return self.manager.save(checkpoint_number=step)
        except BaseException as error:
            remove_partial_saves(self.directory)
            if disk_space.is_disk_full(error):
                path = disk_space.path_written(error, self.directory)
                raise disk_space.DiskFull(disk_space.disk_full_message(path, needed)) from None
            raise
