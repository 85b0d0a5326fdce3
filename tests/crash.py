"""Crash test of train.py: SIGKILL it at random moments, resume with the same command, and check
that the finished run is the run an uninterrupted one would have been.

    python tests/crash.py --kills=100 --data_dir=photos --work_dir=/tmp/crash

`data_dir` is a small class-per-folder tree (tests/test_crash.py makes one of 3 classes x 6
images). The script first trains a reference run with --deterministic, then trains the same
command in another run directory, killing its whole process group with SIGKILL after a random
delay and starting the exact same command again, until --kills kills were made; the last start
runs to the end. The delay is drawn uniformly (seeded by --seed) over the attempt's expected
length up to its last epoch's line, and a quarter more (SLACK): its start-up, then the epochs it
has left, each part as long as the reference run and the recent attempts took (Timeline). A start
that ends before its kill finishes the crashed run: it is checked, and the kills go on in a new
one (crashed-2, ...), as further starts of a finished run would only score it again. Each kill is
put in the phase it landed in, judged from what the process had printed and what was on disk
once it was dead:

    start-up          before the "Training ... on ..." line (TensorFlow import, first pass, model)
    set-up            from there to the first step (history rows after the checkpoint dropped,
                      the input iterator made)
    training          in an epoch's steps (its first step traces the step function)
    checkpoint write  a checkpoint being written: a ckpt-*_temp entry, a written checkpoint not
                      yet in the `checkpoint` index, or the index listing more than it keeps
                      (old ones being deleted)
    held-out scoring  the epoch's last step was printed, its history row is not yet written
    epoch wrap-up     the epoch's history row is written, its "Epoch N/M:" line is not yet
                      printed (its checkpoint, outside the moments seen on disk, and its plot)
    finishing         after the last epoch's line: the finished marker, freeing the input
                      pipeline, the exit
    other             anything else (output these rules do not expect)

With --aim=checkpoint each start is killed instead as one of its next three saves is under way
(the tiny default model saves in milliseconds; with --model=googlenet a save is caught).

Then it checks each crashed run: its last start exits 0; its latest checkpoint is at step epochs x
steps per epoch; history.csv has one row per epoch, 1..E in order, each with the reference run's
figures; every checkpoint in checkpoints/ reads whole; and its final checkpoint equals the
reference run's bit for bit: the weights, batch norm's statistics, the optimizer's state, the
step and dropout's random state (with --deterministic a resumed run redoes exactly the steps the
killed one lost). Kills are SIGKILL, so nothing in train.py gets to clean up: this is a power
cut, not a Ctrl+C.
"""
import argparse
import collections
import csv
import dataclasses
import functools
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Unbuffered, so every line train.py printed before the kill is in the pipe when it dies (its
# `print`s are not flushed, and the phase is read from them).
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT, "PYTHONUNBUFFERED": "1"}

PHASES = ("start-up", "set-up", "training", "checkpoint write", "held-out scoring",
          "epoch wrap-up", "finishing", "other")
KEEP_CHECKPOINTS = 3  # passed to train.py: an index listing more is mid-way through a save
AIMS = ("random", "checkpoint")
SLACK = 1.25  # kill delays are drawn over this times an attempt's expected length

_BAR = re.compile(r"^\s*([\d,]+)/([\d,]+) \[")
_EPOCH = re.compile(r"^Epoch (\d+)/(\d+):")
_RESUMED = re.compile(r"^Resumed from .+ at step (\d+) \(")
_STEPS_PER_EPOCH = re.compile(r"(\d+) steps/epoch")
_CHECKPOINT_FILE = re.compile(r"^(ckpt-(\d+))\.(index|data-\d+-of-\d+)$")


def train_command(data_dir: str, run_dir: str, *, epochs: int, checkpoint_every: int,
                  model: str = "minigooglenet", width_multiplier: float = 0.125) -> List[str]:
    """The train.py command of both runs (only --run_dir differs)."""
    return [sys.executable, os.path.join(ROOT, "train.py"), "--dataset=folder",
            f"--data_dir={data_dir}", f"--run_dir={run_dir}", "--image_size=32",
            f"--model={model}", f"--width_multiplier={width_multiplier}", "--batch_size=4",
            f"--epochs={epochs}", f"--checkpoint_every={checkpoint_every}", "--log_every=1",
            f"--keep_checkpoints={KEEP_CHECKPOINTS}", "--deterministic"]


