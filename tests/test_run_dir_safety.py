"""The run directory against what machines do: the same command twice, a full disk, a damaged
checkpoint. Unit tests of the lock, the disk-full message and the recovery, then the three
reproductions from the command line (subprocesses, as a user runs them)."""
import csv
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from conftest import ENV, ROOT, run, train_args
from host import disk_space
from rundir.layout import LOCK_FILE
from rundir.lock import RunDirInUse, RunLock
from rundir.recovery import NoReadableCheckpoint, recover_latest, unreadable_reason


# -- the lock ---------------------------------------------------------------------------------
def test_a_second_lock_on_a_run_directory_is_refused_naming_the_holder(tmp_path):
    run_dir = str(tmp_path / "run")
    with RunLock(run_dir):
        with pytest.raises(RunDirInUse) as refused:
            RunLock(run_dir).acquire()
        message = str(refused.value)
        assert f"host {socket.gethostname()}, PID {os.getpid()}, running since 20" in message
        assert "\n" not in message
        assert not RunLock(run_dir).try_acquire()
    # Released: the next one takes it.
    assert RunLock(run_dir).try_acquire()


# -- disk full --------------------------------------------------------------------------------
def test_enospc_is_recognised_however_it_arrives_and_out_of_memory_is_not():
    assert disk_space.is_disk_full(OSError(errno.ENOSPC, "No space left on device", "/x/h.csv"))
    assert disk_space.path_written(OSError(errno.ENOSPC, "No space", "/x/h.csv"), "d") == "/x/h.csv"
    tf_error = tf.errors.ResourceExhaustedError(
        None, None, "/r/checkpoints/ckpt-5_temp/part-00000-of-00001.data-00000-of-00001.tempstate1;"
                    " No space left on device")
    assert disk_space.is_disk_full(tf_error)
    assert disk_space.path_written(tf_error, "d").startswith("/r/checkpoints/ckpt-5_temp/part-")
    oom = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape")
    assert not disk_space.is_disk_full(oom)
    assert not disk_space.is_disk_full(OSError(errno.EACCES, "Permission denied"))


def test_the_free_space_check_names_the_file_system_and_both_sizes(tmp_path):
    free = disk_space.free_bytes(str(tmp_path))
    with pytest.raises(disk_space.DiskFull) as full:
        disk_space.check_free(str(tmp_path / "new" / "file"), free + 10**12)
    message = str(full.value)
    assert message.startswith(f"no space left on {disk_space.mount_point(str(tmp_path))} "
                              f"writing {tmp_path / 'new' / 'file'} (")
    assert "needed, " in message and " free)" in message
    disk_space.check_free(str(tmp_path), 1)  # fits: nothing raised


# -- damaged checkpoints ----------------------------------------------------------------------
def _three_checkpoints(run_dir):
    """A run directory with checkpoints ckpt-1, ckpt-2, ckpt-3 of one variable."""
    variable = tf.Variable(tf.zeros([1000]))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable),
                                         os.path.join(run_dir, "checkpoints"), max_to_keep=3)
    for step in (1, 2, 3):
        variable.assign(tf.fill([1000], float(step)))
        manager.save(checkpoint_number=step)
    return [os.path.join(run_dir, "checkpoints", f"ckpt-{s}") for s in (1, 2, 3)]


def _truncate(prefix):
    data = prefix + ".data-00000-of-00001"
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)


def test_a_truncated_latest_checkpoint_is_set_aside_and_the_one_before_used(tmp_path):
    run_dir = str(tmp_path)
    paths = _three_checkpoints(run_dir)
    _truncate(paths[2])
    assert unreadable_reason(paths[2]) is not None and unreadable_reason(paths[1]) is None
    warnings = []
    assert recover_latest(run_dir, warnings.append) == os.path.abspath(paths[1])
    assert len(warnings) == 1 and "ckpt-3 cannot be read whole" in warnings[0]
    aside = tmp_path / "set_aside" / "damaged-ckpt-3"
    assert sorted(os.listdir(aside)) == ["ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    state = tf.train.get_checkpoint_state(os.path.join(run_dir, "checkpoints"))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-1", "ckpt-2"]
    assert tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")).endswith("ckpt-2")
    # Nothing left to do the second time.
    assert recover_latest(run_dir, warnings.append).endswith("ckpt-2") and len(warnings) == 1


