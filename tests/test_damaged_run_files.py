"""Damaged run-directory files (issue 49, part 4): each of config.json, the saved split
(dataset.json, split.csv), class_names.txt, history.csv, the lock file and the checkpoint index,
cut short or overwritten with garbage, one at a time, in a run a real train.py made; then the same
command again, as a user runs it.

What cannot be rebuilt from the rest of the run (the settings, the split, the class names) gets
one line naming the file and what to do, with no traceback, and the run directory is left byte for
byte as it was. What can (history.csv from the TensorBoard logs, the lock, the checkpoint index
from the checkpoints' files) is rebuilt, the damaged file kept in set_aside/, and said in one
line. The expected values come from the run before the damage (its own history.csv and index),
not from the code under test."""
import csv
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

from conftest import ENV, ROOT, run, train_args
from rundir.history_repair import history_damage

# Bytes no writer of this program produces: NUL, a control character, a lone JSON brace, bytes
# that are not UTF-8 (the first at offset 8), a line of commas.
GARBAGE = b'\x00\x07{"garb\xff\xfe age\n\x01,,\x02\n'
NOT_UTF8_AT = GARBAGE.index(b"\xff")
ADVICE_SPLIT = ("the run's saved train/test split cannot be read. Nothing was changed; restore the "
                "file from a copy, or train a new run with another --run_dir")
ADVICE_CONFIG = ("it holds the run's settings, which nothing else in the run records. Nothing was "
                 "changed; restore it from a copy, or train a new run with another --run_dir")


def _truncated(data: bytes) -> bytes:
    """The first half, cut part-way through a line (as a crash mid-write leaves it)."""
    keep = len(data) // 2
    while keep > 1 and data[keep - 1:keep] == b"\n":
        keep -= 1
    return data[:keep]


