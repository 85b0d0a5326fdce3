"""The one pipeline builder: examples -> a cached, shuffled, augmented, batched, prefetched dataset.

The order is fixed:
  read (parallel) -> decode -> resize to the cache size -> cache -> shuffle -> augment -> batch
  -> prefetch.
`InputPipeline` does the first four once, when it is made: the first pass
(input_pipeline/first_pass.py) decodes every image into a store (input_pipeline/store.py: RAM or
a file of fixed-size records); the rest, here, runs every epoch.

Shuffling is a uniform random permutation of the whole set every epoch, whatever its size, file
order or cache mode: the permutation is drawn over record numbers (stateless, from the seed, the
shard and the epoch), cut into batches, and each batch is gathered from the store. No shuffle
buffer: memory is the store plus a few batches. Without a cache the same permutation orders the
file reads.
Augmentation comes after the cache, so every epoch sees new crops, and works on whole batches:
every image still gets its own random crop, flip and colour jitter, but in a few vectorised ops
per batch (measured in benchmarks/pipeline.py).
"""
import random
from typing import Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from host.console import format_bytes
from host.runtime import release_free_memory
from input_pipeline import first_pass, policies, preprocessing
from input_pipeline.examples import Examples
from input_pipeline.first_pass import Progress
from input_pipeline.image_header import MAX_IMAGE_PIXELS
from input_pipeline.preprocessing import Augmentation
from input_pipeline.skipped import report_skipped, skipped_note
from input_pipeline.store import (
    CACHE_MODES,
    DiskStore,
    JpegDiskStore,
    choose_cache_mode,
)

AUTOTUNE = tf.data.AUTOTUNE

# uniform: each epoch a permutation of every image; balanced: each class equally often.
SAMPLINGS = ("uniform", "balanced")