class Attempt:
    """One start of train.py in its own process group; a thread reads its stdout as it comes and
    writes each line to `log_path`.out with its time since the start (stderr goes to
    `log_path`.err)."""

    def __init__(self, command: List[str], log_path: str) -> None:
        self.lines: List[Tuple[float, str]] = []
        self.killed_at: Optional[float] = None
        self.training_at: Optional[float] = None  # when the "Training ... on" line came
        self._training = threading.Event()
        self._out = open(log_path + ".out", "w")
        self._err = open(log_path + ".err", "w")
        self.started = time.monotonic()
        # A session of its own: os.killpg reaches every process it starts, so none survives.
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._err,
                                        text=True, env=ENV, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))
            if self.training_at is None and line.startswith("Training "):
                self.training_at = self.lines[-1][0]
                self._training.set()
            self._out.write(f"{self.lines[-1][0]:8.2f}  {line}")
            self._out.flush()

    def wait(self, timeout: Optional[float]) -> Optional[int]:
        """The exit code, or None if it still runs after `timeout` seconds."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_for_training_line(self, timeout: float) -> Optional[float]:
        """When the "Training ... on" line came, or None if the process ended first."""
        deadline = time.monotonic() + timeout
        while not self._training.wait(timeout=0.05) and time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._reader.join(timeout=60)  # the line may still be in the pipe
                break
        return self.training_at

    def kill(self) -> Optional[int]:
        """SIGKILLs the process group; the exit code if the process ended by itself first, else
        None. (Not yet waited for, the process keeps its group id, so no other gets it.)"""
        self.killed_at = time.monotonic() - self.started
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:  # the whole group ended just before
            pass
        code = self.process.wait()
        return None if code == -signal.SIGKILL else code

    def close(self) -> List[str]:
        """Waits for the output to end; every line the process printed."""
        self._reader.join(timeout=60)
        self.process.stdout.close()
        if self.killed_at is not None:
            self._out.write(f"{self.killed_at:8.2f}  [SIGKILL]\n")
        self._out.close()
        self._err.close()
        return [line for _, line in self.lines]

    def stderr_tail(self, chars: int = 3000) -> str:
        with open(self._err.name) as f:
            return f.read()[-chars:]


# -- what was on disk ----------------------------------------------------------------------------
def _entries(directory: str) -> Dict[str, int]:
    """{name: mtime in ns} of a directory's entries (none if it does not exist)."""
    found = {}
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return found
    for name in names:
        try:
            found[name] = os.stat(os.path.join(directory, name)).st_mtime_ns
        except FileNotFoundError:  # deleted between the listing and the stat
            pass
    return found


def listed_checkpoints(checkpoint_dir: str) -> Tuple[Optional[str], List[str]]:
    """(latest, all listed) checkpoint names of the `checkpoint` index file, read as text
    (without TensorFlow, and without its fallbacks)."""
    latest, listed = None, []
    try:
        with open(os.path.join(checkpoint_dir, "checkpoint")) as f:
            text = f.read()
    except FileNotFoundError:
        return None, []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        value = os.path.basename(value.strip().strip('"'))
        if key == "model_checkpoint_path":
            latest = value
        elif key == "all_model_checkpoint_paths":
            listed.append(value)
    return latest, listed


def _checkpoint_being_written(checkpoint_dir: str, before: Dict[str, int]) -> bool:
    """Whether a checkpoint save was under way, from the checkpoints/ directory after the kill
    and its entries (`before`) when the attempt started: only what this attempt wrote counts, as
    a killed save's leftovers stay until the same checkpoint is saved again."""
    after = _entries(checkpoint_dir)
    written = {name for name, mtime in after.items() if before.get(name) != mtime}
    _, listed = listed_checkpoints(checkpoint_dir)
    for name in written:
        if "_temp" in name or name.startswith("checkpoint.tmp"):
            return True  # the shards before their merge, or the index before its rename
        match = _CHECKPOINT_FILE.match(name)
        if match and match.group(1) not in listed:
            return True  # merged, not yet in the index
    # The index is written with the new checkpoint first, then again once the oldest are gone.
    return "checkpoint" in written and len(listed) > KEEP_CHECKPOINTS


