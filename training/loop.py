"""The training loop: epochs of distributed steps, reported to observers, with checkpoints and
clean stops.

`Trainer(config)` sets the run up: it applies the process settings, takes the run directory's
part (config.json, the data split, a --restart_from's set-aside; rundir/roles.py says what only
the chief writes), builds the parts without side effects (training/builder.py) and restores the
latest checkpoint. `train()` then runs the epochs and tells the observers (training/observers.py:
console, TensorBoard, history and plot; with --val_fraction training/validation_watch.py: the
best epoch, the early stop, the plateau reductions) what happened.

The host reads the step results only every `log_every` steps (and before every checkpoint), so the
devices are never held up by a per-step sync; a non-finite loss is still traced to its exact step,
and no checkpoint is ever written from non-finite weights.
"""
import dataclasses
import os
import time
from typing import Callable, Iterator, List, Optional

import numpy as np
import tensorflow as tf

import input_pipeline
from host import disk_space
from host.console import PassProgress
from host.signals import StopOnSignal, TrainingInterrupted
from rundir.best import BestEpoch
from rundir.history import EpochMeter
from rundir.layout import checkpoint_dir, config_path, split_dir
from rundir.recorded import load_run_config
from rundir.restart import Restart
from rundir.roles import Role
from settings.cluster import Worker, worker_from_tf_config
from settings.config import TrainConfig
from training import builder, devices, finetune, heldout
from training.observers import Console, EpochSummary, HistoryRows, TensorBoard, Window
from training.profiling import StepProfiler
from training.start_line import resume_lines, start_lines
from training.summaries import Summaries
from training.validation_watch import ValidationWatch

__all__ = ["Trainer", "TrainingInterrupted"]


@dataclasses.dataclass
class _Epoch:
    """One epoch as it runs: its number, steps and metric sums (`meter`)."""
    index: int
    start_step: int
    end_step: int
    meter: EpochMeter
    started: float = dataclasses.field(default_factory=time.perf_counter)


