"""Tests for host/runtime.py: glibc's malloc as training sets it, in fresh processes."""
import json
import os
import subprocess
import sys

import pytest

MODULE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "host",
                      "runtime.py")

# Allocates, touches and frees 100 MB in 1 MB blocks twice; prints the page faults of the second
# round, which reuses memory the first freed, and the variables configure_malloc applied.
REUSE = """
import ctypes, importlib.util, json, resource
# The module alone, by its path: nothing else of the project is imported (no TensorFlow, whose
# start-up makes allocations of its own).
spec = importlib.util.spec_from_file_location("runtime", {path!r})
memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory)
applied = memory.configure_malloc() if {configure} else []
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def round_trip():
    blocks = [libc.malloc(1 << 20) for _ in range(100)]
    for block in blocks:
        ctypes.memset(block, 1, 1 << 20)
    for block in blocks:
        libc.free(block)
round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
round_trip()
print(json.dumps(dict(faults=resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before,
                      applied=applied)))
"""


def reuse(configure, **env):
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", REUSE.format(path=MODULE, configure=configure)],
                         env={**environment, **env}, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_reused_without_page_faults():
    # 100 MB is 25,600 pages of 4 KB: glibc as it comes hands the blocks back to the kernel and
    # faults every page in again; configured, it keeps them.
    assert reuse(False)["faults"] > 20_000
    configured = reuse(True)
    assert configured["faults"] < 1_000
    assert configured["applied"] == ["MALLOC_ARENA_MAX", "MALLOC_TOP_PAD_",
                                     "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_what_the_user_set_is_left_alone():
    assert reuse(True, MALLOC_ARENA_MAX="4")["applied"] == [
        "MALLOC_TOP_PAD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"]
    tuned = reuse(True, GLIBC_TUNABLES="glibc.malloc.top_pad=0")
    assert tuned["applied"] == [] and tuned["faults"] > 20_000
