"""The first pass: read -> decode -> resize to the cache size -> cache, once, when a pipeline is
made (input_pipeline/builder.py).

One pass over the files, with a progress bar, decodes every image into a store
(input_pipeline/store.py: RAM or a file of fixed-size records). It is the only disk read of the
original files, it finds the files that cannot be decoded (so they can be reported by name), and
a training loop that stops an epoch early can never leave a half-written cache behind.
"""
import contextlib
import dataclasses
import os
import re
import threading
import time
from typing import Optional, Protocol, Union

import numpy as np
import tensorflow as tf

from host import disk_space
from input_pipeline import image_header, preprocessing
from input_pipeline.examples import Examples
from input_pipeline.image_header import MAX_IMAGE_PIXELS
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
# The bytes the decodes in flight may take (as image_header estimates them from the declared
# sizes), whatever the core count: images up to SMALL_DECODE_BUDGET / _DECODERS bytes decode on
# every decoder at once, so together within SMALL_DECODE_BUDGET; larger ones wait for room in
# LARGE_DECODE_BUDGET (one alone may exceed it: an image at --max_image_pixels).
SMALL_DECODE_BUDGET = LARGE_DECODE_BUDGET = 1024 ** 3


class _ByteGate:
    """A budget of bytes shared by the large decodes in flight: `held(n)` waits until n more
    fit (or nothing else is held, so an image larger than the budget still decodes, alone) and
    gives them back however the decode ends."""

    def __init__(self, budget: int) -> None:
        self._budget, self._used = budget, 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def held(self, nbytes: int):
        with self._changed:
            while self._used and self._used + nbytes > self._budget:
                self._changed.wait()
            self._used += nbytes
        try:
            yield
        finally:
            with self._changed:
                self._used -= nbytes
                self._changed.notify_all()


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


def decoded(examples: Examples, image_size: int, eval_fraction: float, encode: bool = False,
            max_image_pixels: int = MAX_IMAGE_PIXELS) -> tf.data.Dataset:
    """(uint8 cache-size square, example index) of every readable example, in order; with
    `encode`, the square as JPEG bytes instead (for the compact disk cache). An image declaring
    more than `max_image_pixels`, or a size that cannot be read, is dropped undecoded."""
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
    size = preprocessing.cache_size(image_size, eval_fraction)
    small = max(SMALL_DECODE_BUDGET // _DECODERS, 1)
    gate = _ByteGate(LARGE_DECODE_BUDGET)

    def checked(data: tf.Tensor) -> tf.Tensor:
        """The bytes decoding `data` will take; an error (the element dropped) when its header
        declares too many pixels or none that can be read."""
        pixels, decode_bytes = tf.unstack(image_header.declared_size(data)[2:])
        fits = (pixels >= image_header.NOT_AN_IMAGE) & (pixels <= max_image_pixels)
        with tf.control_dependencies([tf.debugging.Assert(fits, ["declared size refused"])]):
            return tf.identity(decode_bytes)

    def large_eagerly(data: tf.Tensor, decode_bytes: tf.Tensor):
        """(square, True), or (a placeholder, False) when the data does not decode: the error
        is caught here so that the bytes are always given back."""
        with gate.held(int(decode_bytes)):
            try:
                return square(preprocessing.decode_image(data)), True
            except tf.errors.OpError:
                return (tf.constant(b"") if encode else tf.zeros([size, size, 3], tf.uint8),
                        False)

    def large(data: tf.Tensor, decode_bytes: tf.Tensor) -> tf.Tensor:
        image, ok = tf.py_function(large_eagerly, [data, decode_bytes],
                                   [tf.string if encode else tf.uint8, tf.bool])
        image.set_shape([] if encode else [size, size, 3])
        with tf.control_dependencies([tf.debugging.Assert(ok, ["not decodable"])]):
            return tf.identity(image)

    def decode(data: tf.Tensor, i: tf.Tensor):
        # The decodes in flight are bounded by the bytes they take, not by the core count: the
        # small images decode here on every decoder at once; a large one waits for room in the
        # gate's budget (Python, where a decoding error can be caught so the room is given back
        # however the decode ends; tf.data has no such wait of its own), and the rare large
        # image is the only one to pay for the detour.
        decode_bytes = checked(data)
        return tf.cond(decode_bytes <= small, lambda: square(preprocessing.decode_image(data)),
                       lambda: large(data, decode_bytes)), i
    ds = ds.map(decode, num_parallel_calls=_DECODERS)
    # Unreadable files (empty, truncated, not an image, too large) are dropped here, found by
    # index after the pass and reported with their reason (skip_reason); they never stop the run.
    return ds.ignore_errors()


def skip_reason(path: str, max_image_pixels: int = MAX_IMAGE_PIXELS) -> str:
    """Why the first pass dropped the file at `path`, in one line: the same checks again, one
    file at a time, to name the one that failed (the pass itself only drops the file)."""
    try:
        data = tf.io.read_file(path)
    except tf.errors.OpError as error:
        return f"cannot be read: {_message(error)}"
    if int(tf.strings.length(data)) == 0:
        return "empty file"
    try:
        height, width, pixels, _ = (int(v) for v in image_header.declared_size(data).numpy())
    except tf.errors.OpError as error:
        return f"not a readable image: {_message(error)}"
    if pixels == image_header.UNSIZED:
        return ("its size cannot be read before decoding (a header cut short, or JPEG XL), "
                "so it is not decoded")
    if pixels > max_image_pixels:
        declared = f"{width:,} x {height:,} pixels"
        if pixels > width * height:  # a GIF's frames, a WebP's animation
            declared += f" and {pixels:,} in all its frames"
        return (f"declares {declared}, over the limit of {max_image_pixels:,} "
                f"(--max_image_pixels)")
    try:
        preprocessing.decode_image(data)
    except tf.errors.OpError as error:
        return f"not a readable image: {_message(error)}"
    return "could not be decoded in the first pass, though it decodes now"


def _message(error: tf.errors.OpError) -> str:
    """TensorFlow's error message without the op's name around it, on one line."""
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", error.message)
    text = re.sub(r"\s*\[Op:[^\]]*\].*$", "", text, flags=re.S)
    return " ".join(text.split()) or type(error).__name__


def batches(examples: Examples, image_size: int, eval_fraction: float, encode: bool,
            max_image_pixels: int = MAX_IMAGE_PIXELS) -> tf.data.Dataset:
    """`decoded` in batches of _FILL_BATCH, as the first pass consumes it."""
    options = tf.data.Options()
    # The pass's parallelism is fixed (_READS_IN_FLIGHT, _DECODERS), so the autotuner has
    # nothing to choose, yet with it on, about half of all first passes settled at 70% of
    # the speed of the others with a core idle; off, none did (docs/design.md, "The first
    # pass").
    options.autotune.enabled = False
    return (decoded(examples, image_size, eval_fraction, encode, max_image_pixels)
            .batch(_FILL_BATCH).prefetch(2).with_options(options))


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
         cache_dir: Optional[str], subset: str, progress: Optional[Progress],
         max_image_pixels: int = MAX_IMAGE_PIXELS) -> Filled:
    """The first pass: decodes everything into a new store (or finds a complete disk store made
    earlier from the same files). Without a cache it only finds the readable files. Images
    declaring more than `max_image_pixels` are not decoded (not readable)."""
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
        for images, index in batches(examples, image_size, eval_fraction, encode,
                                     max_image_pixels):
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