class Trainer:
    """One run: `Trainer(config).train()`; `config` is a resolved `TrainConfig`
    (rundir.recorded.resolve_config). `self.config` is that config with what the data decides."""

    def __init__(self, config: TrainConfig, towers: Optional[List[str]] = None,
                 print_fn: Callable[..., None] = print, restart: Optional[Restart] = None,
                 worker: Optional[Worker] = None) -> None:
        """`towers`: device names (default: devices.configure_towers); `restart`: an older
        checkpoint of the run to continue from (rundir.restart.find_restart); `worker`: this
        process's place in a job, as train.py read it from TF_CONFIG (default: read here)."""
        self.print = print_fn
        worker = worker or worker_from_tf_config(config.strategy)
        if not worker.multi_worker:
            # Towers first: splitting the CPU must happen before TF initialises its devices.
            towers = towers or devices.configure_towers(config.num_gpus, config.towers_on_cpu)
        self.towers = builder.build_towers(config, worker, towers)
        self.precision = devices.precision_policy(config.mixed_precision, self.towers.devices,
                                                  config.mixed_precision_dtype)
        builder.apply_process_settings(config, self.precision)
        # A new run's --init_from is looked up before anything is written (a run under way reads
        # its own checkpoint instead, so it no longer needs the source).
        new_run = restart is None and tf.train.latest_checkpoint(
            checkpoint_dir(config.run_dir)) is None
        init_source = (finetune.find_init_source(config.init_from)
                       if config.init_from is not None and new_run else None)
        watches = ("--early_stopping" if config.early_stopping else
                   "--lr_schedule=plateau" if config.lr_schedule == "plateau" else None)
        if watches and worker.multi_worker:
            # Only the chief scores the validation split; the other workers could not hear
            # when to stop or to lower the rate, and would part from the chief.
            raise ValueError(f"{watches}: not available in a multi-worker job (only the chief "
                             f"scores the validation split); train without it")
        self.role = role = Role(worker, config)
        # The settings the run trained with until now: what a resumed run's start line compares
        # its schedule with.
        self.previous_config = (load_run_config(config.run_dir)
                                if os.path.exists(config_path(config.run_dir)) else None)
        # A damaged saved split is named before config.json is rewritten, so that start changes
        # nothing.
        if role.is_chief:
            input_pipeline.check_saved_split(split_dir(config.run_dir))
        # Saved first, so the directory is never ours without it: a start refused after the data
        # was split leaves a run the corrected command starts afresh.
        role.save_config(config)
        self.splits = input_pipeline.load_dataset(
            config.dataset, config.data_dir, split_dir=split_dir(config.run_dir),
            test_fraction=config.test_fraction, seed=config.seed, write=role.is_chief,
            val_fraction=config.val_fraction)
        self.data = builder.build_data(
            config, self.towers, self.splits, evaluates=role.evaluates,
            cache_dir=role.cache_dir(config), report_dir=role.report_dir,
            progress=PassProgress() if print_fn is print else None)
        self.config = builder.settled_config(config, self.splits, self.data, self.precision)
        if self.config != config:
            role.save_config(self.config)
        # Last, once every setting and the data have been accepted.
        self.set_aside = role.set_aside(restart)
        builder.seed_weights(self.config)
        self.state = builder.build_state(self.config, self.towers, self.data.steps_per_epoch,
                                         role.write_dir)
        self.restored = builder.restore_state(
            self.config, self.towers, self.state,
            restart.path if restart is not None
            else tf.train.latest_checkpoint(checkpoint_dir(config.run_dir)),
            init_source, self.splits.class_names)
        self.steps = builder.build_steps(self.config, self.towers, self.state, self.data.train,
                                         self.data.class_weights)
        self.summaries = Summaries(role.write_dir, self.towers.devices)
        self.observers = [Console(print_fn, self.data.steps_per_epoch, self.config.epochs,
                                  self.splits.test_name),
                          TensorBoard(self.summaries, self.towers.strategy, self.state.model,
                                      self.config.image_size,
                                      self.data.train.augment
                                      if self.steps.augment_on == "device" else None),
                          HistoryRows(role)]
        # What the validation split decides (training/validation_watch.py), known once the
        # history is trimmed.
        self.watch: Optional[ValidationWatch] = None
        # The chief's trace only: another worker's logs are scratch, removed when it stops.
        self.profiler = StepProfiler(self.config.profile_steps if role.is_chief else None,
                                     self.summaries.train_dir)

    # -- the loop ------------------------------------------------------------------------------
    def train(self) -> dict:
        """Trains to config.epochs; the step and (on the chief) the last held-out scores."""
        try:
            return self._train()
        except tf.errors.ResourceExhaustedError as error:
            if disk_space.is_disk_full(error):  # TensorFlow's code for ENOSPC too
                raise
            config = self.config
            raise ValueError(devices.out_of_memory_message(
                error, config.batch_size, self.towers.count, self.towers.per_tower_batch,
                config.image_size, config.model, self.precision)) from None
        finally:
            self.profiler.stop()  # a range cut short by the end, a stop or an error
            self.role.close()

    def _train(self) -> dict:
        config, steps_per_epoch = self.config, self.data.steps_per_epoch
        step = int(self.state.checkpoints.step.numpy())
        total_steps = config.epochs * steps_per_epoch
        self.announce(step)
        self.role.start(step // steps_per_epoch, steps_per_epoch, warn=self.print)
        if self.data.validation is not None:
            self.watch = ValidationWatch(config.run_dir, config.ema_decay > 0,
                                         config.early_stopping, self.state.plateau,
                                         self.state.schedule, self.print)
            self.observers.append(self.watch)
        stopped_early = step < total_steps and self._stops_early()
        last_eval = epoch = None
        wrote_inputs = step > 0
        batches = self.run_dataset(step) if step < total_steps else None
        with StopOnSignal() as stop:
            while step < total_steps and not stop.received and not stopped_early:
                epoch = self._start_epoch(step)
                pending, first_step, window_start = [], step, time.perf_counter()
                while step < epoch.end_step and not stop.received:
                    with self.profiler.step(step + 1):
                        images, labels = next(batches)
                        if not wrote_inputs:
                            self._notify("first_batch", step, images)
                            wrote_inputs = True
                        pending.append(self.steps.train(images, labels))
                    step += 1
                    self.profiler.step_done(step, pending[-1])
                    due_checkpoint = config.checkpoint_every and step % config.checkpoint_every == 0
                    if (step - epoch.start_step) % config.log_every == 0 or due_checkpoint:
                        self._flush(epoch, pending, first_step, time.perf_counter() - window_start)
                        pending, first_step, window_start = [], step, time.perf_counter()
                        if due_checkpoint and step % steps_per_epoch:
                            self._save_mid_epoch(epoch, step)
                self._flush(epoch, pending, first_step, time.perf_counter() - window_start)
                # A signal at an epoch's last step still ends it: its row and checkpoint as usual.
                if step == epoch.end_step:
                    last_eval = self._end_epoch(epoch, step)
                    stopped_early = self._stops_early()
            if stop.received:
                # The epoch's end (or a --checkpoint_every save) may have saved this step already.
                path = (self.state.checkpoints.latest if self.state.checkpoints.saved_at(step)
                        else self._save_mid_epoch(epoch, step))
                raise TrainingInterrupted(
                    f"Stopped at step {step} of {total_steps}; checkpoint saved to {path}. "
                    f"Run the same command again to resume (without --lr, unless that rate should "
                    f"take over from here).", stop.received)
        if last_eval is None and self.role.evaluates:
            last_eval = self._evaluate()
        return self.role.finish(step, self.state.checkpoints.latest, last_eval)

    # -- the loop's parts ----------------------------------------------------------------------
    def _notify(self, event: str, *args: object) -> None:
        for observer in self.observers:
            getattr(observer, event)(*args)

    def announce(self, step: int) -> None:
        """Prints what a run starting at `step` says first (train() does, before its first
        step): where the weights come from, the start lines, then which steps
        --profile_steps traces."""
        restored = self.restored
        lines = (resume_lines(self.config, self.previous_config, restored.checkpoint, step,
                              self.data.steps_per_epoch, self.state)
                 if restored.checkpoint else [])
        if self.set_aside:
            lines.append(f"The later checkpoints, history and logs were moved to "
                         f"{self.set_aside}.")
        if restored.init_report is not None:
            lines.append(restored.init_report.summary())
        lines += start_lines(self.config, self.towers, self.splits, self.data, self.state,
                             self.steps, self.precision, restored.trains)
        profiling = self.profiler.plan(step + 1,
                                       self.config.epochs * self.data.steps_per_epoch)
        for line in lines + ([profiling] if profiling else []):
            self.print(line)

    def run_dataset(self, start_step: int) -> Iterator:
        """An iterator over every epoch from `start_step` on, as one distributed dataset: one
        global step (`self.steps.train(*next(iterator))`) takes one batch per tower, and a run
        resumed mid-epoch skips the steps it has done."""
        towers, steps = self.towers.count, self.data.steps_per_epoch  # this worker's towers
        epoch = start_step // steps

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            return self.data.train.dataset(
                self.towers.per_tower_batch, epoch=epoch, num_epochs=self.config.epochs - epoch,
                take_batches=steps * towers, skip_batches=(start_step - epoch * steps) * towers,
                augment_on=self.steps.augment_on)
        return devices.distributed_iterator(self.towers.strategy, dataset_fn)

    def _start_epoch(self, step: int) -> _Epoch:
        steps = self.data.steps_per_epoch
        index = step // steps
        # A resumed epoch continues the sums its checkpoint holds.
        meter = (self.state.checkpoints.restored_meter() if step > index * steps
                 else EpochMeter())
        self._notify("epoch_started", index, step - index * steps)
        return _Epoch(index, index * steps, (index + 1) * steps, meter)

    def _flush(self, epoch: _Epoch, pending: List[dict], first_step: int, seconds: float) -> None:
        """Reads the pending step results (one host sync), checks them, reports them."""
        if not pending:
            return
        stacked = {k: np.stack([p[k].numpy() for p in pending]) for k in pending[0]}
        totals = stacked["total_loss"].mean(axis=1)
        bad = np.flatnonzero(~np.isfinite(totals))
        if bad.size:
            raise FloatingPointError(
                f"The loss became {totals[bad[0]]} at step {first_step + bad[0] + 1}; training "
                f"stopped. The latest checkpoint ({self.state.checkpoints.latest}) holds the last "
                f"good weights: lower --lr or check the data, then run the same command to resume")
        step = first_step + len(pending)
        window = Window(first_step, step, {k: v.mean(axis=0) for k, v in stacked.items()},
                        float(self.state.schedule(step - 1)),
                        len(pending) * self.config.batch_size / max(seconds, 1e-9), seconds)
        self._notify("steps_done", window)
        epoch.meter.add(len(pending), seconds, window.loss,
                        float(np.mean(window.means["cross_entropy"])), window.top1)

    @property
    def best(self) -> Optional[BestEpoch]:
        """The best epoch by validation top-1 so far (None without --val_fraction)."""
        return self.watch.best if self.watch is not None else None

    def _stops_early(self) -> bool:
        return self.watch is not None and self.watch.stops()

    def _evaluate(self) -> dict:
        """The held-out scores, the averaged weights' under "ema" (training/heldout.py), with
        the validation split's under "val" (--val_fraction): each split scored on its own."""
        def score(pipeline: input_pipeline.InputPipeline) -> dict:
            return heldout.evaluate(self.state.model, self.steps.eval_strategy, pipeline,
                                    self.towers.per_tower_batch, self.steps.eval,
                                    self.state.average)
        result = score(self.data.test)
        if self.data.validation is not None:
            result["val"] = score(self.data.validation)
        return result

    def _save_mid_epoch(self, epoch: Optional[_Epoch], step: int) -> str:
        steps = self.data.steps_per_epoch
        mid_epoch = epoch is not None and step % steps
        return self.state.checkpoints.save(step, step // steps,
                                           epoch.meter if mid_epoch else None)

    def _end_epoch(self, epoch: _Epoch, step: int) -> Optional[dict]:
        """Evaluates (when due), reports the epoch, then saves its checkpoint: a crash in
        between leaves a row that the resumed run drops and rewrites, and a failed save takes
        the row back."""
        config, meter = self.config, epoch.meter
        train_seconds, done = time.perf_counter() - epoch.started, epoch.index + 1
        result, eval_started = None, time.perf_counter()
        if self.role.evaluates and (done % config.eval_every_epochs == 0 or done == config.epochs):
            result = self._evaluate()
        eval_seconds = time.perf_counter() - eval_started
        summary = EpochSummary(
            done, step, meter.mean("total_loss"), meter.mean("cross_entropy"),
            meter.mean("top1"), result, float(self.state.schedule(step - 1)),
            meter.sums["steps"] * config.batch_size / max(meter.train_seconds, 1e-9),
            meter.train_seconds, eval_seconds, train_seconds + eval_seconds)
        self._notify("epoch_done", summary)
        try:
            path = self.state.checkpoints.save(step, done)
        except BaseException:
            self._notify("epoch_unsaved")
            raise
        self._notify("epoch_saved", summary, path)
        return result
