"""Tests for training/devices.py: tower names, batch splitting, the automatic precision and the
distributed iterator."""
import json
import os
import subprocess
import sys
import threading

import pytest

from input_pipeline.preprocessing import Augmentation
from training import devices

CPU = ["/job:localhost/replica:0/task:0/device:CPU:0"]
GPUS = [f"/job:localhost/replica:0/task:0/device:GPU:{i}" for i in range(2)]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 {flags}\n\n"
                    f"processor\t: 1\nflags\t\t: fpu sse2 {flags}\n")
    return str(path)


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path):
    # AMX (Intel Sapphire Rapids), AVX512_BF16 alone (AMD Zen 4): native bfloat16.
    assert devices.cpu_has_native_bfloat16(cpuinfo(tmp_path, "avx512f amx_tile amx_bf16"))
    assert devices.cpu_has_native_bfloat16(cpuinfo(tmp_path, "avx512f avx512_bf16 avx512_vnni"))
    # AVX-512 without bfloat16 (Skylake-SP), AVX2 only, or a flag that merely contains the name.
    assert not devices.cpu_has_native_bfloat16(cpuinfo(tmp_path, "avx512f avx512bw avx512_vnni"))
    assert not devices.cpu_has_native_bfloat16(cpuinfo(tmp_path, "avx2 fma"))
    assert not devices.cpu_has_native_bfloat16(cpuinfo(tmp_path, "avx2 xavx512_bf16x"))
    assert not devices.cpu_has_native_bfloat16(str(tmp_path / "missing"))


@pytest.mark.parametrize("asked,dtype,native,towers,policy", [
    (None, "auto", True, CPU, "mixed_bfloat16"),     # automatic: on where measured faster
    (None, "auto", False, CPU, "float32"),
    (None, "auto", True, GPUS, "float32"),           # GPUs: only when asked
    (True, "auto", False, CPU, "mixed_bfloat16"),
    (True, "auto", False, GPUS, "mixed_float16"),
    (False, "auto", True, CPU, "float32"),
    # Naming a dtype asks for mixed precision, on any device, unless it is turned off.
    (None, "float16", False, CPU, "mixed_float16"),
    (None, "bfloat16", False, GPUS, "mixed_bfloat16"),
    (False, "float16", True, GPUS, "float32"),
])
def test_precision_policy(monkeypatch, asked, dtype, native, towers, policy):
    monkeypatch.setattr(devices, "cpu_has_native_bfloat16", lambda: native)
    assert devices.precision_policy(asked, towers, dtype) == policy


def test_tower_names_and_batch_split():
    assert [devices.tower_name(d) for d in GPUS] == ["gpu_0", "gpu_1"]
    assert devices.check_batch_size(32, 2) == 16
    with pytest.raises(ValueError, match="32"):
        devices.check_batch_size(32, 3)


def test_the_start_line_names_each_gpu(monkeypatch):
    # On this machine TensorFlow reports no GPU: nothing to name, and no error.
    assert devices.gpu_details(0) == (None, None)
    details = {0: ("NVIDIA A100-SXM4-40GB", 39_495_729_152), 1: ("NVIDIA L4", None),
               2: (None, None)}
    monkeypatch.setattr(devices, "gpu_details", details.__getitem__)
    names = [devices.describe_tower(f"/job:localhost/replica:0/task:0/device:GPU:{i}")
             for i in range(3)]
    assert names == ["gpu_0 (NVIDIA A100-SXM4-40GB, 36.8 GiB)", "gpu_1 (NVIDIA L4)", "gpu_2"]
    assert devices.describe_tower("/job:localhost/replica:0/task:0/device:CPU:0") == "cpu_0"


@pytest.mark.parametrize("choice,towers,resizes,where", [
    ("auto", GPUS, True, "device"), ("auto", GPUS, False, "device"),
    ("auto", CPU, True, "host"), ("auto", CPU, False, "device"),
    ("host", GPUS, True, "host"), ("host", CPU, False, "host"), ("device", CPU, True, "device")])
def test_where_batches_are_augmented(choice, towers, resizes, where):
    assert devices.augment_on(choice, towers, resizes) == where