def _history(run_dir: str) -> List[Dict[str, str]]:
    try:
        with open(os.path.join(run_dir, "history.csv"), newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def _history_epochs(run_dir: str) -> List[int]:
    return [int(row["epoch"]) for row in _history(run_dir)]


# The history columns a --deterministic run repeats exactly (not the timings).
_REPEATED_COLUMNS = ("epoch", "step", "train_loss", "train_cross_entropy", "train_top1",
                     "heldout_loss", "heldout_top1", "heldout_top5", "lr")


def _same_value(ours: str, theirs: str) -> bool:
    """Equal cells; numbers to 1e-4 relative, as a resumed epoch adds its sums in other groups."""
    if ours == theirs:
        return True
    try:
        return abs(float(ours) - float(theirs)) <= 1e-4 * max(abs(float(theirs)), 1e-12)
    except (TypeError, ValueError):
        return False


def classify(lines: List[str], run_dir: str, checkpoints_before: Dict[str, int],
             steps_per_epoch: int, epochs: int) -> str:
    """The phase a kill landed in, from the attempt's output and the run directory after it."""
    if _checkpoint_being_written(os.path.join(run_dir, "checkpoints"), checkpoints_before):
        return "checkpoint write"
    start = next((i for i, line in enumerate(lines) if line.startswith("Training ")), None)
    if start is None:
        return "start-up"
    step = 0
    for line in lines[:start]:
        resumed = _RESUMED.match(line)
        if resumed:
            step = int(resumed.group(1))
    epoch = step // steps_per_epoch + 1  # the epoch under way, 1-based
    # With nothing left to train, a start only scores the model again.
    phase = "held-out scoring" if step >= epochs * steps_per_epoch else "set-up"
    for line in lines[start + 1:]:
        bar, done = _BAR.match(line), _EPOCH.match(line)
        if bar:
            at, total = (int(g.replace(",", "")) for g in bar.groups())
            phase = ("other" if phase == "finishing"  # a step after the last epoch?
                     else "training" if at < total else "held-out scoring")
        elif done:
            epoch = int(done.group(1)) + 1
            phase = "training" if epoch <= epochs else "finishing"
        elif line.startswith("Done at step"):
            phase = "finishing"
    if phase == "held-out scoring" and epoch in _history_epochs(run_dir):
        return "epoch wrap-up"
    return phase


# -- checks of a finished run --------------------------------------------------------------------
def read_checkpoint(prefix: str) -> Dict[str, object]:
    """Every tensor of a checkpoint, by name (raises if any cannot be read)."""
    import tensorflow as tf
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def checkpoint_step(prefix: str) -> int:
    import tensorflow as tf
    return int(tf.train.load_variable(prefix, "step/.ATTRIBUTES/VARIABLE_VALUE"))


def check_checkpoints(run_dir: str) -> Tuple[List[str], List[str]]:
    """(failures, notes) of a run's checkpoints/: each checkpoint there must read whole, and the
    index must point at one. A data file without its index (a deletion the kill cut short) is
    only noted: nothing lists or reads it."""
    directory = os.path.join(run_dir, "checkpoints")
    failures, notes = [], []
    latest, listed = listed_checkpoints(directory)
    if latest is None:
        return [f"{directory} has no checkpoint index"], notes
    prefixes = {}
    for name in os.listdir(directory):
        match = _CHECKPOINT_FILE.match(name)
        if match:
            prefixes.setdefault(match.group(1), set()).add(match.group(3))
        elif name != "checkpoint":
            notes.append(f"leftover {name} in checkpoints/")
    for prefix, parts in sorted(prefixes.items()):
        if "index" not in parts:
            notes.append(f"leftover {prefix} data without its index in checkpoints/")
            continue
        try:
            read_checkpoint(os.path.join(directory, prefix))
        except Exception as error:  # any reason it does not read is the failure reported
            failures.append(f"{prefix} does not read whole: {type(error).__name__}: "
                            f"{str(error)[:300]}")
    for name in {latest, *listed}:
        if "index" not in prefixes.get(name, ()):
            (failures if name == latest else notes).append(
                f"the checkpoint index lists {name}, which is not there")
    return failures, notes


# Not training state: the object graph's layout, and how many saves the run made (a killed save
# counts in neither run's next checkpoint alike).
_BOOKKEEPING = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE")


def compare_checkpoints(reference: str, crashed: str) -> Tuple[int, List[str]]:
    """(how many tensors were compared, those that differ) between two checkpoints: the whole
    training state, bit for bit. Not just model/: the checkpoint saves each variable once, under
    the first path to it, and the trainable weights are reached through the optimizer
    (optimizer/_trainable_variables/...); model/ holds only what the optimizer does not track
    (batch norm's moving statistics)."""
    import numpy as np
    a, b = read_checkpoint(reference), read_checkpoint(crashed)
    names = sorted(n for n in a if n not in _BOOKKEEPING)
    if names != sorted(n for n in b if n not in _BOOKKEEPING):
        return len(names), ["the two checkpoints hold other variables"]
    differ = []
    for name in names:
        try:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        except AssertionError:
            diff = np.max(np.abs(a[name].astype(np.float64) - b[name].astype(np.float64)))
            differ.append(f"{name} differs (max abs diff {diff:.3g})")
    return len(names), differ


# -- the two runs --------------------------------------------------------------------------------
@dataclasses.dataclass
class Kill:
    run: str        # the crashed run's directory name
    attempt: int
    from_step: int  # the latest checkpoint's step when the attempt started
    delay: float    # seconds after the start
    phase: str


@dataclasses.dataclass
class CrashedRun:
    """One crashed run, once it finished, as checked against the reference."""
    name: str
    kills: int = 0
    final_step: Optional[int] = None
    history_epochs: List[int] = dataclasses.field(default_factory=list)
    tensors_compared: int = 0  # of its final checkpoint, with the reference's


@dataclasses.dataclass
class Report:
    kills: List[Kill] = dataclasses.field(default_factory=list)
    runs: List[CrashedRun] = dataclasses.field(default_factory=list)
    failures: List[str] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)
    steps_per_epoch: int = 0
    expected_step: int = 0
    reference_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def phase_counts(self) -> Dict[str, int]:
        counts = collections.Counter(k.phase for k in self.kills)
        return {phase: counts[phase] for phase in PHASES}


