"""A damaged checkpoint costs one checkpoint, not the run; a crash leaves no half-written files.

A checkpoint that cannot be read whole (a truncated .data file, a bad block) is moved, never
deleted, to `<run_dir>/set_aside/damaged-ckpt-<N>/` with one warning line, and the newest readable
one becomes the run's latest again. train.py does this under the run directory's lock before it
resumes; evaluate.py and predict.py take no lock and only skip a damaged checkpoint (the trainer
owns the checkpoint index), so a reader never holds up a train.py.

A damaged checkpoint index (`checkpoints/checkpoint`, TensorFlow's list of the checkpoints) is
rebuilt by train.py from the checkpoints' own files, the damaged one moved to `set_aside/`; a
reader names it and leaves it to train.py.
"""
import glob
import os
import shutil
from typing import Callable, List, Optional

import tensorflow as tf
from google.protobuf import text_format
from tensorflow.python.training.checkpoint_state_pb2 import CheckpointState

from rundir.layout import (
    HISTORY_FILE,
    INDEX_FILE,
    SET_ASIDE_DIR,
    absolute_checkpoint_dir,
    checkpoint_dir,
)
from rundir.restart import rewrite_checkpoint_index


def remove_partial_saves(directory: str) -> None:
    """What an interrupted save leaves in a checkpoint directory: TensorFlow's `ckpt-N_temp`
    directories and `checkpoint.tmp…` index files."""
    pattern = os.path.join(glob.escape(directory), "{}")
    for path in glob.glob(pattern.format("*_temp*")) + glob.glob(pattern.format("checkpoint.tmp*")):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)


class NoReadableCheckpoint(ValueError):
    """Every checkpoint of the run was damaged (all are now set aside)."""


def unreadable_reason(path: str) -> Optional[str]:
    """Why the checkpoint at `path` cannot be read whole, or None when every tensor reads."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError, RuntimeError, OSError) as error:
        return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    return None


def remove_partial_files(run_dir: str) -> None:
    """Removes what an interrupted write leaves: a checkpoint's partial files and this program's
    `*.tmp` files (config.json and a rewritten history.csv are written to one and renamed)."""
    remove_partial_saves(checkpoint_dir(run_dir))
    for path in glob.glob(os.path.join(glob.escape(run_dir), "*.tmp")):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def index_damage(directory: str) -> Optional[str]:
    """Why the checkpoint index in `directory` cannot be read, or None (also when there is none).
    TensorFlow's own reader ignores an index it cannot parse, as if the run had no checkpoint,
    and raises on one that is not text."""
    path = os.path.join(directory, INDEX_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    try:
        state = text_format.Parse(data.decode("utf-8"), CheckpointState())
    except UnicodeDecodeError as error:
        return f"byte {error.start} is not UTF-8 text"
    except text_format.ParseError as error:
        return f"not an index: {str(error).splitlines()[0][:120]}"
    return None if state.model_checkpoint_path else "it names no latest checkpoint"


def checkpoints_on_disk(directory: str) -> List[str]:
    """The checkpoints in `directory` found by their files (ckpt-N.index), oldest first."""
    found = []
    for index in glob.glob(os.path.join(glob.escape(directory), "*.index")):
        prefix = index[:-len(".index")]
        number = prefix.rsplit("-", 1)[-1]
        if number.isdigit():
            found.append((int(number), prefix))
    return [prefix for _, prefix in sorted(found)]


def unused_path(path: str) -> str:
    """`path`, or `path-2`, `path-3`... (before its extension): the first that does not exist, so
    nothing set aside earlier is overwritten."""
    base, extension = os.path.splitext(path)
    candidate, n = path, 1
    while os.path.exists(candidate):
        n += 1
        candidate = f"{base}-{n}{extension}"
    return candidate


def rebuild_damaged_index(run_dir: str, warn: Callable[[str], None]) -> None:
    """A damaged checkpoint index is moved to set_aside/damaged-checkpoint and written again from
    the checkpoints' files, with one warning line; nothing when the index reads."""
    directory = absolute_checkpoint_dir(run_dir)
    reason = index_damage(directory)
    if reason is None:
        return
    index = os.path.join(directory, INDEX_FILE)
    os.makedirs(os.path.join(run_dir, SET_ASIDE_DIR), exist_ok=True)
    aside = unused_path(os.path.join(run_dir, SET_ASIDE_DIR, f"damaged-{INDEX_FILE}"))
    shutil.move(index, aside)
    paths = checkpoints_on_disk(directory)
    if paths:
        # Each checkpoint's time is its files'; the preserved mark before them all keeps every
        # one under --keep_checkpoints' count (CheckpointManager forgets those not newer).
        stamps = [os.path.getmtime(p + ".index") for p in paths]
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")  # update_checkpoint_state's deprecation notice
        try:
            tf.compat.v1.train.update_checkpoint_state(
                directory, os.path.basename(paths[-1]),
                all_model_checkpoint_paths=[os.path.basename(p) for p in paths],
                all_model_checkpoint_timestamps=stamps, last_preserved_timestamp=min(stamps) - 1)
        finally:
            logger.setLevel(level)
    if paths:
        rebuilt = (f"rebuilt from the {len(paths)} checkpoint(s) in {directory} (latest "
                   f"{os.path.basename(paths[-1])})")
    else:
        rebuilt = f"no checkpoint files are left in {directory}, so the run starts afresh"
        history = os.path.join(run_dir, HISTORY_FILE)
        if os.path.exists(history):
            # Starting afresh drops the history's rows: a copy keeps them (as when no checkpoint
            # reads, below).
            shutil.copy2(history, unused_path(os.path.join(run_dir, SET_ASIDE_DIR, HISTORY_FILE)))
            rebuilt += ", its history.csv copied beside the index"
    warn(f"Warning: the checkpoint index {index} is damaged ({reason}); moved to {aside}; "
         f"{rebuilt}.")