def test_without_move_a_damaged_checkpoint_is_only_skipped(tmp_path):
    paths = _three_checkpoints(str(tmp_path))
    _truncate(paths[2])
    warnings = []
    assert recover_latest(str(tmp_path), warnings.append, move=False).endswith("ckpt-2")
    assert "skipped" in warnings[0] and os.path.exists(paths[2] + ".index")


def test_when_no_checkpoint_reads_all_are_set_aside_and_the_run_can_start_afresh(tmp_path):
    run_dir = str(tmp_path)
    for path in _three_checkpoints(run_dir):
        _truncate(path)
    (tmp_path / "history.csv").write_text("epoch\n1\n2\n3\n")
    with pytest.raises(NoReadableCheckpoint) as none:
        recover_latest(run_dir, lambda line: None)
    assert "The same command now starts the run afresh" in str(none.value)
    assert tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")) is None
    aside = tmp_path / "set_aside"
    assert sorted(os.listdir(aside)) == ["checkpoint-damaged", "damaged-ckpt-1", "damaged-ckpt-2",
                                         "damaged-ckpt-3", "history.csv"]


def test_a_reader_takes_no_lock_and_leaves_a_damaged_checkpoint_to_the_writer(tmp_path,
                                                                             monkeypatch):
    """evaluate.py and predict.py find the checkpoint to read (run_dir's reader) without the run's
    lock: a train.py starting at that moment takes it; the damaged checkpoint is skipped, not
    moved, since the writer owns the checkpoint index."""
    from evaluation import trained as run_dir_module
    run_dir = str(tmp_path)
    paths = _three_checkpoints(run_dir)
    _truncate(paths[2])
    writer_could_start = []

    def reading(*args, **kwargs):  # the moment the reader looks at the checkpoints
        lock = RunLock(run_dir)
        writer_could_start.append(lock.try_acquire())
        lock.release()
        return recover_latest(*args, **kwargs)
    monkeypatch.setattr(run_dir_module, "recover_latest", reading)
    assert run_dir_module._latest_readable(run_dir).endswith("ckpt-2")
    assert writer_could_start == [True]
    assert os.path.exists(paths[2] + ".index") and not os.path.exists(tmp_path / "set_aside")


