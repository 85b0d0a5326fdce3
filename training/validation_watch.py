"""What the validation split (--val_fraction) decides as a run goes, as an observer of the loop
(training/observers.py): the best epoch kept in best/ and --early_stopping (rundir/best.py), and
--lr_schedule=plateau's reductions (training/plateau.py).

Every decision reads the validation scores alone, never the test split's. The plateau rule sees
an epoch's score when the epoch is done, before its checkpoint is saved, so that checkpoint holds
the rate the next epoch trains at; the best epoch is copied once its checkpoint exists.
"""
from typing import Callable, Optional

from rundir.best import BestEpoch, validation_score
from training.observers import EpochSummary, Observer
from training.optimization import EpochSchedule
from training.plateau import Plateau


class ValidationWatch(Observer):
    """The best epoch so far, the early stop and the plateau reductions of one run."""

    def __init__(self, run_dir: str, ema: bool, early_stopping: int,
                 plateau: Optional[Plateau], schedule: EpochSchedule,
                 print_fn: Callable[[str], None]) -> None:
        self.ema, self.patience = ema, early_stopping
        self.plateau, self.schedule, self.print = plateau, schedule, print_fn
        # From the (already trimmed) history: the best so far and the evaluations since it.
        self.best = BestEpoch.resume(run_dir, ema, warn=print_fn)
        self._reduced = False

    def epoch_done(self, summary: EpochSummary) -> None:
        if self.plateau is not None and summary.heldout is not None:
            self._reduced = self.plateau.see(validation_score(summary.heldout["val"], self.ema))

    def epoch_saved(self, summary: EpochSummary, checkpoint: str) -> None:
        if summary.heldout is None:
            return
        self.best.record(summary.epoch, summary.step, summary.heldout["val"], checkpoint)
        if self._reduced:  # said after the epoch's own line
            self.print(self.plateau.line(float(self.schedule(summary.step))))
            self._reduced = False

    def stops(self) -> bool:
        """Whether --early_stopping ends the run here (said once, when it does)."""
        if not self.best.exhausted(self.patience):
            return False
        self.print(self.best.stop_line(self.patience))
        return True
