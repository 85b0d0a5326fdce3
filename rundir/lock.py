"""One writer per run directory: train.py holds an exclusive lock on `<run_dir>/train.lock`.

The lock is the operating system's (`flock`), so it goes with the process that holds it, kill -9
included: there is never a stale lock to clear by hand. The file records who holds it, for the
line that refuses a second train.py. A command that leaves nothing else in the directory (one
refused for a bad setting) removes the file, and the directory if it made it, so nothing is left
behind; a process that locked a file removed meanwhile sees that its inode is no longer the
path's and locks the new file instead. A record that does not read (a damaged file) is said in
`damaged_record` and written anew: it holds nothing else. evaluate.py and predict.py only read, and
take no lock.
See docs/usage.md, "Crashes, full disks, damaged checkpoints".
"""
import datetime
import fcntl
import json
import os
import socket
import sys
from typing import Optional

from rundir.layout import LOCK_FILE


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


def _record_damage(data: bytes) -> Optional[str]:
    """Why a lock file's previous record (`data`) is not one `_holder_text` wrote, or None. An
    empty file is no damage: a holder stopped between creating it and writing its line."""
    if not data:
        return None
    try:
        holder = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        return f"byte {error.start} is not UTF-8 text"
    except ValueError:
        return "not the JSON line train.py writes"
    if not isinstance(holder, dict) or not {"host", "pid", "started"} <= set(holder):
        return "it does not name a host, PID and start time"
    return None


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


class RunLock:
    """`with RunLock(run_dir):` the body runs as the run directory's only writer, or a
    `RunDirInUse` (a ValueError: one line, exit 1) is raised before anything is written."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_FILE)
        self._fd: Optional[int] = None
        self._made_dir = False
        # Why the last holder's record did not read, when it did not (set by acquire).
        self.damaged_record: Optional[str] = None

    def try_acquire(self) -> bool:
        """Takes the lock if no one holds it; False (and nothing changed) if someone does."""
        try:
            self.acquire()
        except RunDirInUse:
            return False
        return True

    def acquire(self) -> None:
        self._made_dir = not os.path.isdir(self.run_dir)
        os.makedirs(self.run_dir, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
                os.close(fd)
                raise RunDirInUse(
                    f"{self.run_dir!r} is in use by {_describe_holder(holder)}; nothing was "
                    f"changed. Wait for it to finish or stop it (Ctrl+C saves a checkpoint), then "
                    f"run this command again; evaluate.py and predict.py can read the run "
                    f"meanwhile") from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder removed it as it let go: lock the path's file instead
        self.damaged_record = _record_damage(os.pread(fd, 4096, 0))
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_text().encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Lets go; removes the lock file (and the directory, if this lock made it) when
        nothing else is in the directory."""
        if self._fd is None:
            return
        try:
            if os.listdir(self.run_dir) == [LOCK_FILE]:
                os.remove(self.path)  # while still locked: no one can have locked it meanwhile
                if self._made_dir:
                    os.rmdir(self.run_dir)
        except OSError:
            pass  # something appeared meanwhile, or the directory is not ours to remove
        os.close(self._fd)  # closing the last descriptor releases the flock
        self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