def _listed(directory: str) -> List[str]:
    """The checkpoints the index lists, newest first (absolute paths)."""
    state = tf.train.get_checkpoint_state(directory)
    if state is None:
        return []
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    return list(reversed(paths))


def _set_aside(run_dir: str, path: str) -> str:
    """Moves the checkpoint's files to set_aside/damaged-<name>/ (a new folder each time)."""
    destination = os.path.join(run_dir, SET_ASIDE_DIR, f"damaged-{os.path.basename(path)}")
    base, n = destination, 1
    while os.path.exists(destination):
        n += 1
        destination = f"{base}-{n}"
    os.makedirs(destination)
    for file in glob.glob(glob.escape(path) + ".*"):
        shutil.move(file, os.path.join(destination, os.path.basename(file)))
    return destination


def recover_latest(run_dir: str, warn: Callable[[str], None], move: bool = True,
                   ) -> Optional[str]:
    """The newest checkpoint of `run_dir` that reads whole, or None when it has none.

    Each newer damaged one gets a warning and, with `move`, is set aside and dropped from the
    index. Raises NoReadableCheckpoint when there were checkpoints and none reads (with `move`,
    the run directory is then left as a run with nothing trained, its history.csv copied aside).
    """
    directory = absolute_checkpoint_dir(run_dir)
    if move:
        rebuild_damaged_index(run_dir, warn)
    elif index_damage(directory) is not None:
        # A reader leaves the index to the writer; TensorFlow's CheckpointManager fails on it.
        raise ValueError(
            f"the checkpoint index {os.path.join(directory, INDEX_FILE)} is damaged "
            f"({index_damage(directory)}). Nothing was changed; train.py rebuilds it from the "
            f"checkpoints' files: run the run's training command again (a finished run only "
            f"scores itself), then this one")
    damaged, found = [], None
    for path in _listed(directory):
        if not tf.io.gfile.exists(path + ".index"):
            continue  # deleted by the trainer's keep-N since the index was read, or missing
        reason = unreadable_reason(path)
        if reason is None:
            found = path
            break
        if tf.io.gfile.exists(path + ".index"):  # still there: damaged, not being deleted
            damaged.append((path, reason))
    if not damaged:
        return found
    kept = [p for p in reversed(_listed(directory)) if p not in dict(damaged)]
    for path, reason in damaged:
        where = _set_aside(run_dir, path) if move else None
        moved = f"moved to {where}" if where else "skipped"
        using = f"using {os.path.basename(found)}" if found else "no other checkpoint reads"
        warn(f"Warning: checkpoint {path} cannot be read whole ({reason}); {moved}; {using}.")
    if found is None:
        aside = os.path.join(run_dir, SET_ASIDE_DIR)
        if move:
            history = os.path.join(run_dir, HISTORY_FILE)
            if os.path.exists(history):
                shutil.copy2(history, os.path.join(aside, HISTORY_FILE))
            shutil.move(os.path.join(directory, INDEX_FILE),
                        os.path.join(aside, f"{INDEX_FILE}-damaged"))
        raise NoReadableCheckpoint(
            f"no checkpoint in {checkpoint_dir(run_dir)!r} can be read whole"
            + (f"; all were moved to {aside!r} with the run's history.csv. The same command now "
               f"starts the run afresh in {run_dir!r}; another --run_dir starts it elsewhere"
               if move else "; train.py sets them aside when run on it again, and then starts "
               "the run afresh"))
    if move:
        rewrite_checkpoint_index(run_dir, [p for p in kept if tf.io.gfile.exists(p + ".index")],
                                 found)
    return found
