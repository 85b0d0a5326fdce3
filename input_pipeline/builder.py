"""The one pipeline builder: examples -> a cached, shuffled, augmented, batched, prefetched dataset.

The order is fixed (REFERENCE.md lists the traps it avoids):
  read (parallel) -> decode -> resize to the cache size -> cache -> shuffle -> augment -> batch
  -> prefetch.
Augmentation works on whole batches: every image still gets its own random crop, flip and colour
jitter, but in a few vectorised ops per batch instead of a dozen small ops per image (measured in
benchmarks/pipeline.py).
The cache holds decoded images, so from the second epoch on nothing is read or decoded again, and
augmentation comes after it, so every epoch sees new crops. `InputPipeline` fills the cache in one
full pass when it is made: that pass is the only disk read, it finds the files that cannot be
decoded (so they can be reported by name), and a training loop that stops an epoch early can never
leave a half-written cache behind.
"""
import glob
import hashlib
import os
import random
import tempfile

import numpy as np
import tensorflow as tf
from absl import logging

from input_pipeline import preprocessing
from input_pipeline.memory import release_free_memory
from input_pipeline.preprocessing import Augmentation

CACHE_MODES = ("auto", "memory", "disk", "none")
AUTOTUNE = tf.data.AUTOTUNE


def available_memory_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