class InputPipeline:
    """Decodes and caches `examples` once; `dataset(...)` then gives one epoch at a time.

    `subset` names the examples in skipped_files.txt and the progress line ("train", "val", ...);
    `progress`, when given, hears of the first pass as it goes and gets a line about the cache.
    Images declaring more than `max_image_pixels` are skipped undecoded, like unreadable ones.
    `num_classes`, the length of a soft target, is needed when the augmentation mixes images
    (--mixup, --cutmix): a training batch's labels are then float32 [B, num_classes].
    """

    def __init__(self, examples: Examples, *, image_size: int, training: bool,
                 cache: str = "auto", cache_dir: Optional[str] = None, seed: Optional[int] = None,
                 shard: Optional[Tuple[int, int]] = None,
                 augmentation: Augmentation = Augmentation(),
                 report_dir: Optional[str] = None, subset: Optional[str] = None,
                 max_skipped_fraction: float = 0.5, progress: Optional[Progress] = None,
                 sampling: str = "uniform", max_image_pixels: int = MAX_IMAGE_PIXELS,
                 num_classes: Optional[int] = None) -> None:
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
        if training and augmentation.random_erasing > 0:
            preprocessing.erasing_layer()  # made now, eagerly: not in a tf.data or tower graph
        if training:
            policies.make_layers(augmentation)  # likewise
        self.mixes = training and policies.mixes(augmentation)
        if self.mixes and num_classes is None:
            raise ValueError("Mixing images (mixup, cutmix) needs num_classes for the targets")
        self.num_classes = num_classes
        self.cache_size = preprocessing.cache_size(image_size, augmentation.eval_fraction)
        self.cache_mode = choose_cache_mode(cache, examples, self.cache_size, cache_dir)
        filled = first_pass.fill(examples, image_size=image_size,
                                 eval_fraction=augmentation.eval_fraction,
                                 cache_mode=self.cache_mode, cache_dir=cache_dir,
                                 subset=self.subset, progress=progress,
                                 max_image_pixels=max_image_pixels)
        release_free_memory()
        self._store, self._reused = filled.store, filled.reused
        self._index_records(filled.readable)
        # A disk cache of mostly unreadable data is deleted: the corrected run never reuses it.
        delete_store = self._store.delete if isinstance(self._store, DiskStore) else None
        # Why each was skipped: the pass only drops a file, so each is checked again alone.
        self.skip_reasons = [first_pass.skip_reason(path, max_image_pixels)
                             for path in self.skipped_files]
        report_skipped(self.skipped_files, len(examples), self.subset, report_dir,
                       max_skipped_fraction, before_error=delete_store,
                       reasons=self.skip_reasons)
        if progress is not None:
            progress.line(self.describe_cache(report_dir))

    def _index_records(self, readable: np.ndarray) -> None:
        """Record r of an epoch is example `readable[r]`: the readable examples in order. Their
        labels, their grouping by class (balanced sampling), what an uncached epoch reads from,
        and the files skipped."""
        examples = self.examples
        self._example_of = readable
        self.num_examples = len(readable)
        record_labels = examples.labels[readable]
        self._record_labels = tf.constant(record_labels, tf.int32)
        if self.sampling == "balanced":
            # The records grouped by class, and where each present class starts and how many.
            classes, starts, counts = np.unique(np.sort(record_labels, kind="stable"),
                                                return_index=True, return_counts=True)
            self._by_class = tf.constant(np.argsort(record_labels, kind="stable"), tf.int64)
            self._class_starts = tf.constant(starts, tf.int64)
            self._class_counts = tf.constant(counts, tf.float64)
        if self._store is None:  # what `_load_example` reads from, every epoch
            self._example_of_tensor = tf.constant(readable, tf.int64)
            if examples.paths is not None:
                self._paths_tensor = tf.constant(examples.paths)
        seen = np.zeros(len(examples), bool)
        seen[readable] = True
        self.skipped_files = [] if examples.paths is None else list(examples.paths[~seen])

    def _read_file(self, path: tf.Tensor) -> tf.Tensor:
        image = preprocessing.decode_image(tf.io.read_file(path))
        return preprocessing.resize_for_cache(image, self.image_size,
                                              self.augmentation.eval_fraction)

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
        """Without a cache: record -> (cache-size square, label, record), read from its
        file."""
        example = tf.gather(self._example_of_tensor, record)
        if self.examples.images is not None:
            images = self.examples.images
            image = tf.numpy_function(lambda i: images[i], [example], tf.uint8, stateful=False)
            image.set_shape([None, None, 3])
            image = preprocessing.resize_for_cache(image, self.image_size,
                                                   self.augmentation.eval_fraction)
        else:
            image = self._read_file(tf.gather(self._paths_tensor, example))
        return image, tf.gather(self._record_labels, record), record

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
        int32 labels [B]), each batched on its own; `num_epochs=None` goes on for ever. A
        training pipeline that mixes images (`self.mixes`) gives float32 soft targets
        [B, num_classes] instead of the labels, on the host; with augment_on="device" the labels
        stay int32 and `self.augment` mixes them with the images.

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
        drop_remainder = self.training if drop_remainder is None else drop_remainder
        key, count = self._key, self.num_examples
        # One coin per record for every epoch alike: from the run's key, folded with -1, which
        # no epoch is.
        coins = (tf.random.stateless_uniform(
            [count], tf.random.experimental.stateless_fold_in(key, -1))
            if self.training and self.augmentation.alternate_flips else None)

        def one_epoch(e: tf.Tensor) -> tf.data.Dataset:
            epoch_key = tf.random.experimental.stateless_fold_in(key, e)
            ds = tf.data.Dataset.from_tensor_slices(self._epoch_records(epoch_key))
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
            return ds.map(lambda i, batch: self._batch_inputs(
                batch, tf.random.experimental.stateless_fold_in(augment_key, i), e, coins,
                on_device), num_parallel_calls=AUTOTUNE)

        return tf.data.Dataset.range(epoch, last).flat_map(one_epoch).prefetch(AUTOTUNE)

    def _epoch_records(self, epoch_key: tf.Tensor) -> tf.Tensor:
        """The record numbers in the order an epoch visits them: evaluation keeps the examples'
        order; training draws the whole epoch's order at once from `epoch_key`, a uniform
        permutation (or, with sampling="balanced", `_balanced_records`)."""
        records = tf.range(self.num_examples, dtype=tf.int64)
        if not self.training:
            return records
        if self.sampling == "balanced":
            return self._balanced_records(
                self.num_examples, tf.random.experimental.stateless_fold_in(epoch_key, 2))
        return tf.random.experimental.stateless_shuffle(
            records, seed=tf.random.experimental.stateless_fold_in(epoch_key, 0))

    def _batch_inputs(self, batch: Union[tf.Tensor, Tuple[tf.Tensor, tf.Tensor, tf.Tensor]],
                      batch_key: tf.Tensor, epoch: tf.Tensor, coins: Optional[tf.Tensor],
                      on_device: bool) -> tuple:
        """A batch of records (or, without a store, of loaded examples) -> what `dataset`
        yields: the evaluation crop, or the training batch augmented from `batch_key`."""
        if self._store is None:
            images, labels, records = batch
        else:
            records, (images, labels) = batch, self._read_records(batch)
        if not self.training:
            return (preprocessing.eval_crop(images, self.image_size,
                                            self.augmentation.eval_fraction), labels)
        # Augment, batched: each image gets its own crop, flip and jitter, drawn from
        # (seed, shard, epoch, batch) and applied to the whole batch in a few ops.
        params = preprocessing.sample_augmentation(tf.shape(images)[0], batch_key,
                                                   self.augmentation, self.image_size)
        if coins is not None:
            params["flip"] = preprocessing.alternating_flips(records, coins, epoch)
        if on_device:
            return dict(images=images, **params), labels
        images = preprocessing.apply_augmentation(images, params, self.image_size,
                                                  self.augmentation)
        if self.mixes:  # last, on the batch: MixUp or CutMix, labels to soft targets
            return policies.mix(images, labels, params, self.augmentation, self.num_classes)
        return images, labels

    def _balanced_records(self, count: int, seed: tf.Tensor) -> tf.Tensor:
        """`sampling="balanced"`: an epoch of `count` records, each of a class drawn uniformly
        from the classes present, then a record of that class drawn uniformly (with
        replacement): every class is seen equally often, whatever its size."""
        draws = tf.random.stateless_uniform([2, count], seed=seed, dtype=tf.float64)
        num_classes = tf.cast(tf.size(self._class_counts), tf.float64)
        classes = tf.cast(tf.floor(draws[0] * num_classes), tf.int64)
        within = tf.cast(tf.floor(draws[1] * tf.gather(self._class_counts, classes)), tf.int64)
        return tf.gather(self._by_class, tf.gather(self._class_starts, classes) + within)

    def augment(self, inputs: dict, labels: Optional[tf.Tensor] = None,
                ) -> Union[tf.Tensor, Tuple[tf.Tensor, tf.Tensor]]:
        """A batch of `dataset(augment_on="device")` -> the float32 training batch, wherever it
        runs (the training step calls it on each tower). Given the batch's `labels`, returns
        (images, labels): the labels as the host path gives them, soft targets when the
        augmentation mixes images (the pairs drawn within the batch at hand: a tower's share)."""
        params = {name: value for name, value in inputs.items() if name != "images"}
        images = preprocessing.apply_augmentation(inputs["images"], params, self.image_size,
                                                  self.augmentation)
        if labels is None:
            return images
        if self.mixes:
            return policies.mix(images, labels, params, self.augmentation, self.num_classes)
        return images, labels
