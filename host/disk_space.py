"""A full disk, named as such: the one-line message, the free-space check that gives it early, and
the recognition of ENOSPC however it arrives (OSError from Python's own writes, a TensorFlow error
from a checkpoint or event-file write).

TensorFlow reports ENOSPC as RESOURCE_EXHAUSTED, the code it also uses for out of memory; only its
message tells the two apart. See docs/usage.md, "Crashes, full disks, damaged checkpoints".
"""
import errno
import os
import re
import shutil
from typing import Optional

from host import console


class DiskFull(ValueError):
    """No space left for a file the run must write (one line: the entry points print it)."""


_NO_SPACE = re.compile(r"no space left on device|disk quota exceeded|\benospc\b", re.IGNORECASE)
# A path in a TensorFlow error message: the longest run of non-space characters with a slash.
_PATH = re.compile(r"(/[^\s'\",;:]+)")


def is_disk_full(error: BaseException) -> bool:
    """True for ENOSPC / EDQUOT, as an OSError or inside a TensorFlow error's message."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return bool(_NO_SPACE.search(str(getattr(error, "message", "") or error)))


def path_written(error: BaseException, default: str) -> str:
    """The file the failed write was for, as far as the error says; else `default`."""
    if isinstance(error, OSError) and error.filename:
        return str(error.filename)
    paths = _PATH.findall(str(getattr(error, "message", "") or error))
    return max(paths, key=len) if paths else default


def _existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def mount_point(path: str) -> str:
    """The mount point of the file system that holds `path` (or its nearest existing parent)."""
    path = _existing(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def free_bytes(path: str) -> int:
    return shutil.disk_usage(_existing(path)).free


def disk_full_message(path: str, needed: Optional[int] = None) -> str:
    """`no space left on <file system> writing <path> (<needed> needed, <free> free). ...`"""
    sizes = f"{console.format_bytes(free_bytes(path))} free"
    if needed:
        sizes = f"{console.format_bytes(needed)} needed, {sizes}"
    return (f"no space left on {mount_point(path)} writing {path} ({sizes}). Free some space "
            f"there (or point --run_dir / --cache_dir at another disk), then run the same command: "
            f"it continues from the last complete checkpoint")


def check_free(path: str, needed: int) -> None:
    """Raises DiskFull before writing `needed` bytes at `path` when they do not fit."""
    if needed and free_bytes(path) < needed:
        raise DiskFull(disk_full_message(path, needed))
