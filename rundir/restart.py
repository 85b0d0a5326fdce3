"""Restarting a run from one of its older checkpoints (`train.py --restart_from=EPOCH`).

"Stop at epoch 40, go back to epoch 35 with a lower rate": the run continues from the chosen
checkpoint, and whatever the abandoned epochs left is moved aside, never deleted, into
`<run_dir>/set_aside/after-step-<S>-<time>/`: the later checkpoints, the full history.csv and the
full TensorBoard event files, and best/ when it holds a later epoch (the resumed run chooses its
best again from the history it keeps). The run's own logs are rewritten without the abandoned
steps, so TensorBoard and history.csv continue from the restart point instead of overlapping old
curves. To undo, move the set-aside files back.
"""
import dataclasses
import os
import shutil
import time

import tensorflow as tf

from rundir.best import read_best
from rundir.layout import (
    BEST_DIR,
    EVAL_LOG_DIR,
    HISTORY_FILE,
    SET_ASIDE_DIR,
    TRAIN_LOG_DIR,
    VAL_LOG_DIR,
    absolute_checkpoint_dir,
    best_dir,
    checkpoint_dir,
)

# Per-epoch TensorBoard tags (summaries.write_epoch) are indexed by epoch, the rest by step.
EPOCH_TAG_PREFIX = "epoch_"


@dataclasses.dataclass(frozen=True)
class Restart:
    path: str    # the checkpoint's path prefix (…/checkpoints/ckpt-S)
    step: int
    epoch: int   # epochs completed at that checkpoint


def _read(path, name):
    return int(tf.train.load_variable(path, f"{name}/.ATTRIBUTES/VARIABLE_VALUE"))


def list_checkpoints(run_dir):
    """[Restart(path, step, epoch)] of every checkpoint the run keeps, oldest first."""
    state = tf.train.get_checkpoint_state(absolute_checkpoint_dir(run_dir))
    if state is None:
        return []
    found = []
    for path in state.all_model_checkpoint_paths:  # absolute: joined to the absolute directory
        if tf.io.gfile.exists(path + ".index"):
            found.append(Restart(path, _read(path, "step"), _read(path, "epoch")))
    return sorted(found, key=lambda r: r.step)


def find_restart(run_dir, spec):
    """The checkpoint `spec` names: an epoch number (the checkpoint saved as that epoch ended)
    or a checkpoint name such as ckpt-1050. Raises ValueError listing the ones there are."""
    kept = list_checkpoints(run_dir)
    spec = str(spec).strip()
    if spec.isdigit():
        # An epoch's own checkpoint is the first one with that many epochs done (later ones
        # with the same count were saved mid-way through the next epoch).
        matches = [r for r in kept if r.epoch == int(spec)][:1]
    else:
        name = os.path.basename(spec)
        matches = [r for r in kept if os.path.basename(r.path) == name]
    if matches:
        return matches[0]
    epochs = sorted({r.epoch for r in kept})
    have = (f"it keeps epochs {', '.join(map(str, epochs))} "
            f"({', '.join(os.path.basename(r.path) for r in kept)})" if kept
            else "it has no checkpoint")
    where = checkpoint_dir(run_dir)
    raise ValueError(f"--restart_from={spec}: no such checkpoint in {where!r}; "
                     f"{have}. Give an epoch number or a checkpoint name; --keep_checkpoints=0 "
                     f"keeps every epoch's checkpoint for later restarts")


def set_aside_after(run_dir, restart):
    """Moves what the steps after `restart` left into a set-aside directory and makes `restart`
    the run's latest checkpoint. Returns that directory, or None when there was nothing after."""
    kept = list_checkpoints(run_dir)
    later = [r for r in kept if r.step > restart.step]
    if not later:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = os.path.join(run_dir, SET_ASIDE_DIR, f"after-step-{restart.step}-{stamp}")
    os.makedirs(checkpoint_dir(aside))
    # Copies first, so a crash part-way leaves every original in place.
    if os.path.exists(os.path.join(run_dir, HISTORY_FILE)):
        shutil.copy2(os.path.join(run_dir, HISTORY_FILE), os.path.join(aside, HISTORY_FILE))
    for logs in (TRAIN_LOG_DIR, EVAL_LOG_DIR, VAL_LOG_DIR):
        _truncate_logs(os.path.join(run_dir, logs), os.path.join(aside, logs), restart)
    best = read_best(run_dir)
    if best is not None and best["step"] > restart.step:
        shutil.move(best_dir(run_dir), os.path.join(aside, BEST_DIR))
    _keep_only_up_to(run_dir, restart)
    for r in later:
        for path in tf.io.gfile.glob(r.path + ".*"):
            shutil.move(path, os.path.join(checkpoint_dir(aside), os.path.basename(path)))
    return aside


def _keep_only_up_to(run_dir, restart):
    """Rewrites the checkpoint index: `restart` is the latest, the later ones are forgotten."""
    state = tf.train.get_checkpoint_state(absolute_checkpoint_dir(run_dir))
    kept = [p for p in state.all_model_checkpoint_paths if _read(p, "step") <= restart.step]
    rewrite_checkpoint_index(run_dir, kept, restart.path)


def rewrite_checkpoint_index(run_dir, keep, latest):
    """Rewrites the run's checkpoint index to list only the paths `keep` (oldest first), with
    `latest` as the latest; the files of the others are left where they are.

    The saved timestamps go with their paths: CheckpointManager forgets (without deleting) any
    listed checkpoint not newer than `last_preserved_timestamp`, which is what a missing
    timestamp defaults to."""
    state = tf.train.get_checkpoint_state(absolute_checkpoint_dir(run_dir))
    all_stamps = (list(state.all_model_checkpoint_timestamps)
                  or [state.last_preserved_timestamp + 1.0] * len(state.all_model_checkpoint_paths))
    stamp_of = dict(zip(state.all_model_checkpoint_paths, all_stamps))
    keep = [p for p in state.all_model_checkpoint_paths if p in set(keep)]
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # its deprecation notice; CheckpointManager has no such method
    try:
        tf.compat.v1.train.update_checkpoint_state(
            absolute_checkpoint_dir(run_dir), os.path.basename(latest),
            # relative, as CheckpointManager writes them
            all_model_checkpoint_paths=[os.path.basename(p) for p in keep],
            all_model_checkpoint_timestamps=[stamp_of[p] for p in keep],
            last_preserved_timestamp=state.last_preserved_timestamp)
    finally:
        logger.setLevel(level)


def _keep_event(event, restart):
    if not event.HasField("summary"):
        return True  # file version, graph, run metadata
    epoch_tags = [v.tag.startswith(EPOCH_TAG_PREFIX) for v in event.summary.value]
    limit = restart.epoch if epoch_tags and all(epoch_tags) else restart.step
    return event.step <= limit


def _truncate_logs(log_dir, aside_dir, restart):
    """Rewrites each event file of `log_dir` without the events after `restart`; the originals
    go to `aside_dir`."""
    if not os.path.isdir(log_dir):
        return
    for name in sorted(os.listdir(log_dir)):
        if not name.startswith("events.out.tfevents"):
            continue
        path = os.path.join(log_dir, name)
        os.makedirs(aside_dir, exist_ok=True)
        original = os.path.join(aside_dir, name)
        shutil.copy2(path, original)
        tmp = original + ".rewritten"
        with tf.io.TFRecordWriter(tmp) as writer:
            for record in tf.data.TFRecordDataset(original):
                event = tf.compat.v1.Event.FromString(record.numpy())
                if _keep_event(event, restart):
                    writer.write(record.numpy())
        os.replace(tmp, path)
