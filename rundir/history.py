"""`history.csv` in the run directory: one row per finished epoch, readable without TensorBoard.

The row is appended when the epoch ends, before its checkpoint is saved, and cut off again if that
save fails (a full disk). A resumed run first drops the rows of epochs after its checkpoint (an
epoch whose checkpoint a crash lost is trained again and gets its row again), so across
interrupts, crashes and restarts every epoch has exactly one row, that of the training its
checkpoint holds. A file whose header lacks some of the columns is given the full header, its rows
empty in the columns it lacked, before a row is appended to it.
"""
import csv
import os

from rundir.layout import HISTORY_FILE

COLUMNS = (
    "epoch", "step",
    "train_loss",           # the objective: main + aux_weight x aux losses + weight decay
    "train_cross_entropy",  # the main logits' cross-entropy, comparable with heldout_loss
    "train_top1",
    "heldout_loss", "heldout_top1", "heldout_top5",  # empty in epochs without an evaluation
    "heldout_ema_loss", "heldout_ema_top1", "heldout_ema_top5",  # the averaged weights' (or empty)
    # With test-time augmentation (--tta; or empty): the trained weights', the averaged ones'.
    "heldout_tta_loss", "heldout_tta_top1", "heldout_tta_top5", "heldout_ema_tta_top1",
    # The validation split's (--val_fraction; or empty), beside the test split's above.
    "val_loss", "val_top1", "val_top5", "val_ema_loss", "val_ema_top1", "val_ema_top5",
    "val_tta_top1", "val_ema_tta_top1",
    "lr",                   # the rate of the epoch's last step
    "images_per_second",    # training images over the epoch's training time
    "epoch_seconds",        # training plus evaluation
    "wall_time",            # when the epoch ended, ISO 8601 with the UTC offset
)


def _format(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class History:
    def __init__(self, run_dir):
        self.path = os.path.join(run_dir, HISTORY_FILE)

    def rows(self):
        """The rows written so far, as dicts of strings."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _header(self):
        with open(self.path, newline="") as f:
            return next(csv.reader(f), [])

    def keep_epochs_up_to(self, epoch):
        """Drops the rows after `epoch` (they are retrained); atomic, so a crash cannot lose the
        rest."""
        rows = self.rows()
        kept = [row for row in rows if int(row["epoch"]) <= epoch]
        if len(kept) == len(rows):
            return
        self._rewrite(kept)

    def _rewrite(self, rows):
        """The file with `rows` under the full header (COLUMNS); atomic."""
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, **row):
        missing = set(COLUMNS) - set(row)
        if missing:
            raise ValueError(f"history row lacks {sorted(missing)}")
        new_file = not os.path.exists(self.path)
        if not new_file and tuple(self._header()) != COLUMNS:
            self._rewrite(self.rows())  # columns by name, so the row lines up with the header
        self._before_append = 0 if new_file else os.path.getsize(self.path)
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            if new_file:
                writer.writerow(COLUMNS)
            writer.writerow([_format(row[name]) for name in COLUMNS])
            f.flush()
            os.fsync(f.fileno())

    def undo_append(self):
        """Cuts the last appended row off again (in place: it needs no free space); a file that
        row created goes, header and all."""
        if self._before_append:
            os.truncate(self.path, self._before_append)
        else:
            os.remove(self.path)


class EpochMeter:
    """The current epoch's training metrics, summed over its steps.

    Saved inside every mid-epoch checkpoint (Ctrl+C, --checkpoint_every; `Checkpoints.save`), so
    the row of an epoch that was interrupted and resumed covers all its steps, not only those
    after the resume, whatever moment a crash picks.
    """
    FIELDS = ("steps", "total_loss", "cross_entropy", "top1", "train_seconds")

    def __init__(self, **sums):
        self.sums = {name: float(sums.get(name, 0.0)) for name in self.FIELDS}

    @classmethod
    def from_vector(cls, values) -> "EpochMeter":
        """The sums in FIELDS order, as a checkpoint holds them."""
        return cls(**dict(zip(cls.FIELDS, (float(v) for v in values))))

    def vector(self):
        return [self.sums[name] for name in self.FIELDS]

    def add(self, steps, seconds, total_loss, cross_entropy, top1):
        """`steps` more steps taking `seconds`, with these mean metrics."""
        self.sums["steps"] += steps
        self.sums["train_seconds"] += seconds
        for name, mean in (("total_loss", total_loss), ("cross_entropy", cross_entropy),
                           ("top1", top1)):
            self.sums[name] += steps * mean

    def mean(self, name):
        steps = self.sums["steps"]
        return self.sums[name] / steps if steps else float("nan")

    @property
    def train_seconds(self):
        return self.sums["train_seconds"]