class Timeline:
    """How long the parts of a start take, in seconds: as the reference run and the recent
    attempts took them (the median of the last few seen), since the machine's load changes
    (other jobs, CI neighbours) and the reference's start may have read TensorFlow from a cold
    disk cache. Up to the last epoch's line only: what follows (the finished marker, freeing the
    input pipeline, TensorFlow's exit: seconds on a busy machine) counted, more attempts would
    finish before their kill."""
    PARTS = (
        "start_up",     # to the "Training ... on" line
        "set_up",       # from there to the first epoch's progress bar
        "first_epoch",  # its steps, the first of which traces the step function
        "first_score",  # from its last step to its "Epoch N/E" line (traces the scoring)
        "later_epoch",  # each later epoch, from the previous "Epoch" line to its own
    )

    def __init__(self, recent: int = 5) -> None:
        self.recent = recent
        self.seen: Dict[str, List[float]] = {part: [] for part in self.PARTS}
        # (which start, seconds) of the parts kills cut short; only the recent starts' count.
        self.at_least: Dict[str, List[Tuple[int, float]]] = {part: [] for part in self.PARTS}
        self.starts = 0

    def observe(self, lines: List[Tuple[float, str]], killed_at: Optional[float] = None,
                scoring_only: bool = False) -> None:
        """Adds the parts a start's (timed) output shows whole. The part a kill cut short lasts
        at least as long as it ran: counted too, or a part that kills keep cutting short would
        keep the estimate of the one start that was quick, the kills would all land before its
        end, and the run would never get past it. A start with nothing left to train
        (`scoring_only`) shows its start-up only."""
        self.starts += 1
        part, since = "start_up", 0.0
        for t, line in lines:
            bar, end = _BAR.match(line), _EPOCH.match(line)
            if part == "start_up" and line.startswith("Training "):
                after = None if scoring_only else "set_up"
            elif part == "set_up" and bar:
                after = "first_epoch"
            elif part == "first_epoch" and bar and bar.group(1) == bar.group(2):
                after = "first_score"
            elif part in ("first_score", "later_epoch") and end:
                after = "later_epoch" if end.group(1) != end.group(2) else None
            else:
                continue
            self.seen[part].append(t - since)
            part, since = after, t
            if part is None:
                return
        if killed_at is not None:
            ran = killed_at - since
            # Past its estimate, it is likely to last a good deal longer: half again, so a few
            # such kills catch up with a machine that has slowed down.
            self.at_least[part].append(
                (self.starts, ran * 1.5 if ran > self.expected(part) else ran))

    def expected(self, part: str) -> float:
        return max(statistics.median(self.seen[part][-self.recent:] or [0.0]),
                   max((ran for start, ran in self.at_least[part]
                        if start > self.starts - self.recent), default=0.0))

    def training(self, epochs_left: int) -> float:
        """The expected time from the "Training" line to the last epoch's line of a start with
        `epochs_left` epochs (the first of them maybe partly done) to train: it traces the step
        and the scoring again in its first; with none, it only scores the model again."""
        if epochs_left <= 0:
            return self.expected("set_up") + self.expected("first_score")
        return (self.expected("set_up") + self.expected("first_epoch")
                + self.expected("first_score") + self.expected("later_epoch") * (epochs_left - 1))

    def __str__(self) -> str:
        return ", ".join(f"{part.replace('_', ' ')} {self.expected(part):.1f}s"
                         for part in self.PARTS)


