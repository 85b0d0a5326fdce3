"""The first pass: read -> decode -> resize to the cache size -> cache, once, when a pipeline is
made (input_pipeline/builder.py).

One pass over the files, with a progress bar, decodes every image into a store
(input_pipeline/store.py: RAM or a file of fixed-size records). It is the only disk read of the
original files, it finds the files that cannot be decoded (so they can be reported by name), and
a training loop that stops an epoch early can never leave a half-written cache behind.
"""
import dataclasses
import os
import time
from typing import Optional, Protocol, Union

import numpy as np
import tensorflow as tf

from host import disk_space
from input_pipeline import preprocessing
from input_pipeline.examples import Examples
from input_pipeline.store import (
    JPEG_QUALITY,
    DiskStore,
    JpegDiskStore,
    MemoryStore,
    cache_file,
)

_DISK_STORES = {"disk": DiskStore, "disk_jpeg": JpegDiskStore}
_FILL_BATCH = 256  # images handed from tf.data to the store at a time during the first pass
# The first pass's parallelism, fixed rather than left to tf.data's autotuner: reads wait on the
# disk, so many are in flight; decoders are two per core, so a decoder waiting on its input never
# leaves a core idle. This was measured faster than one autotuned map doing both
# (docs/design.md, "The first pass").
_READS_IN_FLIGHT = 16
_DECODERS = 2 * (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)


class Progress(Protocol):
    """Where a pipeline tells the person running it about its first pass: its lines (what the
    pass does, then what the cache holds) and its images done so far. console.PassProgress
    prints them; the pipeline itself never writes to the console."""

    def line(self, text: str) -> None: ...

    def advance(self, done: int, total: int, images_per_second: int) -> None: ...


@dataclasses.dataclass(frozen=True)
class Filled:
    """What the first pass left: the store (None without a cache), the readable examples'
    indices in order, and whether a complete disk store made earlier was reused."""
    store: Optional[Union[MemoryStore, DiskStore]]
    readable: np.ndarray
    reused: bool


def decoded(examples: Examples, image_size: int, eval_fraction: float,
            encode: bool = False) -> tf.data.Dataset:
    """(uint8 cache-size square, example index) of every readable example, in order; with
    `encode`, the square as JPEG bytes instead (for the compact disk cache)."""
    def square(image: tf.Tensor) -> tf.Tensor:
        image = preprocessing.resize_for_cache(image, image_size, eval_fraction)
        if encode:  # in the parallel map, so the first pass's threads share the encoding
            return tf.io.encode_jpeg(image, quality=JPEG_QUALITY, chroma_downsampling=False)
        return image
    index = np.arange(len(examples), dtype=np.int64)
    if examples.images is not None:
        ds = tf.data.Dataset.from_tensor_slices((examples.images, index))
        return ds.map(lambda image, i: (square(image), i), num_parallel_calls=_DECODERS)
    ds = tf.data.Dataset.from_tensor_slices((examples.paths, index))
    ds = ds.map(lambda path, i: (tf.io.read_file(path), i), num_parallel_calls=_READS_IN_FLIGHT)
    ds = ds.map(lambda data, i: (square(preprocessing.decode_image(data)), i),
                num_parallel_calls=_DECODERS)
    # Unreadable files (empty, truncated, not an image) are dropped here, found by index
    # after the pass and reported; they never stop the run.
    return ds.ignore_errors()


def batches(examples: Examples, image_size: int, eval_fraction: float,
             encode: bool) -> tf.data.Dataset:
    """`decoded` in batches of _FILL_BATCH, as the first pass consumes it."""
    options = tf.data.Options()
    # The pass's parallelism is fixed (_READS_IN_FLIGHT, _DECODERS), so the autotuner has
    # nothing to choose, yet with it on, about half of all first passes settled at 70% of
    # the speed of the others with a core idle; off, none did (docs/design.md, "The first
    # pass").
    options.autotune.enabled = False
    return (decoded(examples, image_size, eval_fraction, encode).batch(_FILL_BATCH).prefetch(2)
            .with_options(options))


def _new_store(examples: Examples, image_size: int, cache_size: int, cache_mode: str,
               cache_dir: Optional[str]):
    """(store to fill or None, a complete disk store made earlier from the same files or None)."""
    shape = (cache_size, cache_size, 3)
    if cache_mode in _DISK_STORES:
        store_class = _DISK_STORES[cache_mode]
        path = cache_file(examples, image_size, cache_size, cache_mode, cache_dir)
        store = store_class.open_complete(path, shape)
        if store is not None:
            return None, store
        if cache_mode == "disk":  # raw records: the size is known before the pass
            disk_space.check_free(path, len(examples) * int(np.prod(shape)))
        return store_class(path, shape).start(), None
    if cache_mode == "memory":
        return MemoryStore(len(examples), shape), None
    return None, None


def fill(examples: Examples, *, image_size: int, eval_fraction: float, cache_mode: str,
         cache_dir: Optional[str], subset: str, progress: Optional[Progress]) -> Filled:
    """The first pass: decodes everything into a new store (or finds a complete disk store made
    earlier from the same files). Without a cache it only finds the readable files."""
    cache_size = preprocessing.cache_size(image_size, eval_fraction)
    store, complete = _new_store(examples, image_size, cache_size, cache_mode, cache_dir)
    if complete is not None:
        return Filled(complete, complete.example_index, True)
    readable, total = [], len(examples)
    if progress is not None:
        progress.line(f"First pass over the {total:,} {subset} images: read, decode, "
                      f"{'cache' if store is not None else 'check'}")
    start, done = time.perf_counter(), 0
    try:
        encode = isinstance(store, JpegDiskStore)
        for images, index in batches(examples, image_size, eval_fraction, encode):
            index = index.numpy()
            if store is not None:
                store.append(images.numpy(), index)
            else:
                readable.append(index)
            done = int(index[-1]) + 1
            if progress is not None:
                progress.advance(done, total, round(done / (time.perf_counter() - start)))
    except BaseException as error:
        if isinstance(store, DiskStore):
            store.abandon()
            if disk_space.is_disk_full(error):
                raise disk_space.DiskFull(disk_space.disk_full_message(store.path)) from None
        raise
    if progress is not None and done < total:  # the last files were unreadable
        progress.advance(total, total, round(total / (time.perf_counter() - start)))
    if store is None:
        return Filled(None, np.concatenate(readable) if readable else np.zeros((0,), np.int64),
                      False)
    store = store.finish()
    return Filled(store, store.example_index, False)
