"""The lines a run starts with: where its weights come from (its checkpoint, and how a resumed
run's schedule changed; --init_from), then what trains on what, with which towers, batch,
learning rate and precision, followed by a warning when the classes are imbalanced and nothing
balances them.

In a multi-worker job it also places this worker in the job and gives the job's totals beside
this worker's shard and towers.
"""
import os
from typing import List, Optional

import input_pipeline
from settings.config import TrainConfig
from training import class_balance, devices, optimization
from training.builder import Data, State, Steps, Towers


def _images(towers: Towers, splits: input_pipeline.DatasetSplits, data: Data) -> str:
    name, layout = splits.test_name, splits.layout
    if data.test is not None:
        held_out = f"{data.test.num_examples} {name} images (readable; {layout})"
    else:  # a worker that does not evaluate does not read them
        held_out = f"{len(splits.test)} {name} images (scored by the chief; {layout})"
    if splits.validation is not None:
        # Carved out of the training images, so the train count above is what is left.
        count = (data.validation.num_examples if data.validation is not None
                 else len(splits.validation))
        held_out += f" / {count} validation images (out of the training images)"
    if towers.worker.multi_worker:
        return (f"{len(splits.train)} train images in all, {data.train.num_examples} readable "
                f"in this worker's shard / {held_out}")
    return f"{data.train.num_examples} train / {held_out}"


def _towers_and_batch(config: TrainConfig, towers: Towers) -> str:
    listed = f"[{', '.join(devices.describe_tower(d) for d in towers.devices)}]"
    batch = f"global batch {config.batch_size}"
    worker = towers.worker
    if not worker.multi_worker:
        return f"{towers.count} tower(s) {listed}, {batch}"
    # MultiWorkerMirroredStrategy gives every worker as many towers as this one (its
    # num_replicas_in_sync is that product): the job's towers are known, not guessed.
    total = towers.strategy.num_replicas_in_sync
    return (f"{worker.count} workers x {total // worker.count} tower(s), {total} in all (this "
            f"one: {listed}), {batch} across the job ({towers.per_tower_batch} per tower)")


def _classes(config: TrainConfig, data: Data) -> str:
    classes = f"{config.num_classes} classes"
    if data.class_weights is not None:
        present = [w for w in data.class_weights if w > 0]
        classes += (f", balanced class weights in the loss (x{min(present):.3g} to "
                    f"x{max(present):.3g})")
    if config.sampling == "balanced":
        classes += ", balanced sampling (every class equally often)"
    return classes


def start_lines(config: TrainConfig, towers: Towers, splits: input_pipeline.DatasetSplits,
                data: Data, state: State, steps: Steps, precision: str,
                trains: Optional[str]) -> List[str]:
    """The start line, and the imbalance warning when it applies."""
    worker, job = towers.worker, ""
    if worker.multi_worker:
        job = (f" as worker {worker.index} of {worker.count}"
               f"{' (chief)' if worker.is_chief else ''}, workers "
               f"[{', '.join(worker.addresses)}]")
    trained = f", {trains}" if trains else ""
    optimizer = {"sgd": "", "adamw": "AdamW ", "lamb": "LAMB "}[config.optimizer]
    if config.grad_accum_steps > 1:
        optimizer = (f"{config.grad_accum_steps} micro-batches of "
                     f"{towers.per_tower_batch // config.grad_accum_steps} per tower and step, "
                     f"{optimizer}")
    clipped = f", gradient norm clipped to {config.clip_norm:g}" if config.clip_norm else ""
    averaged = (f", weights averaged (decay {config.ema_decay:g} per step)"
                if state.average is not None else "")
    lines = [f"Training {config.model} on {config.dataset}{job}: "
             f"{_images(towers, splits, data)}, {_classes(config, data)}{trained}, "
             f"{_towers_and_batch(config, towers)}, {data.steps_per_epoch} steps/epoch, "
             f"{optimizer}{state.schedule.describe()}{clipped}{averaged}, {precision}, "
             f"augmented on the "
             f"{steps.augment_on}. Run dir: {config.run_dir}"]
    warning = class_balance.imbalance_warning(data.class_counts, splits.class_names)
    if warning and data.class_weights is None and config.sampling != "balanced":
        lines.append(warning)
    return lines


def resume_lines(config: TrainConfig, previous: Optional[TrainConfig], restored: str, step: int,
                 steps_per_epoch: int, state: State) -> List[str]:
    """A resumed run's lines: the checkpoint and step it goes on from, how its schedule changed
    since `previous` (the settings it trained with until now), and an average that starts anew."""
    started = (f" The run started from --init_from={config.init_from}; it goes on from its own "
               f"checkpoint." if config.init_from is not None else "")
    lines = [f"Resumed from {restored} at step {step} (epoch {step // steps_per_epoch + 1})."
             f"{started}"]
    reshaped = previous and optimization.schedule_change(previous, config, steps_per_epoch, step)
    if reshaped:
        lines.append(reshaped)
    if state.average is not None and not state.checkpoints.average_restored:
        lines.append(f"{os.path.basename(restored)} holds no averaged weights: the average "
                     f"(--ema_decay={config.ema_decay:g}) starts from its weights.")
    return lines