def _latest_step(run_dir: str) -> int:
    """The latest checkpoint's step, from the index file's name for it (the number is the step)."""
    latest, _ = listed_checkpoints(os.path.join(run_dir, "checkpoints"))
    return int(latest.split("-")[-1]) if latest else 0


def run_crash_test(data_dir: str, work_dir: str, kills: int, seed: int = 0, epochs: int = 6,
                   checkpoint_every: int = 2, log: Callable[[str], None] = print,
                   model: str = "minigooglenet", width_multiplier: float = 0.125,
                   aim: str = "random") -> Report:
    """Trains work_dir/reference uninterrupted, then work_dir/crashed with SIGKILLs and resumes
    until `kills` kills were made, and checks it (module docstring). A crashed run that finishes
    by itself (a start that ends before its kill) is checked then, and the kills go on in a new
    one (crashed-2, ...): starts of a finished run only score it again. A larger `model` makes
    checkpoints that take long enough to write for kills to land in them; `aim="checkpoint"` kills
    each start as one of its next saves is under way instead of at a random moment."""
    started = time.monotonic()
    command = functools.partial(train_command, data_dir, epochs=epochs,
                                checkpoint_every=checkpoint_every, model=model,
                                width_multiplier=width_multiplier)
    report = Report()
    reference_dir = os.path.join(work_dir, "reference")
    logs = os.path.join(work_dir, "logs")
    for name in ("reference", "crashed"):
        if os.path.exists(os.path.join(work_dir, name)):
            raise ValueError(f"{os.path.join(work_dir, name)} exists: give a fresh work_dir")
    os.makedirs(logs, exist_ok=True)

    reference = Attempt(command(reference_dir), os.path.join(logs, "reference"))
    code = reference.wait(timeout=1800)
    lines = reference.close()
    report.reference_seconds = time.monotonic() - reference.started
    if code != 0:
        raise RuntimeError(f"the reference run failed ({code}):\n{reference.stderr_tail()}")
    spe = next((_STEPS_PER_EPOCH.search(line) for line in lines if line.startswith("Training ")))
    report.steps_per_epoch = int(spe.group(1))
    report.expected_step = epochs * report.steps_per_epoch
    timeline = Timeline()
    timeline.observe(reference.lines)
    log(f"reference run: {report.reference_seconds:.1f}s ({timeline}), "
        f"{report.steps_per_epoch} steps/epoch")

    crashed = _Crasher(report, command, work_dir, timeline, random.Random(seed), log, aim)
    while not report.failures and len(report.kills) < kills:
        run = CrashedRun("crashed" if not report.runs else f"crashed-{len(report.runs) + 1}")
        report.runs.append(run)
        finished = crashed.kill_until(run, kills)
        if not finished and not report.failures:
            crashed.finish(run)
        if not report.failures:
            _check_finished_run(report, run, reference_dir, os.path.join(work_dir, run.name),
                                epochs)
    report.seconds = time.monotonic() - started
    return report


