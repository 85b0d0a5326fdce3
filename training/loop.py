"""The training loop: epochs of distributed steps, logging, evaluation, checkpoints, clean stops.

`Trainer(config)` builds the run in steps (towers, data, model and optimiser, step functions,
logs); `train()` then runs epochs, each an `_Epoch` that carries its own sums and progress bar.
What the chief does and other workers do not is in training/roles.py.

The host reads the step results only every `log_every` steps (and before every checkpoint), so the
devices are never held up by a per-step sync; a non-finite loss is still traced to its exact step,
and no checkpoint is ever written from non-finite weights.
"""
import dataclasses
import datetime
import os
import signal
import time
import types
from typing import Any, Callable, Iterator, List, Optional

import keras
import numpy as np
import tensorflow as tf

import disk_space
import input_pipeline
from console import PassProgress, ProgressBar
from training import class_balance, devices, evaluation, finetune, optimization, recipes
from training.averaging import WeightAverage
from training.checkpoints import Checkpoints, checkpoint_dir
from training.config import TrainConfig, build_model_from_config
from training.history import EpochMeter
from training.profiling import StepProfiler
from training.restart import Restart
from training.roles import Role
from training.run_dir import CONFIG_FILE, load_run_config, split_dir
from training.step import StepConfig, make_eval_step, make_train_step
from training.summaries import Summaries


