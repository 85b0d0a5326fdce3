"""The one pipeline builder: examples -> a cached, shuffled, augmented, batched, prefetched dataset.

The order is fixed:
  read (parallel) -> decode -> resize to the cache size -> cache -> shuffle -> augment -> batch
  -> prefetch.
`InputPipeline` does the first four once, when it is made: one pass over the files, with a
progress bar, that decodes every image into a store (input_pipeline/store.py: RAM or a file of
fixed-size records). That pass is the only disk read of the original files, it finds the files that
cannot be decoded (so they can be reported by name), and a training loop that stops an epoch early
can never leave a half-written cache behind.

Shuffling is a uniform random permutation of the whole set every epoch, whatever its size, file
order or cache mode: the permutation is drawn over record numbers (stateless, from the seed, the
shard and the epoch), cut into batches, and each batch is gathered from the store. No shuffle
buffer: memory is the store plus a few batches. Without a cache the same permutation orders the
file reads.
Augmentation comes after the cache, so every epoch sees new crops, and works on whole batches:
every image still gets its own random crop, flip and colour jitter, but in a few vectorised ops
per batch (measured in benchmarks/pipeline.py).
"""
import os
import random
import time
from typing import Optional, Protocol, Tuple, Union

import numpy as np
import tensorflow as tf

import disk_space
from console import format_bytes
from input_pipeline import preprocessing
from input_pipeline.examples import Examples
from input_pipeline.preprocessing import Augmentation
from input_pipeline.skipped import report_skipped, skipped_note
from input_pipeline.store import (
    CACHE_MODES,
    JPEG_QUALITY,
    DiskStore,
    JpegDiskStore,
    MemoryStore,
    cache_file,
    choose_cache_mode,
)
from runtime import release_free_memory

_DISK_STORES = {"disk": DiskStore, "disk_jpeg": JpegDiskStore}
AUTOTUNE = tf.data.AUTOTUNE
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


# uniform: each epoch a permutation of every image; balanced: each class equally often.
SAMPLINGS = ("uniform", "balanced")