class _Crasher:
    """Starts and kills the crashed runs' attempts, adding to `report`."""

    def __init__(self, report: Report, command: Callable[[str], List[str]], work_dir: str,
                 timeline: Timeline, rng: random.Random, log: Callable[[str], None],
                 aim: str) -> None:
        self.report, self.command, self.work_dir, self.aim = report, command, work_dir, aim
        self.epochs = report.expected_step // report.steps_per_epoch
        self.timeline, self.rng, self.log = timeline, rng, log
        self.logs = os.path.join(work_dir, "logs")
        self.attempts = 0

    def _command(self, run: CrashedRun) -> List[str]:
        return self.command(os.path.join(self.work_dir, run.name))

    def kill_until(self, run: CrashedRun, kills: int) -> bool:
        """Starts `run` and kills it until the report has `kills` kills (False), or until a
        start finishes it (True), or a start fails (a failure in the report)."""
        report, timeline = self.report, self.timeline
        run_dir = os.path.join(self.work_dir, run.name)
        total = report.expected_step
        while len(report.kills) < kills:
            self.attempts += 1
            if self.attempts > 3 * kills:
                report.failures.append(f"only {len(report.kills)} of {kills} kills in "
                                       f"{self.attempts - 1} starts")
                return False
            from_step = _latest_step(run_dir)
            # A moment of the attempt's expected length, and a quarter more: near the end of a
            # run, where each start redoes its fixed costs (start-up, tracing) for a few steps,
            # kills drawn within the estimate alone would nearly all land before the last
            # checkpoint, and the rest of the kills would pile up there. Past its start-up, the
            # moment is counted from the attempt's own "Training" line, so a slow start-up does
            # not eat into its training.
            start_up = timeline.expected("start_up")
            moment = self.rng.uniform(0.0, SLACK * (start_up + timeline.training(
                self.epochs - from_step // report.steps_per_epoch)))
            before = _entries(os.path.join(run_dir, "checkpoints"))
            attempt = Attempt(self._command(run),
                              os.path.join(self.logs, f"{run.name}-{self.attempts:03d}"))
            if self.aim == "checkpoint":
                reached = attempt.wait_for_training_line(timeout=1800)
                code = (attempt.process.poll() if reached is None
                        else self._wait_for_a_save(attempt, run_dir))
            elif moment <= start_up:
                code = attempt.wait(timeout=moment)
            else:
                reached = attempt.wait_for_training_line(timeout=1800)
                code = attempt.process.poll() if reached is None else attempt.wait(
                    timeout=max(0.0, reached + moment - start_up
                                - (time.monotonic() - attempt.started)))
                if reached is None and code is None:
                    report.failures.append(f"{run.name}: attempt {self.attempts} printed no "
                                           f"'Training' line in 30 minutes")
            if code is None:
                code = attempt.kill()
            lines = attempt.close()
            delay = attempt.killed_at if code is None else time.monotonic() - attempt.started
            timeline.observe(attempt.lines, killed_at=attempt.killed_at if code is None else None,
                             scoring_only=from_step >= total)
            where = f"{run.name}: attempt {self.attempts} from step {from_step}"
            if code is None:
                phase = classify(lines, run_dir, before, report.steps_per_epoch, self.epochs)
                report.kills.append(Kill(run.name, self.attempts, from_step, delay, phase))
                run.kills += 1
                self.log(f"{where}: killed at {delay:.1f}s ({phase})")
            else:
                self.log(f"{where}: ended by itself at {delay:.1f}s, before its kill")
                self._check_exit(where, code, lines, attempt)
                return code == 0
            if report.failures:
                return False
        return False

    def _wait_for_a_save(self, attempt: Attempt, run_dir: str) -> Optional[int]:
        """Polls checkpoints/ until one of the next three saves (drawn) is under way: None then,
        to kill it, or the exit code of a start that ended first. Polled only after the
        "Training" line, once the start has swept an earlier kill's partial files away."""
        directory = os.path.join(run_dir, "checkpoints")
        skip, writing = self.rng.randint(0, 2), False
        while True:
            code = attempt.process.poll()
            if code is not None:
                return code
            now = any("_temp" in name or name.startswith("checkpoint.tmp")
                      for name in _entries(directory))
            if now and not writing:
                if skip == 0:
                    return None
                skip -= 1
            writing = now
            time.sleep(0.001)

    def finish(self, run: CrashedRun) -> None:
        """The last start of `run`, which runs to the end."""
        final = Attempt(self._command(run), os.path.join(self.logs, f"{run.name}-final"))
        code = final.wait(timeout=1800)
        if code is None:
            code = final.kill()
            code = "nothing: it still ran after 30 minutes" if code is None else code
        self._check_exit(f"{run.name}: the last start", code, final.close(), final)

    def _check_exit(self, where: str, code: object, lines: List[str], attempt: Attempt) -> None:
        total = self.report.expected_step
        if code != 0:
            self.report.failures.append(f"{where} exited {code}:\n{attempt.stderr_tail()}")
        elif not any(line.startswith(f"Done at step {total}:") for line in lines):
            self.report.failures.append(f"{where} did not print 'Done at step {total}'")


def _check_finished_run(report: Report, run: CrashedRun, reference_dir: str, run_dir: str,
                        epochs: int) -> None:
    import tensorflow as tf
    failures = []
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    if latest is None:
        report.failures.append(f"{run.name} has no checkpoint")
        return
    run.final_step = checkpoint_step(latest)
    if run.final_step != report.expected_step:
        failures.append(f"final step {run.final_step}, expected {report.expected_step}")
    run.history_epochs = _history_epochs(run_dir)
    if run.history_epochs != list(range(1, epochs + 1)):
        failures.append(f"history.csv has the epochs {run.history_epochs}")
    # Every row as the uninterrupted run's: a resumed epoch's sums come from its checkpoint.
    for ours, theirs in zip(_history(run_dir), _history(reference_dir)):
        differ = [c for c in _REPEATED_COLUMNS if not _same_value(ours.get(c), theirs.get(c))]
        if differ:
            failures.append(f"history.csv epoch {ours['epoch']}: " + ", ".join(
                f"{c} {ours.get(c)} (reference {theirs.get(c)})" for c in differ))
    checkpoint_failures, notes = check_checkpoints(run_dir)
    failures += checkpoint_failures
    report.notes += [f"{run.name}: {note}" for note in notes]
    reference = tf.train.latest_checkpoint(os.path.join(reference_dir, "checkpoints"))
    run.tensors_compared, differ = compare_checkpoints(reference, latest)
    if differ:
        failures.append(f"{len(differ)} of {run.tensors_compared} checkpoint tensors differ "
                        f"from the reference run's: " + "; ".join(differ[:5]))
    report.failures += [f"{run.name}: {failure}" for failure in failures]


def format_report(report: Report) -> str:
    """A table of the kills by phase, then the checks' outcome."""
    width = max(len(p) for p in PHASES)
    rows = [f"{'phase':<{width}}  kills", f"{'-' * width}  -----"]
    rows += [f"{phase:<{width}}  {count:5d}" for phase, count in report.phase_counts.items()]
    rows += [f"{'total':<{width}}  {len(report.kills):5d}"]
    for run in report.runs:
        rows.append(f"{run.name}: {run.kills} kills; final step {run.final_step} (expected "
                    f"{report.expected_step}); history epochs {run.history_epochs}; "
                    f"{run.tensors_compared} tensors of its final checkpoint compared with the "
                    f"reference's")
    rows.append(f"reference run {report.reference_seconds:.0f}s, all {report.seconds:.0f}s")
    rows += [f"note: {note}" for note in report.notes]
    rows += [f"FAILURE: {failure}" for failure in report.failures] or ["no failures"]
    return "\n".join(rows)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs to make")
    parser.add_argument("--data_dir", required=True, help="a small class-per-folder image tree")
    parser.add_argument("--work_dir", required=True,
                        help="where the reference and crashed runs and their logs go")
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill delays")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--checkpoint_every", type=int, default=2,
                        help="steps between mid-epoch checkpoints")
    parser.add_argument("--model", default="minigooglenet",
                        help="googlenet's checkpoints take long enough to write for kills to "
                             "land in them")
    parser.add_argument("--width_multiplier", type=float, default=0.125)
    parser.add_argument("--aim", choices=AIMS, default="random",
                        help="random: a kill at a random moment; checkpoint: as a save is under "
                             "way")
    args = parser.parse_args(argv)
    for name in ("reference", "crashed"):
        if os.path.exists(os.path.join(args.work_dir, name)):
            parser.error(f"{os.path.join(args.work_dir, name)} exists: give a fresh --work_dir")
    report = run_crash_test(args.data_dir, args.work_dir, args.kills, seed=args.seed,
                            epochs=args.epochs, checkpoint_every=args.checkpoint_every,
                            model=args.model, width_multiplier=args.width_multiplier,
                            aim=args.aim)
    print(format_report(report))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
