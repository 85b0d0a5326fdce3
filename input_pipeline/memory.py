"""Process memory settings that keep the in-memory image cache compact."""
import ctypes
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter number


def limit_malloc_arenas(arenas=2):
    """Caps glibc's per-thread malloc arenas, unless MALLOC_ARENA_MAX is set already.

    tf.data decodes on many threads; with glibc's default of 8 arenas per core, the freed decode
    buffers and the long-lived cached images interleave in every arena and the cache's resident
    memory grows to several times its decoded bytes; with 2 arenas it stays close to them (the
    README's "What each cache costs"; benchmarks/pipeline.py measures it). Call it before
    TensorFlow starts its threads.
    Returns True when the limit was applied.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return False


def release_free_memory():
    """Returns the heap's free pages to the system (glibc's malloc_trim), e.g. after the cache
    fill, whose decode buffers are freed but would otherwise stay in the process's memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