class TrainingInterrupted(Exception):
    """Raised after a signal stopped training and its checkpoint was saved."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number


class _StopOnSignal:
    """SIGINT / SIGTERM set a flag the loop checks between steps, so it can save and stop."""

    def __init__(self) -> None:
        self.received = None

    def __enter__(self) -> "_StopOnSignal":
        self.previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Optional[types.FrameType]):
        if self.received is not None:  # a second Ctrl+C: stop at once, as outside the loop
            previous = self.previous.get(signum)
            if callable(previous):
                previous(signum, frame)
            raise KeyboardInterrupt
        self.received = signum
        print(f"\n{signal.Signals(signum).name} received: saving a checkpoint at this step...",
              flush=True)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class _Epoch:
    """One epoch as it runs: its number, first step, metric sums (`meter`) and progress bar."""

    def __init__(self, index: int, steps_per_epoch: int, step: int, meter: EpochMeter,
                 show_progress: bool) -> None:
        self.index = index
        self.start_step = index * steps_per_epoch
        self.end_step = self.start_step + steps_per_epoch
        self.meter = meter
        # The bar counts this epoch's steps, from where it starts (0, or the resumed step).
        self.progress = ProgressBar(steps_per_epoch, enabled=show_progress)
        self.progress.update(step - self.start_step)
        self.started = time.perf_counter()

    @property
    def seconds(self):
        return time.perf_counter() - self.started


class Trainer:
    """One run: `Trainer(config).train()`; `config` is a resolved `TrainConfig`
    (run_dir.resolve_config). `self.config` is that config with what the data decides."""

    def __init__(self, config: TrainConfig, towers: Optional[List[str]] = None,
                 print_fn: Callable[..., None] = print, restart: Optional[Restart] = None,
                 ) -> None:
        """`towers`: device names (default: devices.configure_towers); `restart`: an older
        checkpoint of the run to continue from (restart.find_restart)."""
        self.config = config
        self.print = print_fn
        self._build_towers(towers)
        # A new run's --init_from is looked up before anything is written (a run under way reads
        # its own checkpoint instead, so it no longer needs the source).
        new_run = restart is None and tf.train.latest_checkpoint(
            checkpoint_dir(config.run_dir)) is None
        self.init_source = (finetune.find_init_source(config.init_from)
                            if config.init_from is not None and new_run else None)
        self.role = Role(self.worker, config)
        # The settings the run trained with until now, before this command's replace them: what
        # a resumed run's start line compares its schedule with.
        self.previous_config = (load_run_config(config.run_dir) if os.path.exists(
            os.path.join(config.run_dir, CONFIG_FILE)) else None)
        # Saved first, so the directory is never ours without it: a start refused after the data
        # was split leaves a run the corrected command starts afresh.
        self.role.save_config(config)
        self._build_data()
        self._settle_config()
        # Last, once every setting and the data have been accepted.
        self.set_aside = self.role.set_aside(restart)
        self._build_model_and_optimizer(restart)
        self._build_steps()
        self.summaries = Summaries(self.role.write_dir, self.towers)
        # The chief's trace only: another worker's logs are scratch, removed when it stops.
        self.profiler = StepProfiler(config.profile_steps if self.role.is_chief else None,
                                     self.summaries.train_dir)

    # -- build steps ---------------------------------------------------------------------------
    def _build_towers(self, towers: Optional[List[str]]):
        """The worker, its towers and strategy, the per-tower batch and the precision."""
        config = self.config
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
            tf.config.experimental.enable_op_determinism()
        self.per_tower_batch = devices.check_batch_size(config.batch_size,
                                                        self.strategy.num_replicas_in_sync)
        self.precision = devices.precision_policy(config.mixed_precision, self.towers,
                                                  config.mixed_precision_dtype)
        keras.mixed_precision.set_global_policy(self.precision)

    def _build_data(self):
        """The split, the class count and balance, both pipelines (first pass included), steps
        per epoch."""
        config, role = self.config, self.role
        self.splits = input_pipeline.load_dataset(config.dataset, config.data_dir,
                                                  split_dir=split_dir(config.run_dir),
                                                  test_fraction=config.test_fraction,
                                                  seed=config.seed, write=role.is_chief)
        if config.num_classes not in (None, self.splits.num_classes):
            raise ValueError(f"{config.run_dir!r} was trained on {config.num_classes} classes; "
                             f"the data now has {self.splits.num_classes}")
        # The class counts of the whole training split, on every worker of a job alike: the
        # workers must agree on the loss weights, whatever their shard holds.
        self.class_counts = class_balance.class_counts(self.splits.train.labels,
                                                       self.splits.num_classes)
        self.class_weights = (class_balance.balanced_class_weights(self.class_counts)
                              if config.class_weight == "balanced" else None)
        augmentation = recipes.get_recipe(config.dataset).augmentation_for(
            len(self.splits.train), config.crop_area)
        common = dict(image_size=config.image_size, cache=config.cache,
                      cache_dir=role.cache_dir(config), report_dir=role.report_dir,
                      progress=PassProgress() if self.print is print else None)
        # Each worker reads its own shard, so no two read the same examples in an epoch.
        shard = (self.worker.count, self.worker.index) if self.worker.multi_worker else None
        self.train_data = input_pipeline.InputPipeline(
            self.splits.train, training=True, seed=config.seed, augmentation=augmentation,
            shard=shard, subset="train", sampling=config.sampling, **common)
        self.test_data = (input_pipeline.InputPipeline(self.splits.test, training=False,
                                                       augmentation=augmentation,
                                                       subset=self.splits.test_name, **common)
                          if role.evaluates else None)
        # Workers meet in every all-reduce, so they must agree on the steps per epoch: computed
        # alike everywhere from the split, not from what each one could decode.
        examples = (len(self.splits.train) // self.worker.count if self.worker.multi_worker
                    else self.train_data.num_examples)
        self.steps_per_epoch = examples // (self.per_tower_batch * len(self.towers))
        if self.steps_per_epoch == 0:
            raise ValueError(f"--batch_size={config.batch_size} is larger than the {examples} "
                             f"training images of a worker")

    def _settle_config(self):
        """What the data and the machine decide, set here and nowhere else: the class count, a
        --lr given on resume dropped again when it equals the rate the schedule gives at its step
        (which depends on the steps per epoch), and the precision and augmentation the run trains
        with, recorded for evaluate.py, predict.py and the export. Saved when that changes the
        config."""
        settled = dataclasses.replace(
            self.config, num_classes=self.splits.num_classes,
            lr_overrides=optimization.settled_overrides(self.config, self.steps_per_epoch),
            precision=self.precision, augmentation=self.train_data.augmentation)
        if settled != self.config:
            self.role.save_config(settled)
        self.config = settled

    def _build_model_and_optimizer(self, restart: Optional[Restart]):
        """Model, optimiser and checkpoints in the strategy's scope, restored when resuming."""
        config = self.config
        # The initial weights and dropout's random state follow --seed, so two runs with one seed
        # start alike (a resumed run restores both from its checkpoint instead).
        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = build_model_from_config(config)
            self.optimizer, self.schedule = optimization.build_optimizer(config,
                                                                         self.steps_per_epoch)
            # Built for every weight, frozen or not (below): the optimizer's state and so the
            # checkpoints are laid out alike whatever --trainable is, and a run can resume with
            # another one (the heads first, then all).
            self.optimizer.build(self.model.trainable_variables)
            self.average = (WeightAverage(self.model, config.ema_decay, self.strategy)
                            if config.ema_decay else None)
            self.checkpoints = Checkpoints(self.role.write_dir, self.model, self.optimizer,
                                           keep=config.keep_checkpoints, average=self.average)
            # Every worker restores the chief's checkpoint (a shared file system on clusters).
            self.restored = self.checkpoints.restore(
                restart.path if restart is not None
                else tf.train.latest_checkpoint(checkpoint_dir(config.run_dir)))
        # --init_from's weights, for a new run only: a run under way has just restored its own.
        self.init_report = (finetune.initialise(self.model, self.init_source,
                                                self.splits.class_names)
                            if self.init_source is not None and self.restored is None else None)
        self.trains = finetune.freeze(self.model, config.model, config.trainable)
        if self.average is not None and not self.checkpoints.average_restored:
            # A new run's average starts from its initial (or --init_from) weights; a run that
            # turns --ema_decay on, from the weights it resumes with.
            self.average.reset()

    def _build_steps(self):
        """The distributed training and evaluation steps."""
        config = self.config
        self.step_config = StepConfig(config.batch_size, config.num_classes, config.aux_weight,
                                      config.label_smoothing, config.weight_decay,
                                      class_weights=self.class_weights)
        self.augment_on = devices.augment_on(config.augment_on, self.towers,
                                             self.train_data.augmentation.resizes)
        self.train_step = make_train_step(
            self.model, self.optimizer, self.strategy, self.step_config,
            jit_compile=config.jit_compile,
            augment=self.train_data.augment if self.augment_on == "device" else None,
            average=self.average)
        # Held-out evaluation runs on the chief alone, outside the all-reduce, with one worker's
        # towers (all of them when there is one worker).
        self.eval_strategy = (tf.distribute.get_strategy() if self.worker.multi_worker
                              else self.strategy)
        self.eval_step = make_eval_step(self.model, self.eval_strategy)

    # -- the loop ------------------------------------------------------------------------------
    def train(self) -> dict:
        """Trains to config.epochs; the step and (on the chief) the last held-out scores."""
        try:
            return self._train()
        except tf.errors.ResourceExhaustedError as error:
            if disk_space.is_disk_full(error):  # TensorFlow's code for ENOSPC too
                raise
            raise ValueError(self._out_of_memory_message(error)) from None
        finally:
            self.profiler.stop()  # a range cut short by the end, a stop or an error
            self.role.close()

    def _train(self):
        config, steps_per_epoch = self.config, self.steps_per_epoch
        step = int(self.checkpoints.step.numpy())
        total_steps = config.epochs * steps_per_epoch
        self._announce(step)
        profiling = self.profiler.plan(step + 1, total_steps)
        if profiling:
            self.print(profiling)
        self.role.start(epochs_done=step // steps_per_epoch)
        last_eval = epoch = None
        wrote_inputs = step > 0
        batches = self.run_dataset(step) if step < total_steps else None
        with _StopOnSignal() as stop:
            while step < total_steps and not stop.received:
                epoch = self._start_epoch(step)
                pending, first_step, window_start = [], step, time.perf_counter()
                while step < epoch.end_step and not stop.received:
                    with self.profiler.step(step + 1):
                        images, labels = next(batches)
                        if not wrote_inputs:
                            self._write_model_and_inputs(step, images)
                            wrote_inputs = True
                        pending.append(self.train_step(images, labels))
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
            if stop.received:
                # The epoch's end (or a --checkpoint_every save) may have saved this step already.
                path = (self.checkpoints.latest if self.checkpoints.saved_at(step)
                        else self._save_mid_epoch(epoch, step))
                raise TrainingInterrupted(
                    f"Stopped at step {step} of {total_steps}; checkpoint saved to {path}. "
                    f"Run the same command again to resume (without --lr, unless that rate should "
                    f"take over from here).", stop.received)
        if last_eval is None and self.role.evaluates:
            last_eval = self._evaluate_both()
        return self.role.finish(step, self.checkpoints.latest, last_eval)

    # -- the loop's parts ----------------------------------------------------------------------
    def _announce(self, step: int):
        """The start line: what trains on what, with which towers, batch and learning rate. In a
        multi-worker job it also places this worker in the job and gives the job's totals beside
        this worker's shard and towers. Before it, where the weights come from; after it, a
        warning when the classes are imbalanced and nothing balances them."""
        config = self.config
        if self.restored:
            started = (f" The run started from --init_from={config.init_from}; it goes on from "
                       f"its own checkpoint." if config.init_from is not None else "")
            self.print(f"Resumed from {self.restored} at step {step} "
                       f"(epoch {step // self.steps_per_epoch + 1}).{started}")
            reshaped = self.previous_config and optimization.schedule_change(
                self.previous_config, config, self.steps_per_epoch, step)
            if reshaped:
                self.print(reshaped)
        if self.average is not None and self.restored and not self.checkpoints.average_restored:
            self.print(f"{os.path.basename(self.restored)} holds no averaged weights: the average "
                       f"(--ema_decay={config.ema_decay:g}) starts from its weights.")
        if self.set_aside:
            self.print(f"The later checkpoints, history and logs were moved to {self.set_aside}.")
        if self.init_report is not None:
            self.print(self.init_report.summary())
        worker, job = self.worker, ""
        towers = f"[{', '.join(devices.describe_tower(d) for d in self.towers)}]"
        batch = f"global batch {config.batch_size}"
        name, layout = self.splits.test_name, self.splits.layout
        if self.test_data is not None:
            held_out = f"{self.test_data.num_examples} {name} images (readable; {layout})"
        else:  # a worker that does not evaluate does not read them
            held_out = f"{len(self.splits.test)} {name} images (scored by the chief; {layout})"
        images = f"{self.train_data.num_examples} train / {held_out}"
        if worker.multi_worker:
            job = (f" as worker {worker.index} of {worker.count}"
                   f"{' (chief)' if worker.is_chief else ''}, workers "
                   f"[{', '.join(worker.addresses)}]")
            images = (f"{len(self.splits.train)} train images in all, "
                      f"{self.train_data.num_examples} readable in this worker's shard / "
                      f"{held_out}")
            # MultiWorkerMirroredStrategy gives every worker as many towers as this one (its
            # num_replicas_in_sync is that product): the job's towers are known, not guessed.
            total = self.strategy.num_replicas_in_sync
            towers = (f"{worker.count} workers x {total // worker.count} tower(s), {total} in "
                      f"all (this one: {towers})")
            batch += f" across the job ({self.per_tower_batch} per tower)"
        else:
            towers = f"{len(self.towers)} tower(s) {towers}"
        classes = f"{config.num_classes} classes"
        if self.class_weights is not None:
            present = [w for w in self.class_weights if w > 0]
            classes += (f", balanced class weights in the loss (x{min(present):.3g} to "
                        f"x{max(present):.3g})")
        if config.sampling == "balanced":
            classes += ", balanced sampling (every class equally often)"
        trains = f", {self.trains}" if self.trains else ""
        averaged = (f", weights averaged (decay {config.ema_decay:g} per step)"
                    if self.average is not None else "")
        self.print(f"Training {config.model} on {config.dataset}{job}: {images}, {classes}"
                   f"{trains}, {towers}, {batch}, {self.steps_per_epoch} steps/epoch, "
                   f"{self.schedule.describe()}{averaged}, {self.precision}, augmented on the "
                   f"{self.augment_on}. Run dir: {config.run_dir}")
        warning = class_balance.imbalance_warning(self.class_counts, self.splits.class_names)
        if warning and self.class_weights is None and config.sampling != "balanced":
            self.print(warning)

    def run_dataset(self, start_step: int) -> Iterator:
        """An iterator over every epoch from `start_step` on, as one distributed dataset: one
        global step (`self.train_step(*next(iterator))`) takes one batch per tower, and a run
        resumed mid-epoch skips the steps it has done."""
        towers, steps = len(self.towers), self.steps_per_epoch  # this worker's towers
        epoch = start_step // steps

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            return self.train_data.dataset(
                self.per_tower_batch, epoch=epoch, num_epochs=self.config.epochs - epoch,
                take_batches=steps * towers, skip_batches=(start_step - epoch * steps) * towers,
                augment_on=self.augment_on)
        return devices.distributed_iterator(self.strategy, dataset_fn)

    def _start_epoch(self, step: int):
        index = step // self.steps_per_epoch
        # A resumed epoch continues the sums its checkpoint holds.
        meter = (self.checkpoints.restored_meter() if step > index * self.steps_per_epoch
                 else EpochMeter())
        return _Epoch(index, self.steps_per_epoch, step, meter, self.print is print)

    def _write_model_and_inputs(self, step: int, images: Any):
        """The graph and the first batch, as the model sees it, to TensorBoard."""
        local = self.strategy.experimental_local_results(images)[0]
        if self.augment_on == "device":
            local = self.train_data.augment(local)
        self.summaries.write_model_and_inputs(step, self.model, local, self.config.image_size)

    def _flush(self, epoch: _Epoch, pending: List[dict], first_step: int, seconds: float):
        """Reads the pending step results (one host sync), checks them, logs them."""
        if not pending:
            return
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
        self.summaries.write_train(step, means, float(self.schedule(step - 1)), images_per_second)
        loss, top1 = float(np.mean(means["total_loss"])), float(np.mean(means["accuracy"]))
        epoch.progress.update(step - epoch.start_step, loss=loss, top1=top1,
                              **{"img/s": round(images_per_second)})
        epoch.meter.add(len(pending), seconds, loss, float(np.mean(means["cross_entropy"])), top1)

    def evaluate(self) -> dict:
        """Top-1, top-5 and loss of the current model on the held-out split."""
        probs, labels = evaluation.predict(self.model, self.eval_strategy, self.test_data,
                                           self.per_tower_batch, self.eval_step)
        return evaluation.scores(probs, labels)

    def _evaluate_both(self) -> dict:
        """`evaluate()`'s scores, with those of the averaged weights under "ema" (--ema_decay):
        they are swapped into the model for the scoring and back out after it."""
        result = self.evaluate()
        if self.average is not None:
            with self.average.swapped_in():
                result["ema"] = self.evaluate()
        return result

    def _save_mid_epoch(self, epoch: Optional[_Epoch], step: int):
        mid_epoch = epoch is not None and step % self.steps_per_epoch
        return self.checkpoints.save(step, step // self.steps_per_epoch,
                                     epoch.meter if mid_epoch else None)

    def _end_epoch(self, epoch: _Epoch, step: int):
        """Evaluates (when due), logs the epoch, appends its history row, then saves its
        checkpoint: a crash in between leaves a row that the resumed run drops and rewrites, and
        a failed save takes the row back."""
        config, meter = self.config, epoch.meter
        train_seconds = epoch.seconds
        done = epoch.index + 1
        result = None
        eval_started = time.perf_counter()
        if self.role.evaluates and (done % config.eval_every_epochs == 0 or done == config.epochs):
            result = self._evaluate_both()
            self.summaries.write_eval(step, result)
        eval_seconds = time.perf_counter() - eval_started
        loss, top1 = meter.mean("total_loss"), meter.mean("top1")
        self.summaries.write_epoch(done, meter.mean("cross_entropy"), top1, result)
        ema = (result or {}).get("ema")
        self.role.record_epoch(
            epoch=done, step=step, train_loss=loss,
            train_cross_entropy=meter.mean("cross_entropy"), train_top1=top1,
            heldout_loss=result and result["loss"], heldout_top1=result and result["top1"],
            heldout_top5=result and result["top5"], heldout_ema_loss=ema and ema["loss"],
            heldout_ema_top1=ema and ema["top1"], heldout_ema_top5=ema and ema["top5"],
            lr=float(self.schedule(step - 1)),
            images_per_second=round(meter.sums["steps"] * config.batch_size
                                    / max(meter.train_seconds, 1e-9), 1),
            epoch_seconds=round(meter.train_seconds + eval_seconds, 2),
            wall_time=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
        try:
            path = self.checkpoints.save(step, done)
        except BaseException:
            self.role.unrecord_epoch()
            raise
        self.role.epoch_saved()
        line = f"Epoch {done}/{config.epochs}: train loss {loss:.4f} top-1 {top1:.4f}"
        if result:
            line += (f" | {self.splits.test_name} top-1 {result['top1']:.4f} "
                     f"top-5 {result['top5']:.4f}")
        if ema:
            line += f" (averaged weights: top-1 {ema['top1']:.4f} top-5 {ema['top5']:.4f})"
        self.print(line + f" | {train_seconds + eval_seconds:.1f}s | saved "
                   f"{os.path.basename(path)}")
        return result

    def _out_of_memory_message(self, error: tf.errors.ResourceExhaustedError):
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