def test_only_the_pad_crop_is_shift_only():
    assert Augmentation(crop="pad", pad=4).resizes is False
    assert Augmentation().resizes is True


# In a fresh process (TensorFlow changes glibc's malloc once per process, and glibc keeps what it
# has grown): how many of 600 new 1 MB blocks glibc mmaps once a distributed iterator is made,
# by plain iter() or by devices.distributed_iterator. With the entry points' settings (a 256 MB
# top pad, no mmap below 32 MB) none are; at a 128 KB threshold all beyond the heap's free memory.
ITERATOR = """
import ctypes, json, sys
sys.path.insert(0, {root!r})
from host.runtime import configure_malloc
configure_malloc()
import tensorflow as tf
from training import devices

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost").split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]

strategy = devices.make_strategy(devices.configure_towers())
dataset_fn = lambda ctx: tf.data.Dataset.range(8).batch(2)
if {ours}:
    next(devices.distributed_iterator(strategy, dataset_fn))
else:
    next(iter(strategy.distribute_datasets_from_function(dataset_fn)))
before = libc.mallinfo2().hblks
blocks = [libc.malloc(1 << 20) for _ in range(600)]
print(json.dumps(libc.mallinfo2().hblks - before))
"""


def mmapped_blocks(ours):
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", ITERATOR.format(root=ROOT, ours=ours)],
                         env=environment, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_distributed_iterator_keeps_the_entry_points_malloc_settings():
    assert mmapped_blocks(ours=True) == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_what_distributed_iterator_mends():
    # TensorFlow 2.21 on Python 3.11 sets the mmap threshold to 128 KB as the first distributed
    # iterator is made, over the entry points' 32 MB (other versions are not checked here).
    import tensorflow as tf
    if not (tf.__version__.startswith("2.21.") and sys.version_info[:2] == (3, 11)):
        pytest.skip(f"measured with TensorFlow 2.21 on Python 3.11, not {tf.__version__}")
    assert mmapped_blocks(ours=False) > 300


class Recorded:
    """An iterator over `items` that records the thread it is destroyed in."""
    destroyed_in: list = []

    def __init__(self, items):
        self.items = iter(items)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.items)

    def __del__(self):
        Recorded.destroyed_in.append(threading.current_thread().name)


def join_release_threads():
    for thread in threading.enumerate():
        if thread.name == "tf.data iterator release":
            thread.join(timeout=10)


def test_an_exhausted_iterator_is_destroyed_off_the_calling_thread():
    Recorded.destroyed_in = []
    wrapped = devices.ReleasedInBackground(Recorded([1, 2, 3]))
    assert list(wrapped) == [1, 2, 3]
    join_release_threads()
    assert Recorded.destroyed_in == ["tf.data iterator release"]
    with pytest.raises(StopIteration):
        next(wrapped)  # still exhausted, nothing left to release
    assert Recorded.destroyed_in == ["tf.data iterator release"]


def test_an_unexhausted_iterator_is_destroyed_off_the_calling_thread_when_dropped():
    Recorded.destroyed_in = []
    wrapped = devices.ReleasedInBackground(Recorded([1, 2, 3]))
    assert next(wrapped) == 1
    del wrapped
    join_release_threads()
    assert Recorded.destroyed_in == ["tf.data iterator release"]


def test_distributed_iterator_gives_every_batch_once():
    import tensorflow as tf
    strategy = devices.make_strategy(devices.configure_towers())
    batches = devices.distributed_iterator(
        strategy, lambda ctx: tf.data.Dataset.range(7).batch(3))
    assert [b.numpy().tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    join_release_threads()


AT_EXIT = """
import sys
sys.path.insert(0, {root!r})
from training.devices import ReleasedInBackground
cycle = [ReleasedInBackground(iter([1, 2, 3]))]
cycle.append(cycle)
next(cycle[0])
del cycle  # garbage in a cycle: left for the interpreter's last garbage collection
print("done")
"""


def test_a_process_ends_with_an_iterator_left_for_its_last_garbage_collection():
    # A thread started in that collection never runs; waiting for it hung train.py on Ctrl-C.
    out = subprocess.run([sys.executable, "-c", AT_EXIT.format(root=ROOT)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "done"
