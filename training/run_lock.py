"""One writer per run directory: train.py holds an exclusive lock on `<run_dir>/train.lock`.

The lock is the operating system's (`flock`), so it goes with the process that holds it, kill -9
included: there is never a stale lock to clear by hand. The file stays (removing a lock file that
another process may have open lets two processes each lock a different file); it records who
holds it, for the line that refuses a second train.py. evaluate.py and predict.py only read, and
take no lock. See docs/usage.md, "Crashes, full disks, damaged checkpoints".
"""
import datetime
import fcntl
import json
import os
import socket
import sys
from typing import Optional

LOCK_FILE = "train.lock"


class RunDirInUse(ValueError):
    """Another process holds the run directory's lock."""


def _holder_text() -> str:
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return json.dumps(dict(program=program, host=socket.gethostname(), pid=os.getpid(),
                           started=started)) + "\n"


def _describe_holder(text: str) -> str:
    try:
        holder = json.loads(text)
        return (f"{holder.get('program', 'train.py')} on host {holder['host']}, PID "
                f"{holder['pid']}, running since "
                f"{holder['started']}")
    except (ValueError, KeyError, TypeError):  # the holder is still writing its line
        return "another process"


class RunLock:
    """`with RunLock(run_dir):` the body runs as the run directory's only writer, or a
    `RunDirInUse` (a ValueError: one line, exit 1) is raised before anything is written."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_FILE)
        self._fd: Optional[int] = None

    def try_acquire(self) -> bool:
        """Takes the lock if no one holds it; False (and nothing changed) if someone does."""
        try:
            self.acquire()
        except RunDirInUse:
            return False
        return True

    def acquire(self) -> None:
        os.makedirs(self.run_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            os.close(fd)
            raise RunDirInUse(
                f"{self.run_dir!r} is in use by {_describe_holder(holder)}; nothing was changed. "
                f"Wait for it to finish or stop it (Ctrl+C saves a checkpoint), then run this "
                f"command again; evaluate.py and predict.py can read the run meanwhile") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_text().encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
