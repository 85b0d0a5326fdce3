"""The training loop: epochs of distributed steps, logging, evaluation, checkpoints, clean stops.

The host reads the step results only every `log_every` steps (and before every checkpoint), so the
devices are never held up by a per-step sync; a non-finite loss is still traced to its exact step,
and no checkpoint is ever written from non-finite weights.
"""
import datetime
import json
import os
import shutil
import signal
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import input_pipeline
from input_pipeline.progress import ProgressBar
from training import devices, evaluation, optimization
from training.checkpoints import Checkpoints
from training.history import EpochMeter, History
from training.restart import set_aside_after
from training.run_dir import build_model_from_config, save_run_config
from training.step import StepConfig, make_eval_step, make_train_step
from training.summaries import Summaries

DONE_FILE = "training_done.json"  # read by evaluate.py --watch


class TrainingInterrupted(Exception):
    """Raised after a signal stopped training and its checkpoint was saved."""

    def __init__(self, message, signal_number):
        super().__init__(message)
        self.signal_number = signal_number


class _StopOnSignal:
    """SIGINT / SIGTERM set a flag the loop checks between steps, so it can save and stop."""

    def __init__(self):
        self.received = None

    def __enter__(self):
        self.previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.received is not None:  # a second Ctrl+C: stop at once
            raise KeyboardInterrupt
        self.received = signum
        print(f"\n{signal.Signals(signum).name} received: saving a checkpoint at this step...",
              flush=True)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class Trainer:
    """One run: `Trainer(config).train()`; `config` is a resolved `TrainConfig`."""

    def __init__(self, config, towers=None, print_fn=print, restart=None):
        """`restart`: an older checkpoint of the run to continue from (restart.find_restart)."""
        self.config = config
        self.print = print_fn
        self.worker = devices.worker_from_tf_config(config.strategy)
        if self.worker.multi_worker:
            # Created first: it configures the collective ops TensorFlow sets up at start-up.
            self.strategy = devices.make_multi_worker_strategy()
            self.towers = list(self.strategy.extended.worker_devices)
        else:
            # Towers first: splitting the CPU must happen before TF initialises its devices.
            self.towers = towers or devices.configure_towers(config.num_gpus, config.towers_on_cpu)
            self.strategy = devices.make_strategy(self.towers)
        if config.deterministic:
            keras.utils.set_random_seed(config.seed)
            tf.config.experimental.enable_op_determinism()
        self.per_tower_batch = devices.check_batch_size(config.batch_size,
                                                        self.strategy.num_replicas_in_sync)
        self.precision = devices.precision_policy(config.mixed_precision, self.towers,
                                                  config.mixed_precision_dtype)
        keras.mixed_precision.set_global_policy(self.precision)
        # Only the chief writes into the run directory; other workers write to a scratch
        # directory that is removed when they finish.
        chief = self.worker.is_chief
        self.write_dir = config.run_dir if chief else tempfile.mkdtemp(prefix="googlenet-worker-")
        if chief:
            save_run_config(config)  # first, so the directory is never ours without it

        self.splits = input_pipeline.load_dataset(config.dataset, config.data_dir,
                                                  run_dir=config.run_dir,
                                                  test_fraction=config.test_fraction,
                                                  seed=config.seed, write=chief)
        if config.num_classes not in (None, self.splits.num_classes):
            raise ValueError(f"{config.run_dir!r} was trained on {config.num_classes} classes; "
                             f"the data now has {self.splits.num_classes}")
        config.num_classes = self.splits.num_classes

        augmentation = input_pipeline.get_dataset(config.dataset).augmentation_for(
            len(self.splits.train))
        cache_dir = (config.cache_dir if chief and config.cache_dir
                     else os.path.join(self.write_dir, "cache"))
        common = dict(image_size=config.image_size, cache=config.cache, cache_dir=cache_dir,
                      report_dir=config.run_dir if chief else None,
                      progress=self.print is print)
        # Each worker reads its own shard, so no two read the same examples in an epoch.
        shard = (self.worker.count, self.worker.index) if self.worker.multi_worker else None
        self.train_data = input_pipeline.InputPipeline(
            self.splits.train, training=True, seed=config.seed, augmentation=augmentation,
            shard=shard, subset="train", **common)
        self.test_data = (input_pipeline.InputPipeline(self.splits.test, training=False,
                                                       subset=self.splits.test_name, **common)
                          if chief else None)
        # Workers meet in every all-reduce, so they must agree on the steps per epoch: computed
        # alike everywhere from the split, not from what each one could decode.
        examples = (len(self.splits.train) // self.worker.count if self.worker.multi_worker
                    else self.train_data.num_examples)
        self.steps_per_epoch = examples // (self.per_tower_batch * len(self.towers))
        if self.steps_per_epoch == 0:
            raise ValueError(f"--batch_size={config.batch_size} is larger than the {examples} "
                             f"training images of a worker")

        optimization.drop_unchanged_override(config, self.steps_per_epoch)
        if chief:
            save_run_config(config)
        self.set_aside = None
        if restart is not None and chief:
            # Last, once every setting and the data have been accepted.
            self.set_aside = set_aside_after(config.run_dir, restart)
        with self.strategy.scope():
            self.model = build_model_from_config(config)
            self.optimizer, self.schedule = optimization.build_optimizer(config, self.steps_per_epoch)
            self.optimizer.build(self.model.trainable_variables)
            self.checkpoints = Checkpoints(self.write_dir, self.model, self.optimizer,
                                           keep=config.keep_checkpoints)
            # Every worker restores the chief's checkpoint (a shared file system on clusters).
            self.restored = self.checkpoints.restore(
                restart.path if restart is not None
                else tf.train.latest_checkpoint(os.path.join(config.run_dir, "checkpoints")))
        step_config = StepConfig(config.batch_size, config.num_classes, config.aux_weight,
                                 config.label_smoothing, config.weight_decay)
        self.augment_on = devices.augment_on(config.augment_on, self.towers)
        self.train_step = make_train_step(
            self.model, self.optimizer, self.strategy, step_config, jit_compile=config.jit_compile,
            augment=self.train_data.augment if self.augment_on == "device" else None)
        # Held-out evaluation runs on the chief alone, outside the all-reduce, with one worker's
        # towers (all of them when there is one worker).
        self.eval_strategy = (tf.distribute.get_strategy() if self.worker.multi_worker
                              else self.strategy)
        self.eval_step = make_eval_step(self.model, self.eval_strategy)
        self.summaries = Summaries(self.write_dir, self.towers)
        self.history = History(config.run_dir)

    # -- helpers -------------------------------------------------------------------------------
    def _run_dataset(self, start_step):
        """Every remaining epoch as one distributed dataset: one global step takes one batch per
        tower, and a run resumed mid-epoch skips the steps it has done."""
        towers, steps = len(self.towers), self.steps_per_epoch  # this worker's towers
        epoch = start_step // steps

        def dataset_fn(ctx):
            return self.train_data.dataset(
                self.per_tower_batch, epoch=epoch, num_epochs=self.config.epochs - epoch,
                take_batches=steps * towers, skip_batches=(start_step - epoch * steps) * towers,
                augment_on=self.augment_on)
        return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

    def _flush(self, pending, first_step, seconds, progress):
        """Reads the pending step results (one host sync), checks them, logs them."""
        if not pending:
            return None
        stacked = {k: np.stack([p[k].numpy() for p in pending]) for k in pending[0]}
        totals = stacked["total_loss"].mean(axis=1)
        bad = np.flatnonzero(~np.isfinite(totals))
        if bad.size:
            raise FloatingPointError(
                f"The loss became {totals[bad[0]]} at step {first_step + bad[0] + 1}; training "
                f"stopped. The latest checkpoint ({self.checkpoints.latest}) holds the last good "
                f"weights: lower --lr or check the data, then run the same command to resume")
        step = first_step + len(pending)
        means = {k: v.mean(axis=0) for k, v in stacked.items()}
        images_per_second = len(pending) * self.config.batch_size / max(seconds, 1e-9)
        lr = float(self.schedule(step - 1))
        self.summaries.write_train(step, means, lr, images_per_second)
        progress.update(step - self.epoch_start_step, loss=float(np.mean(means["total_loss"])),
                        top1=float(np.mean(means["accuracy"])),
                        **{"img/s": round(images_per_second)})
        self.meter.add(len(pending), seconds, float(np.mean(means["total_loss"])),
                       float(np.mean(means["cross_entropy"])), float(np.mean(means["accuracy"])))
        return means

    def evaluate(self):
        probs, labels = evaluation.predict(self.model, self.eval_strategy, self.test_data,
                                           self.per_tower_batch, self.eval_step)
        return evaluation.scores(probs, labels)

    # -- the loop ------------------------------------------------------------------------------
    def train(self):
        try:
            return self._train()
        except tf.errors.ResourceExhaustedError as error:
            raise ValueError(self._out_of_memory_message(error)) from None
        finally:
            if not self.worker.is_chief:
                shutil.rmtree(self.write_dir, ignore_errors=True)

    def _train(self):
        config = self.config
        step = int(self.checkpoints.step.numpy())
        total_steps = config.epochs * self.steps_per_epoch
        if self.restored:
            self.print(f"Resumed from {self.restored} at step {step} "
                       f"(epoch {step // self.steps_per_epoch + 1}).")
        if self.set_aside:
            self.print(f"The later checkpoints, history and logs were moved to {self.set_aside}.")
        held_out = (self.test_data.num_examples if self.test_data is not None
                    else len(self.splits.test))
        self.print(f"Training {config.model} on {config.dataset}: {self.train_data.num_examples} "
                   f"train / {held_out} {self.splits.test_name} images (readable; "
                   f"{self.splits.layout}), {config.num_classes} classes, {len(self.towers)} "
                   f"tower(s) "
                   f"[{', '.join(devices.describe_tower(d) for d in self.towers)}], global "
                   f"batch {config.batch_size}, {self.steps_per_epoch} steps/epoch, "
                   f"{self.precision}, augmented on the {self.augment_on}. "
                   f"Run dir: {config.run_dir}")
        last_eval = None
        wrote_inputs = step > 0
        if self.worker.is_chief:
            if os.path.exists(os.path.join(config.run_dir, DONE_FILE)):
                os.remove(os.path.join(config.run_dir, DONE_FILE))
            # Epochs after the checkpoint are trained again: their rows go.
            self.history.keep_epochs_up_to(step // self.steps_per_epoch)
        batches = self._run_dataset(step) if step < total_steps else None
        with _StopOnSignal() as stop:
            while step < total_steps and not stop.received:
                epoch = step // self.steps_per_epoch
                self.epoch_start_step = epoch * self.steps_per_epoch
                # A resumed epoch continues the sums saved with its checkpoint.
                self.meter = (EpochMeter.resume(config.run_dir, step)
                              if step > self.epoch_start_step and self.worker.is_chief
                              else EpochMeter())
                # Each epoch's bar counts that epoch's steps, from where it starts (0, or the
                # resumed step).
                progress = ProgressBar(self.steps_per_epoch, enabled=self.print is print)
                progress.update(step - self.epoch_start_step)
                started = window_start = time.perf_counter()
                pending, first_step = [], step
                for _ in range(self.epoch_start_step + self.steps_per_epoch - step):
                    if stop.received:
                        break
                    images, labels = next(batches)
                    if not wrote_inputs:
                        local = self.strategy.experimental_local_results(images)[0]
                        if self.augment_on == "device":
                            local = self.train_data.augment(local)
                        self.summaries.write_model_and_inputs(step, self.model, local,
                                                              config.image_size)
                        wrote_inputs = True
                    pending.append(self.train_step(images, labels))
                    step += 1
                    due_checkpoint = config.checkpoint_every and step % config.checkpoint_every == 0
                    if (step - self.epoch_start_step) % config.log_every == 0 or due_checkpoint:
                        self._flush(pending, first_step, time.perf_counter() - window_start,
                                    progress)
                        pending, first_step, window_start = [], step, time.perf_counter()
                        if due_checkpoint and step % self.steps_per_epoch:
                            self._save_mid_epoch(step)
                self._flush(pending, first_step, time.perf_counter() - window_start, progress)
                if not stop.received:
                    last_eval = self._end_epoch(epoch, step, time.perf_counter() - started)
            if stop.received:
                path = self._save_mid_epoch(step)
                raise TrainingInterrupted(
                    f"Stopped at step {step} of {total_steps}; checkpoint saved to {path}. "
                    f"Run the same command again to resume (without --lr, unless that rate should "
                    f"take over from here).", stop.received)
        if not self.worker.is_chief:  # the chief evaluates and writes the run directory
            return dict(step=step, worker=self.worker.index)
        if last_eval is None:
            last_eval = self.evaluate()
        # Tells `evaluate.py --watch` which checkpoint is the last one.
        with open(os.path.join(config.run_dir, DONE_FILE), "w") as f:
            json.dump({"step": step, "checkpoint": self.checkpoints.latest}, f)
        return dict(step=step, **last_eval)

    def _out_of_memory_message(self, error):
        """What to do when a tower's batch does not fit in its device's memory: a smaller global
        batch (still a multiple of the towers), instead of TensorFlow's traceback."""
        config, towers = self.config, len(self.towers)
        smaller = max(towers, config.batch_size // 2 // towers * towers)
        hint = "" if self.precision != "float32" else (
            ", or --mixed_precision (16-bit activations take half the memory)")
        return (f"out of memory with {self.per_tower_batch} images of {config.image_size} px per "
                f"tower (--batch_size={config.batch_size} over {towers} tower(s), "
                f"--model={config.model}): {error.message.splitlines()[0][:200]}. Try "
                f"--batch_size={smaller}{hint}; --lr is the rate for the global batch, so scale "
                f"it with the batch")

    def _save_mid_epoch(self, step):
        path = self.checkpoints.save(step, step // self.steps_per_epoch)
        if self.worker.is_chief and step % self.steps_per_epoch:
            self.meter.save(self.config.run_dir, step)
        return path

    def _end_epoch(self, epoch, step, seconds):
        """Evaluates (when due), logs the epoch, appends its history row, then saves its
        checkpoint: a crash in between leaves a row that the resumed run drops and rewrites."""
        config = self.config
        done = epoch + 1
        result = None
        eval_started = time.perf_counter()
        if self.worker.is_chief and (done % config.eval_every_epochs == 0 or done == config.epochs):
            result = self.evaluate()
            self.summaries.write_eval(step, result)
        eval_seconds = time.perf_counter() - eval_started
        meter = self.meter
        loss, top1 = meter.mean("total_loss"), meter.mean("top1")
        self.summaries.write_epoch(done, meter.mean("cross_entropy"), top1, result)
        if self.worker.is_chief:
            trained = meter.sums["steps"] * config.batch_size
            self.history.append(
                epoch=done, step=step, train_loss=loss,
                train_cross_entropy=meter.mean("cross_entropy"), train_top1=top1,
                heldout_loss=result and result["loss"], heldout_top1=result and result["top1"],
                heldout_top5=result and result["top5"], lr=float(self.schedule(step - 1)),
                images_per_second=round(trained / max(meter.train_seconds, 1e-9), 1),
                epoch_seconds=round(meter.train_seconds + eval_seconds, 2),
                wall_time=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
        path = self.checkpoints.save(step, done)
        if self.worker.is_chief:
            EpochMeter.clear(config.run_dir)
        line = f"Epoch {done}/{config.epochs}: train loss {loss:.4f} top-1 {top1:.4f}"
        if result:
            line += (f" | {self.splits.test_name} top-1 {result['top1']:.4f} "
                     f"top-5 {result['top5']:.4f}")
        self.print(line + f" | {seconds + eval_seconds:.1f}s | saved {os.path.basename(path)}")
        return result
