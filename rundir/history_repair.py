"""A damaged history.csv (a line cut off by a crash mid-write, a file overwritten, rows lost) is
moved to `set_aside/` and rebuilt from the run's TensorBoard logs, which hold the same per-epoch
numbers: the epoch's training cross-entropy and top-1 (train/, under the `epoch_` tags), its
held-out scores and the rate at its last step (eval/ and train/, by step), and with a validation
split its scores (validation/, under eval/'s tags). The three columns the
logs hold only per logging window or not at all (train_loss, images_per_second, epoch_seconds) are
left empty in the rebuilt rows rather than guessed.

train.py checks the file as a run starts (rundir.roles.Role.start), before it appends to it.
"""
import csv
import datetime
import io
import os
import re
import shutil
from typing import Callable, Dict, Optional, Tuple

import tensorflow as tf

from rundir.history import COLUMNS
from rundir.layout import (
    EVAL_LOG_DIR,
    HISTORY_FILE,
    SET_ASIDE_DIR,
    TRAIN_LOG_DIR,
    VAL_LOG_DIR,
    log_dir,
)
from rundir.recovery import unused_path

# heldout_<tag> is eval/'s <tag> (top1, ema_top1, ...), val_<tag> validation/'s.
PREFIX_LOG_DIRS = (("heldout_", EVAL_LOG_DIR), ("val_", VAL_LOG_DIR))
_COLUMN_NAME = re.compile(r"[a-z][a-z0-9_]*")


def history_damage(path: str, epochs_done: int) -> Optional[str]:
    """Why the history.csv at `path` is damaged, or None when it reads (or does not exist).

    A header of column names (older versions wrote fewer columns, later ones may write more),
    rows as wide as it, a whole number in every row's epoch, a line break after the last row,
    and a row for each of the `epochs_done` epochs the run's checkpoint has trained."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"byte {error.start} is not UTF-8 text"
    if not text:
        return "it is empty" if epochs_done else None
    if not text.endswith("\n"):
        return "its last line is cut off"
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header = rows[0]
    if not header or header[0] != "epoch" or not all(map(_COLUMN_NAME.fullmatch, header)):
        return "its first line is not history.csv's header"
    epochs = set()
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            return f"line {line} has {len(row)} fields, the header {len(header)}"
        if not row[0].isdigit():
            return f"line {line}'s epoch {row[0][:20]!r} is not a number"
        epochs.add(int(row[0]))
    missing = sorted(set(range(1, epochs_done + 1)) - epochs)
    if missing:
        return f"it has no row for epoch {missing[0]}, which the checkpoint has trained"
    return None


def _logged(directory: str) -> Dict[str, Dict[int, Tuple[float, float]]]:
    """{tag: {step: (value, wall time)}} of the scalars in `directory`'s event files. A step
    written twice (an epoch trained again after a crash) keeps the later value; a file cut off
    (a crash mid-write) gives what it holds up to the cut."""
    values: Dict[str, Dict[int, Tuple[float, float]]] = {}
    names = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    for name in names:
        if not name.startswith("events.out.tfevents"):
            continue
        try:
            for record in tf.data.TFRecordDataset(os.path.join(directory, name)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.HasField("tensor") and not value.tensor.tensor_shape.dim:
                        scalar = tf.make_ndarray(value.tensor)
                        if scalar.dtype.kind != "f":
                            continue
                        logged = values.setdefault(value.tag, {})
                        if event.step not in logged or logged[event.step][1] <= event.wall_time:
                            logged[event.step] = (float(scalar), event.wall_time)
        except tf.errors.DataLossError:
            continue
    return values


def _number(logged: Dict[int, Tuple[float, float]], step: int) -> str:
    return f"{logged[step][0]:.6g}" if step in logged else ""


def rebuilt_rows(run_dir: str, epochs_done: int, steps_per_epoch: int) -> list:
    """history.csv's rows for the epochs up to `epochs_done` that the TensorBoard logs hold."""
    train = _logged(log_dir(run_dir, TRAIN_LOG_DIR))
    scored = [(prefix, _logged(log_dir(run_dir, kind))) for prefix, kind in PREFIX_LOG_DIRS]
    per_epoch = train.get("epoch_loss", {})
    rows = []
    for epoch in sorted(e for e in per_epoch if 1 <= e <= epochs_done):
        step = epoch * steps_per_epoch
        row = {column: "" for column in COLUMNS}
        ended = datetime.datetime.fromtimestamp(per_epoch[epoch][1]).astimezone()
        row.update(epoch=str(epoch), step=str(step),
                   train_cross_entropy=_number(per_epoch, epoch),
                   train_top1=_number(train.get("epoch_accuracy", {}), epoch),
                   lr=_number(train.get("learning_rate", {}), step),
                   wall_time=ended.isoformat(timespec="seconds"))
        for column in COLUMNS:
            for prefix, logged in scored:
                if column.startswith(prefix):
                    row[column] = _number(logged.get(column[len(prefix):], {}), step)
        rows.append(row)
    return rows


def repair_history(run_dir: str, epochs_done: int, steps_per_epoch: int,
                   warn: Callable[[str], None]) -> None:
    """When history.csv is damaged: moves it to set_aside/damaged-history.csv (never over an
    earlier one), writes it again from the logs, and says so in one line."""
    path = os.path.join(run_dir, HISTORY_FILE)
    reason = history_damage(path, epochs_done)
    if reason is None:
        return
    rows = rebuilt_rows(run_dir, epochs_done, steps_per_epoch)
    os.makedirs(os.path.join(run_dir, SET_ASIDE_DIR), exist_ok=True)
    aside = unused_path(os.path.join(run_dir, SET_ASIDE_DIR, f"damaged-{HISTORY_FILE}"))
    # The rebuilt file is written beside it first, so a crash in between loses neither (and a
    # .tmp left over is removed by the next start: recovery.remove_partial_files).
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    shutil.move(path, aside)
    os.replace(tmp, path)
    folders = [TRAIN_LOG_DIR, EVAL_LOG_DIR] + (
        [VAL_LOG_DIR] if os.path.isdir(log_dir(run_dir, VAL_LOG_DIR)) else [])
    warn(f"Warning: {path} is damaged ({reason}); moved to {aside} and rebuilt from the "
         f"TensorBoard logs in {', '.join(f + '/' for f in folders[:-1])} and "
         f"{folders[-1]}/ ({len(rows)} of "
         f"{epochs_done} epochs; train_loss, images_per_second and epoch_seconds, which the logs "
         f"do not hold per epoch, left empty).")
