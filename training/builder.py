"""A run's parts, built without side effects: the towers and their strategy, the input pipelines,
the model with its optimizer and checkpoints, and the distributed step functions.

Nothing here writes to the run directory or sets anything process-wide: the caller applies the
process settings first (`apply_process_settings`), hands in the data split it loaded, and says
where the pipelines may keep a disk cache and list unreadable files (None: nowhere). The trainer
(training/loop.py) and the benchmarks build from these same functions.
"""
import dataclasses
from typing import List, Optional

import keras
import tensorflow as tf

import input_pipeline
from settings import recipes
from settings.cluster import Worker
from settings.config import TrainConfig, build_model_from_config
from training import class_balance, devices, finetune, optimization
from training.averaging import WeightAverage
from training.checkpoints import Checkpoints
from training.plateau import Plateau
from training.step import StepConfig, make_eval_step, make_train_step


@dataclasses.dataclass(frozen=True)
class Towers:
    """This worker's towers, the strategy that runs one replica on each, and the batch a tower
    takes (the global batch split evenly across every tower of the job)."""
    worker: Worker
    devices: List[str]
    strategy: tf.distribute.Strategy
    per_tower_batch: int

    @property
    def count(self) -> int:
        return len(self.devices)


@dataclasses.dataclass(frozen=True)
class Data:
    """The pipelines (the held-out ones only where they are scored), the steps of an epoch and
    the training split's class counts with the loss weights they give."""
    train: input_pipeline.InputPipeline
    test: Optional[input_pipeline.InputPipeline]
    steps_per_epoch: int
    class_counts: list
    class_weights: Optional[list]
    validation: Optional[input_pipeline.InputPipeline] = None  # --val_fraction's split


@dataclasses.dataclass(frozen=True)
class State:
    """What the checkpoints hold: the model, its optimizer (with the schedule it follows), the
    averaged weights (--ema_decay) and the checkpoint manager over all of it."""
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    schedule: optimization.EpochSchedule
    average: Optional[WeightAverage]
    checkpoints: Checkpoints
    plateau: Optional[Plateau] = None  # --lr_schedule=plateau's reductions and patience


@dataclasses.dataclass(frozen=True)
class Steps:
    """The distributed training step, where it augments, and the held-out evaluation step (on
    the chief alone in a multi-worker job, outside the all-reduce)."""
    config: StepConfig
    augment_on: str
    train: tf.types.experimental.GenericFunction
    eval_strategy: tf.distribute.Strategy
    eval: tf.types.experimental.GenericFunction


def apply_process_settings(config: TrainConfig, precision: str) -> None:
    """What holds for the whole process and must precede building: op determinism when asked
    and Keras' precision policy (every layer built from here on computes in it)."""
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(precision)


def seed_weights(config: TrainConfig) -> None:
    """Seeds Python's, NumPy's, TensorFlow's and Keras' generators from --seed, so the initial
    weights and dropout follow it. Called right before `build_state`: the pipelines drawn
    between would otherwise move the generators (a held-out pipeline without a seed draws one)."""
    keras.utils.set_random_seed(config.seed)


def build_towers(config: TrainConfig, worker: Worker, tower_devices: Optional[List[str]]
                 ) -> Towers:
    """One machine's towers are `tower_devices` (devices.configure_towers); a worker of a job
    takes the strategy's, one per local device."""
    if worker.multi_worker:
        # Created first: it configures the collective ops TensorFlow sets up at start-up.
        strategy = devices.make_multi_worker_strategy()
        tower_devices = list(strategy.extended.worker_devices)
    else:
        strategy = devices.make_strategy(tower_devices)
    per_tower = devices.check_batch_size(config.batch_size, strategy.num_replicas_in_sync)
    if per_tower % config.grad_accum_steps:
        raise ValueError(f"--grad_accum_steps={config.grad_accum_steps}: each of the "
                         f"{strategy.num_replicas_in_sync} towers' {per_tower} images must divide "
                         f"into {config.grad_accum_steps} micro-batches")
    return Towers(worker, list(tower_devices), strategy, per_tower)


def build_data(config: TrainConfig, towers: Towers, splits: input_pipeline.DatasetSplits, *,
               evaluates: bool = True, cache_dir: Optional[str] = None,
               report_dir: Optional[str] = None, progress: object = None) -> Data:
    """Both pipelines over `splits` (their first pass included) and the steps of an epoch."""
    if config.num_classes not in (None, splits.num_classes):
        raise ValueError(f"{config.run_dir!r} was trained on {config.num_classes} classes; "
                         f"the data now has {splits.num_classes}")
    # The class counts of the whole training split, on every worker of a job alike: the
    # workers must agree on the loss weights, whatever their shard holds.
    counts = class_balance.class_counts(splits.train.labels, splits.num_classes)
    weights = (class_balance.balanced_class_weights(counts)
               if config.class_weight == "balanced" else None)
    augmentation = recipes.get_recipe(config.dataset).augmentation_for(
        len(splits.train), config.crop_area, config.random_erasing, pad=config.pad,
        alternate_flips=config.alternate_flips,
        mixup=config.mixup, cutmix=config.cutmix, policy=config.augment_policy,
        magnitude=config.augment_magnitude, num_ops=config.augment_ops)
    common = dict(image_size=config.image_size, cache=config.cache, cache_dir=cache_dir,
                  report_dir=report_dir, progress=progress, augmentation=augmentation,
                  max_image_pixels=config.max_image_pixels)
    worker = towers.worker
    # Each worker reads its own shard, so no two read the same examples in an epoch.
    shard = (worker.count, worker.index) if worker.multi_worker else None
    train = input_pipeline.InputPipeline(splits.train, training=True, seed=config.seed,
                                         shard=shard, subset="train", sampling=config.sampling,
                                         num_classes=splits.num_classes, **common)
    test = (input_pipeline.InputPipeline(splits.test, training=False, subset=splits.test_name,
                                         **common) if evaluates else None)
    # "validation", not "val": a folder's val/ may be the test split, and the subset names the
    # disk cache's file.
    validation = (input_pipeline.InputPipeline(splits.validation, training=False,
                                               subset="validation", **common)
                  if evaluates and splits.validation is not None else None)
    # Workers meet in every all-reduce, so they must agree on the steps per epoch: computed
    # alike everywhere from the split, not from what each one could decode.
    examples = (len(splits.train) // worker.count if worker.multi_worker
                else train.num_examples)
    steps_per_epoch = examples // (towers.per_tower_batch * towers.count)
    if steps_per_epoch == 0:
        raise ValueError(f"--batch_size={config.batch_size} is larger than the {examples} "
                         f"training images of a worker")
    return Data(train, test, steps_per_epoch, counts, weights, validation)