def _lines_lost(data: bytes) -> bytes:
    """The whole lines of the first half: the file ends cleanly but rows are missing."""
    lines = data.splitlines(keepends=True)
    return b"".join(lines[:max(1, len(lines) // 2)])


DAMAGE = {"truncated": _truncated, "garbage": lambda data: GARBAGE, "lines_lost": _lines_lost,
          "emptied": lambda data: b""}


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A run directory from a real train.py: one epoch, 3 steps, checkpoint ckpt-3."""
    run_dir = str(tmp_path_factory.mktemp("damaged") / "trained")
    made = run(train_args(data_dir, run_dir, "--model=minigooglenet", "--epochs=1"))
    assert made.returncode == 0, made.stderr[-3000:]
    return run_dir


def _copy(trained, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(trained, run_dir)
    return run_dir


def _damage(run_dir, name, how):
    """Damages `name` in `run_dir`; returns (its original bytes, the damaged ones)."""
    path = os.path.join(run_dir, name)
    with open(path, "rb") as f:
        original = f.read()
    damaged = DAMAGE[how](original)
    assert damaged != original
    with open(path, "wb") as f:
        f.write(damaged)
    return original, damaged


def _files(run_dir):
    """{relative path: bytes} of every file in `run_dir` but the lock (which every train.py
    rewrites with its own PID)."""
    found = {}
    for folder, _, names in os.walk(run_dir):
        for name in names:
            path = os.path.join(folder, name)
            if name != "train.lock":
                with open(path, "rb") as f:
                    found[os.path.relpath(path, run_dir)] = f.read()
    return found


def _again(data_dir, run_dir):
    """The command that made the run, again (its epoch is done: it restores and scores)."""
    process = subprocess.Popen(
        train_args(data_dir, run_dir, "--model=minigooglenet", "--epochs=1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    stdout, stderr = process.communicate(timeout=300)
    assert "Traceback" not in stderr, stderr[-3000:]
    return process, stdout, stderr


# -- what cannot be rebuilt: one line, nothing changed -----------------------------------------
def _reason_not_json(data):
    """json's own account of where `data` stops being JSON, as the line gives it."""
    try:
        json.loads(data.decode("utf-8", "surrogateescape"))
    except json.JSONDecodeError as error:
        return f"not JSON: {error.msg} at line {error.lineno} column {error.colno}"
    raise AssertionError("still JSON")


REFUSED = [
    # (file, damage, expected reason, advice): one of each file in the fast suite
    ("config.json", "garbage", f"byte {NOT_UTF8_AT} is not UTF-8 text", ADVICE_CONFIG),
    ("config.json", "truncated", _reason_not_json, ADVICE_CONFIG),
    ("config.json", "emptied", "it is empty", ADVICE_CONFIG),
    ("data/dataset.json", "truncated", _reason_not_json, ADVICE_SPLIT),
    ("data/dataset.json", "garbage", _reason_not_json, ADVICE_SPLIT),
    ("data/split.csv", "truncated", "its last line is cut off", ADVICE_SPLIT),
    ("data/split.csv", "garbage", "its first line is not the header subset,label,path",
     ADVICE_SPLIT),
    # 12 train then 6 test rows: half of the 19 lines keeps the header and 8 train rows.
    ("data/split.csv", "lines_lost", "it lists 8 train images; dataset.json says 12", ADVICE_SPLIT),
    # daisy, roses, tulips: the first line alone is left.
    ("data/class_names.txt", "lines_lost",
     "it lists 1 class name(s); split.csv has 3 classes", ADVICE_SPLIT),
    ("data/class_names.txt", "truncated", "its last line is cut off", ADVICE_SPLIT),
    ("data/class_names.txt", "garbage", "line 1 is not a class name, or one listed before",
     ADVICE_SPLIT),
]


# One file of each kind in the fast suite: the run's settings and its saved split.
FAST = {("config.json", "garbage"), ("data/split.csv", "truncated")}


def _cases(cases, fast):
    """pytest params named file-damage; those not in `fast` marked slow."""
    return [pytest.param(*case, id=f"{case[0]}-{case[1]}",
                         marks=() if case[:2] in fast else pytest.mark.slow) for case in cases]


@pytest.mark.parametrize("name, how, reason, advice", _cases(REFUSED, FAST))
def test_a_damaged_file_that_cannot_be_rebuilt_gets_one_line_and_nothing_changes(
        data_dir, trained, tmp_path, name, how, reason, advice):
    run_dir = _copy(trained, tmp_path)
    _, damaged = _damage(run_dir, name, how)
    before = _files(run_dir)
    process, stdout, stderr = _again(data_dir, run_dir)
    assert process.returncode == 1, stderr[-3000:]
    if callable(reason):
        reason = reason(damaged)
    assert stderr.strip().splitlines()[-1] == (
        f"Error: {os.path.join(run_dir, name)} is damaged ({reason}): {advice}")
    assert "Resumed" not in stdout and "Training" not in stdout
    assert _files(run_dir) == before


def test_the_trained_split_is_as_the_expected_lines_count_it(trained):
    """REFUSED's counts hold for the run train.py made: 12 train rows, then 6 test rows."""
    with open(os.path.join(trained, "data", "split.csv"), newline="") as f:
        subsets = [row["subset"] for row in csv.DictReader(f)]
    assert subsets == ["train"] * 12 + ["test"] * 6


# -- what can be rebuilt: rebuilt, the damaged file kept ---------------------------------------
def _history(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# The columns TensorBoard's logs hold per epoch; the rest are left empty when rebuilt.
FROM_LOGS = ("train_cross_entropy", "train_top1", "heldout_loss", "heldout_top1", "heldout_top5",
             "lr")
NOT_IN_LOGS = ("train_loss", "images_per_second", "epoch_seconds")


@pytest.mark.parametrize("how, reason", [
    pytest.param("truncated", "its last line is cut off", id="truncated"),
    pytest.param("garbage", f"byte {NOT_UTF8_AT} is not UTF-8 text", id="garbage",
                 marks=pytest.mark.slow),
    pytest.param("lines_lost", "it has no row for epoch 1, which the checkpoint has trained",
                 id="lines_lost", marks=pytest.mark.slow),
])
def test_a_damaged_history_is_set_aside_and_rebuilt_from_the_logs(data_dir, trained, tmp_path,
                                                                  how, reason):
    run_dir = _copy(trained, tmp_path)
    original, damaged = _damage(run_dir, "history.csv", how)
    process, stdout, stderr = _again(data_dir, run_dir)
    assert process.returncode == 0, stderr[-3000:]
    path = os.path.join(run_dir, "history.csv")
    aside = os.path.join(run_dir, "set_aside", "damaged-history.csv")
    assert (f"Warning: {path} is damaged ({reason}); moved to {aside} and rebuilt from the "
            f"TensorBoard logs in train/ and eval/ (1 of 1 epochs; train_loss, images_per_second "
            f"and epoch_seconds, which the logs do not hold per epoch, left empty).\n") in stdout
    assert open(aside, "rb").read() == damaged
    [was] = _history(os.path.join(trained, "history.csv"))
    [now] = _history(path)
    assert (now["epoch"], now["step"]) == (was["epoch"], was["step"]) == ("1", "3")
    for column in FROM_LOGS:
        assert float(now[column]) == pytest.approx(float(was[column]), rel=1e-5), column
    assert all(now[column] == "" for column in NOT_IN_LOGS)
    assert abs(_seconds(now["wall_time"]) - _seconds(was["wall_time"])) <= 2
    assert history_damage(path, epochs_done=1) is None  # the next start finds nothing to do


def _seconds(iso):
    import datetime
    return datetime.datetime.fromisoformat(iso).timestamp()


@pytest.mark.parametrize("how, reason", [
    pytest.param("garbage", f"byte {NOT_UTF8_AT} is not UTF-8 text", id="garbage"),
    pytest.param("truncated", "not the JSON line train.py writes", id="truncated",
                 marks=pytest.mark.slow),
])
def test_a_damaged_lock_file_is_written_anew(data_dir, trained, tmp_path, how, reason):
    run_dir = _copy(trained, tmp_path)
    _damage(run_dir, "train.lock", how)
    before = _files(run_dir)
    process, stdout, stderr = _again(data_dir, run_dir)
    assert process.returncode == 0, stderr[-3000:]
    path = os.path.join(run_dir, "train.lock")
    assert (f"Note: the lock file {path} held no readable record of its last holder ({reason}); "
            f"written anew (it records only which train.py holds the run).\n") in stdout
    holder = json.loads(open(path).read())
    assert (holder["program"], holder["host"], holder["pid"]) == (
        "train.py", socket.gethostname(), process.pid)
    assert "Resumed from" in stdout
    # The split and the checkpoints are as they were.
    after = _files(run_dir)
    kept = [name for name in before if name.startswith(("data/", "checkpoints/"))]
    assert [after[name] for name in kept] == [before[name] for name in kept]


@pytest.mark.parametrize("how, reason", [
    pytest.param("truncated", None, id="truncated"),  # protobuf's error, after "not an index: "
    pytest.param("garbage", f"byte {NOT_UTF8_AT} is not UTF-8 text", id="garbage",
                 marks=pytest.mark.slow),
    pytest.param("emptied", "it names no latest checkpoint", id="emptied",
                 marks=pytest.mark.slow),
])
def test_a_damaged_checkpoint_index_is_rebuilt_from_the_checkpoints(data_dir, trained, tmp_path,
                                                                    how, reason):
    run_dir = _copy(trained, tmp_path)
    _, damaged = _damage(run_dir, "checkpoints/checkpoint", how)
    process, stdout, stderr = _again(data_dir, run_dir)
    assert process.returncode == 0, stderr[-3000:]
    index = os.path.join(run_dir, "checkpoints", "checkpoint")
    aside = os.path.join(run_dir, "set_aside", "damaged-checkpoint")
    [line] = [line for line in stdout.splitlines() if "checkpoint index" in line]
    assert line.startswith(f"Warning: the checkpoint index {index} is damaged (")
    if reason is None:
        assert "(not an index: " in line
    else:
        assert f"({reason})" in line
    assert line.endswith(f"); moved to {aside}; rebuilt from the 1 checkpoint(s) in "
                         f"{os.path.join(run_dir, 'checkpoints')} (latest ckpt-3).")
    assert open(aside, "rb").read() == damaged
    # Resumed from the epoch's checkpoint, not started afresh.
    assert f"Resumed from {os.path.join(run_dir, 'checkpoints', 'ckpt-3')} at step 3" in stdout
    was = tf.train.get_checkpoint_state(os.path.join(trained, "checkpoints"))
    now = tf.train.get_checkpoint_state(os.path.join(run_dir, "checkpoints"))
    assert [os.path.basename(p) for p in now.all_model_checkpoint_paths] == [
        os.path.basename(p) for p in was.all_model_checkpoint_paths] == ["ckpt-3"]
    assert os.path.basename(now.model_checkpoint_path) == "ckpt-3"


def test_evaluate_names_a_damaged_index_and_leaves_it_to_train(trained, tmp_path):
    """evaluate.py takes no lock, so it does not rewrite the index: one line, nothing moved."""
    run_dir = _copy(trained, tmp_path)
    _damage(run_dir, "checkpoints/checkpoint", "garbage")
    before = _files(run_dir)
    scored = run([sys.executable, os.path.join(ROOT, "evaluate.py"), f"--checkpoint_dir={run_dir}",
                  "--batch_size=4"])
    assert scored.returncode == 1, scored.stderr[-3000:]
    assert "Traceback" not in scored.stderr
    index = os.path.join(run_dir, "checkpoints", "checkpoint")
    assert scored.stderr.strip().splitlines()[-1] == (
        f"Error: the checkpoint index {index} is damaged (byte {NOT_UTF8_AT} is not UTF-8 text). "
        f"Nothing was changed; train.py rebuilds it from the checkpoints' files: run the run's "
        f"training command again (a finished run only scores itself), then this one")
    assert _files(run_dir) == before


# -- the index rebuilt, in-process -------------------------------------------------------------
def test_a_rebuilt_index_lists_every_checkpoint_and_keep_n_still_deletes_the_oldest(tmp_path):
    """Three checkpoints: the rebuilt index lists them oldest first, and the manager of a resumed
    run (max_to_keep=3) deletes ckpt-1 on its next save, as it would have."""
    from rundir.recovery import rebuild_damaged_index
    directory = str(tmp_path / "checkpoints")
    variable = tf.Variable(0.0)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), directory,
                                         max_to_keep=3)
    for step in (1, 2, 3):
        manager.save(checkpoint_number=step)
    with open(os.path.join(directory, "checkpoint"), "wb") as f:
        f.write(GARBAGE)
    warnings = []
    rebuild_damaged_index(str(tmp_path), warnings.append)
    assert warnings == [
        f"Warning: the checkpoint index {directory}/checkpoint is damaged (byte {NOT_UTF8_AT} is "
        f"not UTF-8 text); moved to {tmp_path}/set_aside/damaged-checkpoint; rebuilt from the 3 "
        f"checkpoint(s) in {directory} (latest ckpt-3)."]
    state = tf.train.get_checkpoint_state(directory)
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
        "ckpt-1", "ckpt-2", "ckpt-3"]
    resumed = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), directory,
                                         max_to_keep=3)
    resumed.save(checkpoint_number=4)
    assert sorted(n for n in os.listdir(directory) if n.endswith(".index")) == [
        "ckpt-2.index", "ckpt-3.index", "ckpt-4.index"]


def test_an_index_left_with_no_checkpoint_files_keeps_a_copy_of_the_history(tmp_path):
    from rundir.recovery import rebuild_damaged_index
    os.makedirs(tmp_path / "checkpoints")
    (tmp_path / "checkpoints" / "checkpoint").write_bytes(b"")
    (tmp_path / "history.csv").write_text("epoch,step\n1,3\n")
    warnings = []
    rebuild_damaged_index(str(tmp_path), warnings.append)
    assert warnings[0].endswith(
        f"(it names no latest checkpoint); moved to {tmp_path}/set_aside/damaged-checkpoint; no "
        f"checkpoint files are left in {tmp_path}/checkpoints, so the run starts afresh, its "
        f"history.csv copied beside the index.")
    assert (tmp_path / "set_aside" / "history.csv").read_text() == "epoch,step\n1,3\n"
    assert not (tmp_path / "checkpoints" / "checkpoint").exists()
