"""`--profile_steps=A,B`: a TensorBoard profiler trace of global steps A to B.

TensorFlow's own profiler records the steps into `<run_dir>/train/plugins/profile/<time>/`, beside
the run's training curves, so `tensorboard --logdir runs/` shows it in the Profile tab (with the
`profile` extra installed). Each step, its batch's fetch included, is marked as a "train" step
with its number, which is what the Profile tab's step-time and input-pipeline analyses read.

Steps are the run's own global steps (1-based, TensorBoard's x axis): a run resumed inside the
range profiles the steps it still runs, one resumed past it profiles nothing, and a range that
goes past the end of training stops there. A stop or crash inside the range stops the profiler
on the way out (what it recorded is written); a killed process writes nothing and leaves nothing
a resumed command reads.
"""
import contextlib
import os
from typing import ContextManager, Optional

import tensorflow as tf

# Where TensorFlow's profiler writes under the log directory it is given, and where the Profile
# tab looks for its runs.
PROFILE_SUBDIR = os.path.join("plugins", "profile")


class StepProfiler:
    """Profiles the global steps `steps` = (A, B) into `log_dir`; `steps` None profiles nothing."""

    def __init__(self, steps: Optional[tuple], log_dir: str) -> None:
        self.first, self.last = (int(s) for s in steps) if steps else (None, None)
        self.end = self.last  # the range's last step that runs (`plan`)
        self.log_dir = log_dir
        self.running = False

    def plan(self, next_step: int, total_steps: int) -> Optional[str]:
        """The line saying which of the range's steps this run profiles, where to, or that none
        runs; `next_step`..`total_steps` are the steps the run has left. A range past the end of
        training ends with its last step, before the final evaluation."""
        if self.first is None:
            return None
        first, last = max(self.first, next_step), min(self.last, total_steps)
        self.end = last
        if first > last:
            return (f"--profile_steps={self.first},{self.last}: none of these steps is left to "
                    f"run (the run is at step {next_step - 1} of {total_steps}); nothing is "
                    f"profiled.")
        return (f"Profiling steps {first} to {last} into {self.directory} (TensorBoard's "
                f"Profile tab).")

    @property
    def directory(self) -> str:
        return os.path.join(self.log_dir, PROFILE_SUBDIR)

    def step(self, step: int) -> ContextManager:
        """Around global step `step`'s work (its batch and its training step): starts the
        profiler at the first profiled step that runs and marks the step for the Profile tab."""
        if self.first is None or not self.first <= step <= self.last:
            return contextlib.nullcontext()
        if not self.running:
            tf.profiler.experimental.start(self.log_dir)
            self.running = True
        return tf.profiler.experimental.Trace("train", step_num=step, _r=1)

    def step_done(self, step: int, result: dict) -> None:
        """After global step `step` was dispatched: at the range's last step, waits for its
        `result` (the devices run ahead of the host) and writes the trace."""
        if self.running and step >= self.end:
            for value in tf.nest.flatten(result):
                value.numpy()
            self.stop()

    def stop(self) -> None:
        """Writes what was recorded, if the profiler is running (the range's end, the end of
        training, a stop or an error)."""
        if self.running:
            self.running = False
            tf.profiler.experimental.stop()