class InputPipeline:
    """Decodes and caches `examples` once; `dataset(...)` then gives one epoch at a time.

    `subset` names the examples in skipped_files.txt and the progress line ("train", "val", ...);
    `progress`, when given, hears of the first pass as it goes and gets a line about the cache.
    """

    def __init__(self, examples: Examples, *, image_size: int, training: bool,
                 cache: str = "auto", cache_dir: Optional[str] = None, seed: Optional[int] = None,
                 shard: Optional[Tuple[int, int]] = None,
                 augmentation: Augmentation = Augmentation(),
                 report_dir: Optional[str] = None, subset: Optional[str] = None,
                 max_skipped_fraction: float = 0.5, progress: Optional[Progress] = None,
                 sampling: str = "uniform") -> None:
        if cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        self.sampling = sampling
        shard_index = 0
        if shard is not None:
            num_shards, shard_index = shard
            if not 0 <= shard_index < num_shards:
                raise ValueError(f"shard index {shard_index} is outside 0..{num_shards - 1}")
            # Every num_shards-th example: each shard mixes all classes, and together the shards
            # partition the set.
            examples = examples.subset(np.arange(shard_index, len(examples), num_shards))
        if len(examples) == 0:
            raise ValueError("The dataset has no examples to read")
        self.examples = examples
        self.image_size = image_size
        self.training = training
        self.subset = subset or ("train" if training else "test")
        # Without a seed every run differs; with one, every epoch is reproducible. The shard is
        # part of the key, so two workers do not walk their shards in the same pattern.
        base_seed = random.randrange(2 ** 31) if seed is None else int(seed)
        self._key = tf.constant([base_seed, shard_index], tf.int64)
        # Training and evaluation crops of one model agree on the cached square (its margin).
        self.augmentation = augmentation
        self.cache_size = preprocessing.cache_size(image_size, augmentation.eval_fraction)
        self.cache_mode = choose_cache_mode(cache, examples, self.cache_size, cache_dir)
        self._store = self._fill(cache_dir, progress)
        release_free_memory()
        # Record r of an epoch is example self._example_of[r]: the readable examples in order.
        self._example_of = (self._store.example_index if self._store is not None
                            else self._readable)
        self.num_examples = len(self._example_of)
        record_labels = examples.labels[self._example_of]
        self._record_labels = tf.constant(record_labels, tf.int32)
        if sampling == "balanced":
            # The records grouped by class, and where each present class starts and how many.
            classes, starts, counts = np.unique(np.sort(record_labels, kind="stable"),
                                                return_index=True, return_counts=True)
            self._by_class = tf.constant(np.argsort(record_labels, kind="stable"), tf.int64)
            self._class_starts = tf.constant(starts, tf.int64)
            self._class_counts = tf.constant(counts, tf.float64)
        if self._store is None:  # what `_load_example` reads from, every epoch
            self._example_of_tensor = tf.constant(self._example_of, tf.int64)
            if examples.paths is not None:
                self._paths_tensor = tf.constant(examples.paths)
        seen = np.zeros(len(examples), bool)
        seen[self._example_of] = True
        self.skipped_files = [] if examples.paths is None else list(examples.paths[~seen])
        # A disk cache of mostly unreadable data is deleted: the corrected run never reuses it.
        delete_store = self._store.delete if isinstance(self._store, DiskStore) else None
        report_skipped(self.skipped_files, len(examples), self.subset, report_dir,
                       max_skipped_fraction, before_error=delete_store)
        if progress is not None:
            progress.line(self.describe_cache(report_dir))

    # -- read -> decode -> resize -> cache: the part done once ---------------------------------
    def _decoded(self, encode: bool = False):
        """(uint8 cache-size square, example index) of every readable example, in order; with
        `encode`, the square as JPEG bytes instead (for the compact disk cache)."""
        image_size, eval_fraction = self.image_size, self.augmentation.eval_fraction

        def square(image: tf.Tensor) -> tf.Tensor:
            image = preprocessing.resize_for_cache(image, image_size, eval_fraction)
            if encode:  # in the parallel map, so the first pass's threads share the encoding
                return tf.io.encode_jpeg(image, quality=JPEG_QUALITY, chroma_downsampling=False)
            return image
        index = np.arange(len(self.examples), dtype=np.int64)
        if self.examples.images is not None:
            ds = tf.data.Dataset.from_tensor_slices((self.examples.images, index))
            return ds.map(lambda image, i: (square(image), i), num_parallel_calls=_DECODERS)
        ds = tf.data.Dataset.from_tensor_slices((self.examples.paths, index))
        ds = ds.map(lambda path, i: (tf.io.read_file(path), i), num_parallel_calls=_READS_IN_FLIGHT)
        ds = ds.map(lambda data, i: (square(preprocessing.decode_image(data)), i),
                    num_parallel_calls=_DECODERS)
        # Unreadable files (empty, truncated, not an image) are dropped here, found by index
        # after the pass and reported; they never stop the run.
        return ds.ignore_errors()

    def _first_pass(self, encode: bool = False):
        """`_decoded` in batches of _FILL_BATCH, as the first pass consumes it."""
        options = tf.data.Options()
        # The pass's parallelism is fixed (_READS_IN_FLIGHT, _DECODERS), so the autotuner has
        # nothing to choose, yet with it on, about half of all first passes settled at 70% of
        # the speed of the others with a core idle; off, none did (docs/design.md, "The first
        # pass").
        options.autotune.enabled = False
        return self._decoded(encode).batch(_FILL_BATCH).prefetch(2).with_options(options)

    def _read_file(self, path: tf.Tensor):
        image = preprocessing.decode_image(tf.io.read_file(path))
        return preprocessing.resize_for_cache(image, self.image_size,
                                              self.augmentation.eval_fraction)

    def _fill(self, cache_dir: Optional[str], progress: Optional[Progress]):
        """The first pass: decodes everything into a new store (or finds a complete disk store
        made earlier from the same files). Without a cache it only finds the readable files."""
        size = self.cache_size
        shape = (size, size, 3)
        self._reused = False
        if self.cache_mode in _DISK_STORES:
            store_class = _DISK_STORES[self.cache_mode]
            path = cache_file(self.examples, self.image_size, size, self.cache_mode, cache_dir)
            store = store_class.open_complete(path, shape)
            if store is not None:
                self._reused = True
                return store
            if self.cache_mode == "disk":  # raw records: the size is known before the pass
                disk_space.check_free(path, len(self.examples) * int(np.prod(shape)))
            store = store_class(path, shape).start()
        elif self.cache_mode == "memory":
            store = MemoryStore(len(self.examples), shape)
        else:
            store = None
        readable = []
        total = len(self.examples)
        if progress is not None:
            progress.line(f"First pass over the {total:,} {self.subset} images: read, decode, "
                          f"{'cache' if store is not None else 'check'}")
        start, done = time.perf_counter(), 0
        try:
            encode = isinstance(store, JpegDiskStore)
            for images, index in self._first_pass(encode):
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
            self._readable = (np.concatenate(readable) if readable
                              else np.zeros((0,), np.int64))
            return None
        return store.finish()

    @property
    def cache_bytes(self) -> int:
        """The bytes the cache holds, in RAM or on disk; 0 without a cache."""
        return 0 if self._store is None else self._store.nbytes

    def describe_cache(self, report_dir: Optional[str] = None) -> str:
        """One line: the cache's mode, place and size, and the files skipped."""
        n = f"{self.num_examples:,} {self.subset} images"
        if self._store is None:
            line = f"No cache: {n} are read from their files every epoch"
        else:
            where = "in RAM" if self.cache_mode == "memory" else f"at {self._store.path}"
            verb = "reused" if self._reused else "holds"
            per_image = self._store.nbytes / max(self.num_examples, 1) / 1e3
            line = (f"Cache ({self.cache_mode}) {verb} {n}: {format_bytes(self._store.nbytes)} "
                    f"({per_image:.1f} KB per image) {where}")
        return line + skipped_note(report_dir, len(self.skipped_files))

    # -- shuffle -> augment -> batch -> prefetch: the part done every epoch --------------------
    def _load_example(self, record: tf.Tensor):
        """Without a cache: record -> (cache-size square, label), read from its file."""
        example = tf.gather(self._example_of_tensor, record)
        if self.examples.images is not None:
            images = self.examples.images
            image = tf.numpy_function(lambda i: images[i], [example], tf.uint8, stateful=False)
            image.set_shape([None, None, 3])
            image = preprocessing.resize_for_cache(image, self.image_size,
                                                   self.augmentation.eval_fraction)
        else:
            image = self._read_file(tf.gather(self._paths_tensor, example))
        return image, tf.gather(self._record_labels, record)

    def _read_records(self, records: tf.Tensor):
        """From the store: a batch of records -> (uint8 squares [B, C, C, 3], labels [B])."""
        size = self.cache_size
        if isinstance(self._store, JpegDiskStore):
            encoded = tf.numpy_function(self._store.read, [records], tf.string, stateful=False)
            encoded.set_shape([None])
            images = tf.map_fn(lambda data: tf.io.decode_jpeg(data, channels=3), encoded,
                               fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8),
                               parallel_iterations=16)
        else:
            images = tf.numpy_function(self._store.read, [records], tf.uint8, stateful=False)
        images.set_shape([None, size, size, 3])
        return images, tf.gather(self._record_labels, records)

    def dataset(self, batch_size: int, *, epoch: int = 0, num_epochs: Optional[int] = 1,
                take_batches: Optional[int] = None, skip_batches: int = 0,
                drop_remainder: Optional[bool] = None, augment_on: str = "host") -> tf.data.Dataset:
        """Epochs `epoch` .. `epoch + num_epochs - 1` of (float32 images [B, S, S, 3] in [-1, 1],
        int32 labels [B]), each batched on its own; `num_epochs=None` goes on for ever.

        `augment_on="device"` (training only) leaves the augmentation to the device that trains:
        the images are then {"images": uint8 cache-size squares [B, C, C, 3], and the batch's
        sampled parameters}, a third of the bytes of the float32 crops at any size, and
        `self.augment` on the device turns them into exactly the batch the host would give.

        A training epoch visits every readable image once, in a uniform random permutation drawn
        from (seed, shard, epoch) alone, so a resumed run sees the epochs an uninterrupted one
        would; evaluation keeps the examples' order. One dataset spanning every epoch of a run
        means one iterator, instead of a new one (and its set-up pause) per epoch. `take_batches`
        cuts each epoch; `skip_batches` skips the start of the first (a run resumed mid-epoch).
        """
        if augment_on not in ("host", "device"):
            raise ValueError(f"augment_on must be host or device, got {augment_on!r}")
        on_device = self.training and augment_on == "device"
        last = 2 ** 62 if num_epochs is None else epoch + num_epochs
        training, image_size, augmentation = self.training, self.image_size, self.augmentation
        drop_remainder = self.training if drop_remainder is None else drop_remainder
        key, count = self._key, self.num_examples

        def one_epoch(e: tf.Tensor) -> tf.data.Dataset:
            epoch_key = tf.random.experimental.stateless_fold_in(key, e)
            records = tf.range(count, dtype=tf.int64)
            if training and self.sampling == "balanced":
                records = self._balanced_records(
                    count, tf.random.experimental.stateless_fold_in(epoch_key, 2))
            elif training:
                # shuffle: the whole epoch's order at once, as a permutation of record numbers.
                records = tf.random.experimental.stateless_shuffle(
                    records, seed=tf.random.experimental.stateless_fold_in(epoch_key, 0))
            ds = tf.data.Dataset.from_tensor_slices(records)
            if self._store is None:
                ds = ds.map(self._load_example, num_parallel_calls=AUTOTUNE).ignore_errors()
            ds = ds.batch(batch_size, drop_remainder=drop_remainder).enumerate()
            if take_batches is not None:
                # repeat(): a worker whose shard lost files to decoding errors still gives the
                # agreed number of batches.
                ds = ds.repeat().take(take_batches)
            # Skipped before the store is read, so resuming mid-epoch costs nothing.
            ds = ds.skip(tf.where(e == epoch, tf.constant(skip_batches, tf.int64), 0))
            augment_key = tf.random.experimental.stateless_fold_in(epoch_key, 1)

            def inputs(i: tf.Tensor, batch: Union[tf.Tensor, Tuple[tf.Tensor, tf.Tensor]],
                       ) -> tuple:
                images, labels = batch if self._store is None else self._read_records(batch)
                if not training:
                    return (preprocessing.eval_crop(images, image_size,
                                                    augmentation.eval_fraction), labels)
                # augment, batched: each image gets its own crop, flip and jitter, drawn from
                # (seed, shard, epoch, batch) and applied to the whole batch in a few ops.
                params = preprocessing.sample_augmentation(
                    tf.shape(images)[0], tf.random.experimental.stateless_fold_in(augment_key, i),
                    augmentation, image_size)
                if on_device:
                    return dict(images=images, **params), labels
                return (preprocessing.apply_augmentation(images, params, image_size,
                                                         augmentation), labels)
            return ds.map(inputs, num_parallel_calls=AUTOTUNE)

        return tf.data.Dataset.range(epoch, last).flat_map(one_epoch).prefetch(AUTOTUNE)

    def _balanced_records(self, count: int, seed: tf.Tensor) -> tf.Tensor:
        """`sampling="balanced"`: an epoch of `count` records, each of a class drawn uniformly
        from the classes present, then a record of that class drawn uniformly (with
        replacement): every class is seen equally often, whatever its size."""
        draws = tf.random.stateless_uniform([2, count], seed=seed, dtype=tf.float64)
        num_classes = tf.cast(tf.size(self._class_counts), tf.float64)
        classes = tf.cast(tf.floor(draws[0] * num_classes), tf.int64)
        within = tf.cast(tf.floor(draws[1] * tf.gather(self._class_counts, classes)), tf.int64)
        return tf.gather(self._by_class, tf.gather(self._class_starts, classes) + within)

    def augment(self, inputs: dict) -> tf.Tensor:
        """A batch of `dataset(augment_on="device")` -> the float32 training batch, wherever it
        runs (the training step calls it on each tower)."""
        params = {name: value for name, value in inputs.items() if name != "images"}
        return preprocessing.apply_augmentation(inputs["images"], params, self.image_size,
                                                self.augmentation)