# -- from the command line ---------------------------------------------------------------------
def _history_epochs(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _wait_for_lock(run_dir, process, timeout=240):
    path = os.path.join(run_dir, LOCK_FILE)
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if os.path.exists(path) and os.path.getsize(path) and os.path.exists(
                os.path.join(run_dir, "config.json")):
            return json.loads(open(path).read())
        time.sleep(0.2)
    raise AssertionError("train.py never took the lock")


def test_the_same_command_twice_is_refused_and_a_killed_holder_leaves_no_lock(data_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    args = train_args(data_dir, run_dir, "--model=minigooglenet", "--epochs=6")
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=ENV)
    holder = _wait_for_lock(run_dir, first)
    assert holder["pid"] == first.pid
    second = run(args)
    assert second.returncode == 1, second.stderr[-2000:]
    refusal = second.stderr.strip().splitlines()[-1]
    assert refusal.startswith(f"Error: {run_dir!r} is in use by train.py on host "
                              f"{socket.gethostname()}, PID {first.pid}, running since "
                              f"{holder['started']}")
    assert "Traceback" not in second.stderr and "Training" not in second.stdout
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    assert _history_epochs(run_dir) == [1, 2, 3, 4, 5, 6]

    # kill -9 of a holder: the OS drops its lock, and the next command goes ahead.
    more = train_args(data_dir, run_dir, "--model=minigooglenet", "--epochs=40")
    killed = subprocess.Popen(more, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    _wait_for_lock(run_dir, killed)
    while json.loads(open(os.path.join(run_dir, LOCK_FILE)).read())["pid"] != killed.pid:
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    after = run(train_args(data_dir, run_dir, "--model=minigooglenet", "--epochs=7"))
    assert after.returncode == 0, after.stderr[-3000:]
    assert _history_epochs(run_dir) == [1, 2, 3, 4, 5, 6, 7]


def test_a_truncated_latest_checkpoint_costs_one_checkpoint_in_train_and_evaluate(
        data_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    args = train_args(data_dir, run_dir, "--model=minigooglenet", "--epochs=2")
    assert run(args).returncode == 0
    checkpoints = os.path.join(run_dir, "checkpoints")
    _truncate(os.path.join(checkpoints, "ckpt-6"))  # 3 steps per epoch: epoch 2's checkpoint
    resumed = run(train_args(data_dir, run_dir, "--model=minigooglenet", "--epochs=3"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    assert f"Warning: checkpoint {os.path.abspath(checkpoints)}/ckpt-6 cannot be read whole" \
        in resumed.stdout
    assert "Resumed from" in resumed.stdout and "at step 3 (epoch 2)" in resumed.stdout
    assert "Done at step 9" in resumed.stdout
    assert _history_epochs(run_dir) == [1, 2, 3]
    assert os.listdir(os.path.join(run_dir, "set_aside", "damaged-ckpt-6"))

    _truncate(os.path.join(checkpoints, "ckpt-9"))
    scored = run([sys.executable, os.path.join(ROOT, "evaluate.py"),
                  f"--checkpoint_dir={run_dir}", "--batch_size=4"])
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "ckpt-9 cannot be read whole" in scored.stderr and "using ckpt-6" in scored.stderr
    assert f"Checkpoint {os.path.abspath(checkpoints)}/ckpt-6" in scored.stdout
    # The reader only skipped it: the writer, train.py, sets it aside.
    assert "skipped" in scored.stderr and os.path.exists(os.path.join(checkpoints, "ckpt-9.index"))


def _mounted_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")


@pytest.mark.parametrize("model, epochs_saved", [
    # its first checkpoint (~50 MB) fills the disk part-way through
    pytest.param("googlenet", 0, marks=pytest.mark.slow),
    ("minigooglenet", 1),   # the first (~13 MB) fits; the second is refused before it starts
])
def test_a_full_disk_is_named_leaves_no_partial_files_and_the_same_command_resumes(
        data_dir, tmp_path, model, epochs_saved):
    small = str(tmp_path / "small")
    _mounted_tmpfs(small, "20m")
    try:
        run_dir = os.path.join(small, "run")
        args = [a for a in train_args(data_dir, run_dir, f"--model={model}", "--epochs=2")
                if not a.startswith("--width_multiplier")]
        full = run(args)
        assert full.returncode == 1, full.stderr[-3000:]
        error = full.stderr.strip().splitlines()[-1]
        assert error.startswith(f"Error: no space left on {small} writing {run_dir}/checkpoints")
        assert "out of memory" not in full.stderr and "Traceback" not in full.stderr
        if epochs_saved:
            assert "needed, " in error  # the check before the save knows the size
        leftovers = [n for n in os.listdir(os.path.join(run_dir, "checkpoints"))
                     if "_temp" in n or ".tmp" in n]
        assert leftovers == []
        latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
        assert (latest is None) == (epochs_saved == 0)
        assert (_history_epochs(run_dir) if os.path.exists(os.path.join(run_dir, "history.csv"))
                else []) == list(range(1, epochs_saved + 1))

        subprocess.run(["mount", "-o", "remount,size=400m", small], check=True)  # space freed
        resumed = run(args)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert ("Resumed from" in resumed.stdout) == bool(epochs_saved)
        assert _history_epochs(run_dir) == [1, 2]
    finally:
        subprocess.run(["umount", "-l", small], capture_output=True)


def test_a_lock_that_made_its_directory_and_left_nothing_else_removes_both(tmp_path):
    # A command refused for a bad setting after taking the lock leaves no run directory.
    made = tmp_path / "new_run"
    with RunLock(str(made)):
        assert os.listdir(made) == [LOCK_FILE]
    assert not made.exists()
    # A directory that existed stays; a run's files keep the lock file beside them.
    existing = tmp_path / "existing"
    existing.mkdir()
    with RunLock(str(existing)):
        pass
    assert existing.exists() and os.listdir(existing) == []
    with RunLock(str(existing)):
        (existing / "config.json").write_text("{}")
    assert sorted(os.listdir(existing)) == ["config.json", LOCK_FILE]


def test_a_lock_taken_on_a_file_removed_meanwhile_moves_to_the_new_file(tmp_path):
    run_dir = str(tmp_path / "run")
    first = RunLock(run_dir)
    first.acquire()
    (tmp_path / "run" / "config.json").write_text("{}")
    stale = os.open(os.path.join(run_dir, LOCK_FILE), os.O_RDWR)  # opened before the removal
    os.remove(os.path.join(run_dir, LOCK_FILE))
    first.release()
    import fcntl
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old inode: free, but not the path's
    second = RunLock(run_dir)
    second.acquire()  # the path's new file, not the stale inode
    assert os.path.exists(os.path.join(run_dir, LOCK_FILE))
    with pytest.raises(RunDirInUse):
        RunLock(run_dir).acquire()
    second.release()
    os.close(stale)