def settled_config(config: TrainConfig, splits: input_pipeline.DatasetSplits, data: Data,
                   precision: str) -> TrainConfig:
    """The config with what the data and the machine decide: the class count, a --lr given on
    resume dropped again when it equals the rate the schedule gives at its step (which depends
    on the steps per epoch), and the precision and augmentation the run trains with, which
    evaluate.py, predict.py and the export read back."""
    return dataclasses.replace(
        config, num_classes=splits.num_classes,
        lr_overrides=optimization.settled_overrides(config, data.steps_per_epoch),
        precision=precision, augmentation=data.train.augmentation)


def build_state(config: TrainConfig, towers: Towers, steps_per_epoch: int, write_dir: str
                ) -> State:
    """Model, optimiser, average and checkpoints in the strategy's scope, nothing restored yet;
    `write_dir` is the run directory the checkpoints will be saved in."""
    with towers.strategy.scope():
        model = build_model_from_config(config)
        plateau = (Plateau(config.plateau_patience, config.lr_gamma)
                   if config.lr_schedule == "plateau" else None)
        optimizer, schedule = optimization.build_optimizer(config, steps_per_epoch, model,
                                                           plateau)
        # Built for every weight, frozen or not: the optimizer's state and so the checkpoints
        # are laid out alike whatever --trainable is, and a run can resume with another one
        # (the heads first, then all).
        optimizer.build(model.trainable_variables)
        average = (WeightAverage(model, config.ema_decay, towers.strategy)
                   if config.ema_decay else None)
        checkpoints = Checkpoints(write_dir, model, optimizer, keep=config.keep_checkpoints,
                                  average=average, plateau=plateau)
    return State(model, optimizer, schedule, average, checkpoints, plateau)


@dataclasses.dataclass(frozen=True)
class Restored:
    """Where the weights came from: the checkpoint restored (None: a new run), --init_from's
    report (a new run started from other weights), and what --trainable leaves trainable."""
    checkpoint: Optional[str]
    init_report: Optional[object]
    trains: Optional[str]


def restore_state(config: TrainConfig, towers: Towers, state: State, checkpoint: Optional[str],
                  init_source: Optional[object], class_names: List[str]) -> Restored:
    """Restores `checkpoint` (every worker restores the chief's: a shared file system on
    clusters), else gives a new run --init_from's weights; then applies --trainable's freeze."""
    with towers.strategy.scope():
        restored = state.checkpoints.restore(checkpoint)
    init_report = (finetune.initialise(state.model, init_source, class_names)
                   if init_source is not None and restored is None else None)
    trains = finetune.freeze(state.model, config.model, config.trainable)
    if state.average is not None and not state.checkpoints.average_restored:
        # A new run's average starts from its initial (or --init_from) weights; a run that
        # turns --ema_decay on, from the weights it resumes with.
        state.average.reset()
    return Restored(restored, init_report, trains)


def build_steps(config: TrainConfig, towers: Towers, state: State,
                train: Optional[input_pipeline.InputPipeline] = None,
                class_weights: Optional[list] = None) -> Steps:
    """The distributed training and evaluation steps. `train` is the training pipeline, whose
    augmentation the towers take over when --augment_on puts it there; without one (a benchmark
    feeding its own tensors) the step trains on its batches as they come."""
    step_config = StepConfig(config.batch_size, config.num_classes, config.aux_weight,
                             config.label_smoothing, optimization.step_weight_decay(config),
                             class_weights=class_weights, clip_norm=config.clip_norm,
                             grad_accum_steps=config.grad_accum_steps)
    augment_on = (devices.augment_on(config.augment_on, towers.devices,
                                     train.augmentation.resizes) if train is not None else "host")
    train_step = make_train_step(
        state.model, state.optimizer, towers.strategy, step_config,
        jit_compile=config.jit_compile,
        augment=train.augment if augment_on == "device" else None, average=state.average)
    # Held-out evaluation runs on the chief alone, outside the all-reduce, with one worker's
    # towers (all of them when there is one worker).
    eval_strategy = (tf.distribute.get_strategy() if towers.worker.multi_worker
                     else towers.strategy)
    return Steps(step_config, augment_on, train_step, eval_strategy,
                 make_eval_step(state.model, eval_strategy, config.tta or "none"))
