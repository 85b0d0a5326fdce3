"""The best epoch of a run with a validation split (--val_fraction), and `--early_stopping`.

The choice is made on the validation split alone, never on the test split: the validation top-1
of the weights evaluate.py scores by default (the averaged weights' with --ema_decay, else the
trained weights'; without test-time augmentation), higher is better, and only a strictly higher
score is an improvement, so a tie keeps the earlier epoch.

The best epoch's checkpoint is copied into `<run_dir>/best/` after the epoch's own checkpoint
is saved, under its own file names, and `best/best.json` (epoch, step, metric, score and the
checkpoint's name) is replaced atomically last: a crash part-way leaves best.json naming the
previous copy, whole. The older copy's files go only after that. checkpoints/' pruning
(--keep_checkpoints) never looks into best/.

A resumed run knows its best so far from history.csv (whose rows are those of the training its
checkpoint holds) and counts the evaluations since then for --early_stopping; best.json fills in
when the history holds no validation scores (rebuilt from logs whose validation/ was lost).
"""
import dataclasses
import glob
import json
import os
import shutil
from typing import Callable, List, Optional

from rundir.history import History
from rundir.layout import BEST_FILE, best_dir, checkpoint_dir

BEST = "best"  # evaluate.py --checkpoint=best


def metric_column(ema: bool) -> str:
    """The history.csv column the choice reads: the averaged weights' top-1 with --ema_decay."""
    return "val_ema_top1" if ema else "val_top1"


def validation_score(validation: dict, ema: bool) -> float:
    """The score the choice compares, from the validation split's held-out scores."""
    return float(validation["ema"]["top1"] if ema else validation["top1"])


def read_best(run_dir: str) -> Optional[dict]:
    """best/best.json's record (epoch, step, metric, score, checkpoint), None without one."""
    path = os.path.join(best_dir(run_dir), BEST_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
        record["epoch"], record["step"] = int(record["epoch"]), int(record["step"])
        return record
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is damaged ({error}); move {best_dir(run_dir)} away to "
                         f"choose the best epoch afresh") from None


def best_checkpoint(run_dir: str, missing_ok: bool = False) -> Optional[str]:
    """The path of the best epoch's checkpoint (evaluate.py --checkpoint=best); when the run has
    none, None with `missing_ok`, else one line raised."""
    record = read_best(run_dir)
    if record is None and missing_ok:
        return None
    if record is None:
        raise ValueError(f"--checkpoint={BEST}: {run_dir!r} holds no {best_dir(run_dir)}/ (the "
                         f"run trained without --val_fraction, or has not been scored yet)")
    return os.path.join(best_dir(run_dir), record["checkpoint"])


def _copy_checkpoint(source: str, run_dir: str) -> str:
    """Copies the checkpoint at `source` (its .index and data files) into best/, each file to a
    temporary name first; returns the copy's name inside best/."""
    folder = best_dir(run_dir)
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(source)
    for path in glob.glob(glob.escape(source) + ".*"):
        target = os.path.join(folder, os.path.basename(path))
        shutil.copyfile(path, target + ".tmp")
        os.replace(target + ".tmp", target)
    return name


def _write_record(run_dir: str, record: dict) -> None:
    path = os.path.join(best_dir(run_dir), BEST_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def _remove_other_copies(run_dir: str, keep: str) -> None:
    for path in glob.glob(os.path.join(glob.escape(best_dir(run_dir)), "*")):
        name = os.path.basename(path)
        if name != BEST_FILE and not name.startswith(keep + "."):
            os.remove(path)


@dataclasses.dataclass
class BestEpoch:
    """The best validation score so far, its epoch, and the evaluations since it."""
    run_dir: str
    ema: bool
    score: Optional[float] = None
    epoch: Optional[int] = None
    since: int = 0  # evaluations without an improvement since `epoch`

    @property
    def metric(self) -> str:
        return metric_column(self.ema)

    @classmethod
    def resume(cls, run_dir: str, ema: bool,
               warn: Callable[[str], None] = print) -> "BestEpoch":
        """The state a run resumes with, from its (already trimmed) history.csv. When the history
        names a best epoch that best/ does not hold (a crash after the epoch's checkpoint, before
        its copy), the copy is made again from that checkpoint if it is still kept."""
        best = cls(run_dir, ema)
        scored: List[dict] = []
        for row in History(run_dir).rows():
            try:
                scored.append(dict(epoch=int(row["epoch"]), step=int(row["step"]),
                                   score=float(row[best.metric])))
            except (KeyError, TypeError, ValueError):  # not scored that epoch
                continue
        for row in scored:
            best._see(row["epoch"], row["score"])
        record = read_best(run_dir)
        if best.epoch is None:
            if record is not None and record.get("metric") == best.metric:
                best.score, best.epoch = float(record["score"]), record["epoch"]
            return best
        if record is None or record["epoch"] != best.epoch:
            step = next(r["step"] for r in scored if r["epoch"] == best.epoch)
            source = os.path.join(checkpoint_dir(run_dir), f"ckpt-{step}")
            if os.path.exists(source + ".index"):
                best._keep(best.epoch, step, source)
            else:
                warn(f"Note: {best_dir(run_dir)} does not hold epoch {best.epoch}, the best by "
                     f"{best.metric} in history.csv, and its checkpoint is no longer kept.")
        return best

    def _see(self, epoch: int, score: float) -> bool:
        if self.score is None or score > self.score:
            self.score, self.epoch, self.since = score, epoch, 0
            return True
        self.since += 1
        return False

    def _keep(self, epoch: int, step: int, checkpoint: str) -> None:
        name = _copy_checkpoint(checkpoint, self.run_dir)
        _write_record(self.run_dir, dict(epoch=epoch, step=step, metric=self.metric,
                                         score=self.score, checkpoint=name))
        _remove_other_copies(self.run_dir, name)

    def record(self, epoch: int, step: int, validation: dict, checkpoint: str) -> bool:
        """One evaluation of `epoch`, whose checkpoint is saved at `checkpoint`: copied into
        best/ when its score is the best so far. Returns whether it was."""
        improved = self._see(epoch, validation_score(validation, self.ema))
        if improved:
            self._keep(epoch, step, checkpoint)
        return improved

    def exhausted(self, patience: int) -> bool:
        """Whether --early_stopping=`patience` stops the run (never with patience 0)."""
        return patience > 0 and self.epoch is not None and self.since >= patience

    def stop_line(self, patience: int) -> str:
        return (f"Early stopping: {self.metric} has not improved for {patience} evaluation(s) "
                f"since epoch {self.epoch} ({self.score:.4f}); {best_dir(self.run_dir)} holds "
                f"that epoch's weights (evaluate.py --checkpoint={BEST}).")
