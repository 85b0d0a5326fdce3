"""train.py's hold on its run directory: one writer, no half-written files, damaged checkpoints
set aside, and a full disk named as such.

    with guard.writing(run_dir, is_chief=True, warn=print):
        ...  # resolve the config, build the Trainer, train

On entry (the chief only): the run directory's lock (rundir/lock.py; a damaged lock file is
written anew and said), then what an earlier crash left removed, a damaged checkpoint index rebuilt
and any damaged latest checkpoint set aside (rundir/recovery.py), before anything reads the
checkpoints. ENOSPC from any write inside becomes one `DiskFull` line, after the
partial files are removed. See docs/usage.md, "Crashes, full disks, damaged checkpoints".
"""
import contextlib
from typing import Callable, Iterator

from host import disk_space
from rundir import recovery
from rundir.lock import RunLock


@contextlib.contextmanager
def writing(run_dir: str, is_chief: bool, warn: Callable[[str], None]) -> Iterator[None]:
    lock = RunLock(run_dir) if is_chief else None
    try:
        if lock is not None:
            lock.acquire()
            if lock.damaged_record:
                warn(f"Note: the lock file {lock.path} held no readable record of its last holder "
                     f"({lock.damaged_record}); written anew (it records only which train.py "
                     f"holds the run).")
            recovery.remove_partial_files(run_dir)
            recovery.recover_latest(run_dir, warn)
        yield
    except Exception as error:
        if isinstance(error, disk_space.DiskFull) or not disk_space.is_disk_full(error):
            raise
        if lock is not None:
            recovery.remove_partial_files(run_dir)
        raise disk_space.DiskFull(disk_space.disk_full_message(
            disk_space.path_written(error, run_dir))) from None
    finally:
        if lock is not None:
            lock.release()
