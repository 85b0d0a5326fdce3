"""Towers: which devices train, and the tf.distribute strategy that runs one tower per device."""
import functools
import sys
import threading
from typing import Any, Iterator, List

import tensorflow as tf

from host.runtime import reapply_malloc_settings


def configure_towers(num_gpus=None, towers_on_cpu=False):
    """Device names for the towers.

    Default: every visible GPU, or one CPU tower without GPUs. `towers_on_cpu` splits the CPU into
    `num_gpus` logical devices so the multi-tower path runs on a machine without GPUs; that has to
    happen before TensorFlow first lists its devices, i.e. before any other TF work.
    """
    if num_gpus is not None and num_gpus < 1:
        raise ValueError(f"--num_gpus must be >= 1, got {num_gpus}")
    if towers_on_cpu:
        count = num_gpus or 1
        cpu = tf.config.list_physical_devices("CPU")[0]
        existing = tf.config.get_logical_device_configuration(cpu)
        try:
            if not existing or len(existing) < count:
                tf.config.set_logical_device_configuration(
                    cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
        except RuntimeError:
            pass  # TF already initialised: use what exists (checked below)
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        if len(cpus) < count:
            raise ValueError(f"--towers_on_cpu needs {count} logical CPUs but TensorFlow was "
                             f"already initialised with {len(cpus)}")
        return cpus[:count]
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if num_gpus is None:
        return gpus or [tf.config.list_logical_devices("CPU")[0].name]
    if num_gpus > len(gpus):
        visible = ", ".join(gpus) if gpus else "none"
        raise ValueError(f"--num_gpus={num_gpus} but {len(gpus)} GPUs are visible ({visible}); "
                         f"use --towers_on_cpu to run {num_gpus} towers on the CPU")
    return gpus[:num_gpus]


NATIVE_BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_has_native_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True on x86 CPUs with bfloat16 instructions, which oneDNN uses for bfloat16 convolutions
    and matmuls: AMX tiles (Intel Sapphire Rapids and later) or AVX512_BF16 (Intel Cooper Lake,
    AMD Zen 4 and later)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return any(flag in flags for flag in NATIVE_BFLOAT16_FLAGS)
    except OSError:
        pass
    return False


def on_gpus(towers):
    """True when the towers are GPUs: what the automatic precision and augmentation turn on."""
    return any("GPU" in d.upper() for d in towers)


def precision_policy(mixed_precision, towers, dtype="auto"):
    """The Keras precision policy for `--mixed_precision` (True, False or None = automatic) and
    `--mixed_precision_dtype`.

    Mixed precision keeps float32 weights and computes in a 16-bit type: `auto` means float16 with
    loss scaling on GPUs and bfloat16 on CPUs. Automatic turns it on only where it was measured
    faster with held-out top-1 within the seed-to-seed spread: CPUs with native bfloat16 (AMX or
    AVX512_BF16; docs/benchmarks.md, "Precision, XLA, threads and malloc", and docs/results.md,
    "Precision on the CIFAR-10 recipe"). CPUs without bfloat16 units emulate it slowly, and GPUs
    were not measured, so both stay float32 unless asked. Naming a dtype asks for it (float16 on CPU
    towers runs the GPU's loss-scaled path, slowly: that is how the tests prove it without a GPU).
    """
    on_gpu = on_gpus(towers)
    if mixed_precision is None:
        mixed_precision = dtype != "auto" or (not on_gpu and cpu_has_native_bfloat16())
    if not mixed_precision:
        return "float32"
    if dtype == "auto":
        dtype = "float16" if on_gpu else "bfloat16"
    return f"mixed_{dtype}"


def augment_on(choice: str, towers: list, resizes: bool = True) -> str:
    """Where training batches are augmented, for `--augment_on` (auto, host or device).

    auto: on the towers when they are GPUs, which would otherwise need several host cores each to
    keep up (docs/benchmarks.md, "The input pipeline at GPU rates"). On CPU towers, on the towers
    when the augmentation only shifts and flips (`resizes` False: 1.24x faster there), on the host
    when it crops and resizes (0.32x on the towers) (docs/benchmarks.md, "Is training
    input-bound?").
    """
    if choice == "auto":
        return "device" if on_gpus(towers) or not resizes else "host"
    return choice


def tower_name(device):
    """'/job:localhost/replica:0/task:0/device:GPU:1' -> 'gpu_1', the TensorBoard tag prefix."""
    spec = tf.DeviceSpec.from_string(device)
    return f"{spec.device_type.lower()}_{spec.device_index}"


@functools.lru_cache(maxsize=1)
def _gpu_memory():
    """{GPU index: memory in bytes} as TensorFlow reports it (device_lib is the one place it
    does); read once, not once per tower."""
    try:
        from tensorflow.python.client import device_lib
        return {int(d.name.rsplit(":", 1)[1]): d.memory_limit
                for d in device_lib.list_local_devices() if d.device_type == "GPU"}
    except (ImportError, AttributeError, ValueError, RuntimeError):
        return {}


def gpu_details(index):
    """(model name, memory in bytes) of GPU `index`, each None when TensorFlow does not say."""
    name = None
    try:
        gpu = tf.config.list_physical_devices("GPU")[index]
        name = tf.config.experimental.get_device_details(gpu).get("device_name")
    except (IndexError, ValueError, RuntimeError):
        pass
    return name, _gpu_memory().get(index) or None


def describe_tower(device):
    """'gpu_0 (NVIDIA A100-SXM4-40GB, 38.4 GiB)' for a GPU tower; 'cpu_0' for a CPU one."""
    label = tower_name(device)
    spec = tf.DeviceSpec.from_string(device)
    if spec.device_type != "GPU":
        return label
    name, memory = gpu_details(spec.device_index)
    details = [d for d in (name, memory and f"{memory / 2 ** 30:.1f} GiB") if d]
    return f"{label} ({', '.join(details)})" if details else label


def make_strategy(devices):
    # MirroredStrategy on CPU devices needs an explicit all-reduce (NCCL is for GPUs only).
    if all("CPU" in d.upper() for d in devices):
        return tf.distribute.MirroredStrategy(
            devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    return tf.distribute.MirroredStrategy(devices)


def distributed_iterator(strategy, dataset_fn) -> "ReleasedInBackground":
    """An iterator over `strategy.distribute_datasets_from_function(dataset_fn)`: one batch per
    tower a step, destroyed off the calling thread once done (`ReleasedInBackground`). Making the
    first one sets glibc's mmap threshold to 128 KB (TensorFlow 2.21 on Python 3.11 does, see
    runtime.reapply_malloc_settings), so the entry points' malloc settings are put back after
    it."""
    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    reapply_malloc_settings()
    return ReleasedInBackground(iterator)


class ReleasedInBackground:
    """Iterates `iterator`, then drops it in a thread of its own: when it is exhausted, or when
    this wrapper is dropped unexhausted (a training run's iterator at the end of the run).

    Destroying a tf.data iterator waits for its autotuning thread, and in TensorFlow 2.21 that
    thread does not always wake when cancelled: it sleeps in periods doubling from 10 ms to 60 s,
    so the wait reaches a minute once the iterator has run for a minute or two. A held-out
    scoring every epoch would lose that to each epoch; in another thread the wait overlaps the
    next epoch instead (docs/design.md, "Finished iterators").

    The thread is not a daemon: the interpreter stops a daemon thread still in TensorFlow's
    code at exit by a forced unwind, which aborts the process ("FATAL: exception not
    rethrown"). So a process ends only once its iterators are gone."""

    def __init__(self, iterator: Iterator) -> None:
        # The only reference: the thread that clears the list destroys the iterator.
        self._holder: List[Any] = [iterator]

    def __iter__(self) -> "ReleasedInBackground":
        return self

    def __next__(self):
        if not self._holder:
            raise StopIteration
        try:
            return next(self._holder[0])
        except StopIteration:
            pass
        # Outside the handler: the caught exception's traceback would hold the iterator.
        self.release()
        raise StopIteration

    def release(self) -> None:
        """Drops the iterator in a new thread (at once, in this one, if no thread can start)."""
        holder, self._holder = self._holder, []
        if not holder:
            return
        if sys.is_finalizing():
            # The interpreter's last garbage collection: a thread started now never runs, and
            # start() would wait for it for good.
            holder.clear()
            return
        try:
            threading.Thread(target=holder.clear, name="tf.data iterator release").start()
        except RuntimeError:  # the interpreter is shutting down
            holder.clear()

    def __del__(self) -> None:
        self.release()


def check_batch_size(global_batch, num_towers):
    if global_batch % num_towers:
        low = global_batch - global_batch % num_towers
        nearest = " or ".join(str(b) for b in (low, low + num_towers) if b > 0)
        raise ValueError(f"--batch_size={global_batch}: the global batch is split evenly across "
                         f"the {num_towers} towers, so it must divide by {num_towers} "
                         f"(e.g. {nearest})")
    return global_batch // num_towers


def make_multi_worker_strategy():
    """One tower per local GPU (or the CPU) on every worker; gradients all-reduced across all."""
    return tf.distribute.MultiWorkerMirroredStrategy()


def out_of_memory_message(error: tf.errors.ResourceExhaustedError, batch_size: int,
                          towers: int, per_tower_batch: int, image_size: int, model: str,
                          precision: str) -> str:
    """What to do when a tower's batch does not fit in its device's memory: a smaller global
    batch (still a multiple of the towers), instead of TensorFlow's traceback."""
    smaller = max(towers, batch_size // 2 // towers * towers)
    hint = "" if precision != "float32" else (
        ", or --mixed_precision (16-bit activations take half the memory)")
    return (f"out of memory with {per_tower_batch} images of {image_size} px per tower "
            f"(--batch_size={batch_size} over {towers} tower(s), --model={model}): "
            f"{error.message.splitlines()[0][:200]}. Try --batch_size={smaller}{hint}; --lr is "
            f"the rate for the global batch, so scale it with the batch")
