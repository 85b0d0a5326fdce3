"""What differs between the chief and the other workers of a run, gathered in one place.

On one machine the only process is the chief. In a multi-worker job every worker trains its shard
in step with the others, but only the chief owns the run directory: it writes the settings, the
split, the history and the finished marker, and it evaluates. The other workers
write their checkpoints and logs to a scratch directory, removed when they stop, and return only
how far they got.
"""
import json
import os
import shutil
import tempfile
from typing import Callable, Optional

from absl import logging

from rundir.history import History
from rundir.history_repair import repair_history
from rundir.layout import CACHE_DIR, DONE_FILE
from rundir.plot import write_run_plot
from rundir.recorded import save_run_config
from rundir.restart import set_aside_after
from settings.cluster import Worker
from settings.config import TrainConfig


class Role:
    def __init__(self, worker: Worker, config: TrainConfig):
        self.worker = worker
        self.is_chief = worker.is_chief
        self.run_dir = config.run_dir
        self.write_dir = (config.run_dir if self.is_chief
                          else tempfile.mkdtemp(prefix="googlenet-worker-"))
        self.history = History(config.run_dir) if self.is_chief else None

    # -- set-up -----------------------------------------------------------------------------
    def save_config(self, config: TrainConfig):
        if self.is_chief:
            save_run_config(config)

    def cache_dir(self, config: TrainConfig) -> str:
        """--cache_dir is the chief's; other workers keep theirs beside their scratch files."""
        if self.is_chief and config.cache_dir:
            return config.cache_dir
        return os.path.join(self.write_dir, CACHE_DIR)

    @property
    def report_dir(self) -> Optional[str]:
        """Where the list of unreadable files goes."""
        return self.run_dir if self.is_chief else None

    @property
    def evaluates(self) -> bool:
        return self.is_chief

    def set_aside(self, restart) -> Optional[str]:
        """--restart_from: moves what came after the older checkpoint out of the way."""
        return set_aside_after(self.run_dir, restart) if self.is_chief and restart else None

    # -- the loop ---------------------------------------------------------------------------
    def start(self, epochs_done: int, steps_per_epoch: int,
              warn: Callable[[str], None] = print):
        """Before the first step: the run is not finished, a damaged history.csv is rebuilt from
        the logs (said with `warn`), and epochs after the checkpoint are trained again, so their
        history rows go."""
        if self.is_chief:
            done = os.path.join(self.run_dir, DONE_FILE)
            if os.path.exists(done):
                os.remove(done)
            repair_history(self.run_dir, epochs_done, steps_per_epoch, warn)
            self.history.keep_epochs_up_to(epochs_done)

    def record_epoch(self, **row):
        if self.is_chief:
            self.history.append(**row)

    def unrecord_epoch(self):
        """The epoch's checkpoint did not land: its row goes again."""
        if self.is_chief:
            self.history.undo_append()

    def epoch_saved(self):
        """The epoch's checkpoint is written: the learning curves (history.png) are redrawn."""
        if self.is_chief:
            try:
                write_run_plot(self.run_dir)
            except Exception as error:  # a picture is never worth stopping the training for
                logging.warning("Could not draw %s's history.png: %s", self.run_dir, error)

    def finish(self, step: int, checkpoint: str, evaluation: Optional[dict]) -> dict:
        """The run's result; the chief also marks the run finished for `evaluate.py --watch`."""
        if not self.is_chief:
            return dict(step=step, worker=self.worker.index)
        with open(os.path.join(self.run_dir, DONE_FILE), "w") as f:
            json.dump({"step": step, "checkpoint": checkpoint}, f)
        return dict(step=step, **evaluation)

    def close(self):
        if not self.is_chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)
