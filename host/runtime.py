"""Process-wide runtime settings: glibc's malloc, set for training by the entry points.

They give a compact in-memory image cache and no page faults on the memory every training step
frees and allocates again. They hold for the whole process, so they live here, beside the entry
points' start-up (host/entry.py), not in the data or training packages that benefit from them.
"""
import ctypes
import os
from typing import List

# glibc's mallopt parameter numbers (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8
# (parameter, value, the environment variable that leaves it to the user when set)
_SETTINGS = (
    (M_ARENA_MAX, 2, "MALLOC_ARENA_MAX"),
    (M_TOP_PAD, 256 << 20, "MALLOC_TOP_PAD_"),
    (M_TRIM_THRESHOLD, 2 ** 31 - 1, "MALLOC_TRIM_THRESHOLD_"),
    (M_MMAP_THRESHOLD, 32 << 20, "MALLOC_MMAP_THRESHOLD_"),
)
_applied = []  # the _SETTINGS entries configure_malloc applied, for reapply_malloc_settings


def configure_malloc() -> List[str]:
    """Sets glibc's malloc for training; call it before TensorFlow starts its threads.

    - At most 2 arenas. tf.data decodes on many threads; with glibc's default of 8 arenas per
      core, the freed decode buffers and the long-lived cached images interleave in every arena
      and the cache's resident memory grows to several times its decoded bytes; with 2 arenas it
      stays close to them (docs/benchmarks.md, "What each cache costs").
    - Freed memory is kept for reuse (a 256 MB top pad, no trimming, no mmap below 32 MB). Every
      training step frees its activations and allocates them again; by default glibc gives those
      pages back to the kernel and faults them in anew every step. Kept (with
      `reapply_malloc_settings` after TensorFlow's change), they are reused and the step runs
      faster (benchmarks/malloc.py; docs/benchmarks.md, "The malloc settings"). The cache's
      first pass still hands its freed buffers back (`release_free_memory`).
    A parameter whose environment variable is set, or all of them when GLIBC_TUNABLES sets
    malloc tunables, is left as the user set it. Returns the names of the variables applied.
    """
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return []
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return []
    _applied[:] = [(parameter, value, name) for parameter, value, name in _SETTINGS
                   if name not in os.environ and mallopt(parameter, value) == 1]
    return [name for _, _, name in _applied]


def reapply_malloc_settings() -> None:
    """Sets again what `configure_malloc` set (nothing, if it was not called).

    TensorFlow (2.21, on Python 3.11) fixes glibc's mmap threshold at 128 KB the first time a
    process builds a GeneratorDataset kernel (tf.data's "Python 3.11 memory patch"), and
    tf.distribute builds one for every distributed dataset's iterator. From then on every
    allocation of 128 KB or more that the kept free memory cannot serve is mapped, faulted in
    page by page and unmapped when freed, and more of them as the heap fragments, so training
    slows as it goes (docs/design.md, "The malloc settings"). Call this after making a
    distributed iterator (training/devices.distributed_iterator does).
    """
    if not _applied:
        return
    mallopt = ctypes.CDLL("libc.so.6").mallopt
    for parameter, value, _ in _applied:
        mallopt(parameter, value)


def release_free_memory() -> None:
    """Returns the heap's free pages to the system (glibc's malloc_trim), e.g. after the cache
    fill, whose decode buffers are freed but would otherwise stay in the process's memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