class InputPipeline:
    """Decodes and caches `examples` once; `dataset(...)` then gives one epoch at a time."""

    def __init__(self, examples, *, image_size, training, cache="auto", cache_dir=None, seed=None,
                 shard=None, augmentation=Augmentation(), report_dir=None, shuffle_buffer=10_000,
                 max_skipped_fraction=0.5):
        if cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {', '.join(CACHE_MODES)}, got {cache!r}")
        if shard is not None:
            num_shards, index = shard
            if not 0 <= index < num_shards:
                raise ValueError(f"shard index {index} is outside 0..{num_shards - 1}")
            examples = examples.subset(np.arange(index, len(examples), num_shards))
        if len(examples) == 0:
            raise ValueError("The dataset has no examples to read")
        self.examples = examples
        self.image_size = image_size
        self.training = training
        # Without a seed every run differs; with one, every epoch is reproducible.
        self._base_seed = random.randrange(2 ** 31) if seed is None else int(seed)
        self.augmentation = augmentation
        self.shuffle_buffer = shuffle_buffer
        self.cache_mode = self._resolve_cache_mode(cache)
        self.cache_file = self._cache_file(cache_dir) if self.cache_mode == "disk" else None
        self._cached = self._decoded()
        if self.cache_mode != "none":
            self._cached = self._cached.cache(self.cache_file or "")
        self.skipped_files = self._fill_cache_and_find_skipped()
        release_free_memory()
        self.num_examples = len(examples) - len(self.skipped_files)
        self._report_skipped(report_dir, max_skipped_fraction)

    # read -> decode -> resize: the part done once.
    def _decoded(self):
        image_size = self.image_size
        index = np.arange(len(self.examples), dtype=np.int32)
        if self.examples.images is not None:
            ds = tf.data.Dataset.from_tensor_slices((self.examples.images, self.examples.labels, index))
            return ds.map(lambda image, label, i: (
                preprocessing.resize_for_cache(image, image_size), label, i),
                num_parallel_calls=AUTOTUNE)

        def read_and_decode(path, label, i):
            image = preprocessing.decode_image(tf.io.read_file(path))
            return preprocessing.resize_for_cache(image, image_size), label, i

        ds = tf.data.Dataset.from_tensor_slices((self.examples.paths, self.examples.labels, index))
        ds = ds.map(read_and_decode, num_parallel_calls=AUTOTUNE)
        # Unreadable files (empty, truncated, not an image) are dropped here, found by index in
        # `_fill_cache_and_find_skipped` and reported; they never stop the run.
        return ds.ignore_errors()

    def _resolve_cache_mode(self, cache):
        if cache != "auto":
            return cache
        size = preprocessing.cache_size(self.image_size)
        needed = len(self.examples) * size * size * 3
        mode = "memory" if needed <= available_memory_bytes() / 2 else "disk"
        logging.info("Cache: %s (%.2f GB of decoded images)", mode, needed / 1e9)
        return mode

    def _cache_file(self, cache_dir):
        # Named after the content, so a cache made for other files or another size is never reused.
        digest = hashlib.sha1(str(self.image_size).encode())
        digest.update(self.examples.labels.tobytes())
        if self.examples.paths is not None:
            digest.update("\n".join(self.examples.paths).encode())
        else:
            digest.update(np.ascontiguousarray(self.examples.images).tobytes())
        cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "googlenet-tf-cache")
        os.makedirs(cache_dir, exist_ok=True)
        path = os.path.join(cache_dir, f"images-{self.image_size}px-{digest.hexdigest()[:16]}")
        # A run killed while writing the cache leaves a lock file that would block every later run.
        for lock in glob.glob(glob.escape(path) + "*.lockfile"):
            os.remove(lock)
        return path

    def _fill_cache_and_find_skipped(self):
        seen = np.zeros(len(self.examples), dtype=bool)
        for batch in self._cached.map(lambda image, label, i: i).batch(4096).prefetch(2):
            seen[batch.numpy()] = True
        if self.examples.paths is None:
            return []
        return list(self.examples.paths[~seen])

    def _report_skipped(self, report_dir, max_skipped_fraction):
        skipped = self.skipped_files
        if report_dir and (skipped or os.path.exists(os.path.join(report_dir, "skipped_files.txt"))):
            os.makedirs(report_dir, exist_ok=True)
            with open(os.path.join(report_dir, "skipped_files.txt"), "w") as f:
                f.writelines(p + "\n" for p in skipped)
        if not skipped:
            return
        where = f" (full list in {os.path.join(report_dir, 'skipped_files.txt')})" if report_dir else ""
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        if len(skipped) > max_skipped_fraction * len(self.examples):
            raise ValueError(
                f"{len(skipped)} of {len(self.examples)} image files could not be read or decoded"
                f"{where}, e.g. {shown}. Is the data directory right?")
        logging.warning("Skipped %d of %d files that are not readable images%s: %s",
                        len(skipped), len(self.examples), where, shown)

    # cache -> shuffle -> augment -> batch -> prefetch: the part done every epoch.
    def dataset(self, batch_size, *, epoch=0, num_epochs=1, take_batches=None, skip_batches=0,
                drop_remainder=None):
        """Epochs `epoch` .. `epoch + num_epochs - 1` of (float32 images [B, S, S, 3] in [-1, 1],
        int32 labels [B]), each batched on its own; `num_epochs=None` goes on for ever.

        Epoch e's order and crops are a function of (seed, e) alone, so a resumed run sees the
        epochs an uninterrupted one would. One dataset spanning every epoch of a run means one
        iterator, instead of a new one (and its set-up pause) per epoch. `take_batches` cuts each
        epoch; `skip_batches` skips the start of the first (a run resumed mid-epoch).
        """
        last = 2 ** 62 if num_epochs is None else epoch + num_epochs
        cached, training, base_seed = self._cached, self.training, self._base_seed
        image_size, augmentation = self.image_size, self.augmentation
        buffer = max(1, min(self.num_examples, self.shuffle_buffer))
        drop_remainder = self.training if drop_remainder is None else drop_remainder

        def one_epoch(e):
            # Epoch e's order must come from (seed, e) alone. A global TF seed (--deterministic
            # sets one) would otherwise enter the shuffle's seed pair, and at 0 TF cannot combine
            # it with this tensor seed at all ("symbolic tf.Tensor as a Python bool").
            tf.compat.v1.get_default_graph().seed = None
            ds = cached.map(lambda image, label, i: (image, label))
            if training:
                epoch_seed = base_seed * 1_000_003 + e
                ds = ds.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)
                # augment, batched: each image gets its own crop, flip and jitter, drawn from
                # (seed, epoch, batch) and applied to the whole batch in a few vectorised ops.
                ds = ds.batch(batch_size, drop_remainder=drop_remainder).enumerate().map(
                    lambda i, batch: (preprocessing.apply_augmentation(
                        batch[0], preprocessing.sample_augmentation(
                            tf.shape(batch[0])[0], tf.stack([epoch_seed, i]), augmentation),
                        image_size, augmentation), batch[1]),
                    num_parallel_calls=AUTOTUNE)
            else:
                ds = ds.map(lambda image, label: (preprocessing.eval_crop(image, image_size),
                                                  label), num_parallel_calls=AUTOTUNE)
                ds = ds.batch(batch_size, drop_remainder=drop_remainder)
            if take_batches is not None:
                # repeat(): a worker whose shard lost files to decoding errors still gives the
                # agreed number of batches.
                ds = ds.repeat().take(take_batches)
            return ds.skip(tf.where(e == epoch, tf.constant(skip_batches, tf.int64), 0))

        return tf.data.Dataset.range(epoch, last).flat_map(one_epoch).prefetch(AUTOTUNE)

    def steps_per_epoch(self, batch_size):
        return (self.num_examples // batch_size if self.training
                else -(-self.num_examples // batch_size))


def build_dataset(examples, *, image_size, batch_size, training, cache="auto", cache_dir=None,
                  seed=None, shard=None, drop_remainder=None, report_dir=None,
                  augmentation=Augmentation(), epoch=0):
    """One epoch of `examples` as a tf.data.Dataset; see `InputPipeline` to reuse the cache."""
    pipeline = InputPipeline(examples, image_size=image_size, training=training, cache=cache,
                             cache_dir=cache_dir, seed=seed, shard=shard,
                             augmentation=augmentation, report_dir=report_dir)
    return pipeline.dataset(batch_size, epoch=epoch, drop_remainder=drop_remainder)
