"""Where the decoded images live between epochs: one array in memory, one file of fixed-size raw
records on disk, or one file of JPEG records re-encoded at the cache size. All are read by index,
a batch at a time.

Reading by index is what lets every epoch visit the images in a uniform random permutation of the
whole set, with no shuffle buffer: the order is a permutation of record numbers, and a batch is
gathered from wherever its images are. A `tf.data` cache, read front to back, can only be mixed by
a buffer, and a 10,000-image buffer over a class-sorted file of 50,000 images gives batches of two
or three classes at a time: a slow sweep through the classes (docs/design.md, "The stores and the
per-epoch permutation").

Costs. Memory: exactly the decoded bytes (N x C x C x 3 uint8, C = cache size), preallocated, so
there is no allocator overhead and no growth. Disk: the same bytes in a file, read back with one
`pread` per image into the batch; memory use is a few batches whatever the data size, and the
operating system's page cache keeps the file in RAM when there is room. Random reads need fast
random access (an SSD or RAM); on a spinning disk put `--cache_dir` on an SSD.
Compact disk (`JpegDiskStore`): each cached square re-encoded as a JPEG at quality
`JPEG_QUALITY` without chroma subsampling: a fraction of the bytes of raw pixels (at 224-px input
raw pixels would make ImageNet's cache larger than its own JPEGs); reading it costs a JPEG decode
of the small square per image and epoch. benchmarks/cache_cost.py measures both;
docs/benchmarks.md, "What each cache costs", has the figures.

A disk store is written under a temporary name and renamed when complete, then its index (which
example each record holds) is written last: a run killed while filling it leaves nothing that a
later run would mistake for a cache, and a complete one is reused by any run over the same files.

Which store a pipeline uses (`choose_cache_mode`) and what a disk store's file is called
(`cache_file`) are decided here too, from the examples and the cache size alone.
"""
import glob
import hashlib
import os
import tempfile
from typing import Optional

import numpy as np
from absl import logging

from host import disk_space
from input_pipeline import preprocessing
from input_pipeline.examples import Examples

# memory: raw pixels in RAM; disk: raw pixels in a file; disk_jpeg: re-encoded JPEGs in a file
# (a fraction of the bytes, a decode per read); none: the original files every epoch. auto chooses
# by cost, see choose_cache_mode.
CACHE_MODES = ("auto", "memory", "disk", "disk_jpeg", "none")
_SOURCE_SAMPLE = 1000  # files whose sizes estimate the data's bytes on disk
INDEX_SUFFIX = ".index.npy"
PARTIAL = ".partial-"
# High enough that the re-encoding moves no pixel far (benchmarks/cache_cost.py; docs/benchmarks.md,
# "What each cache costs"): 4:4:4 colour keeps the chroma of small squares.
JPEG_QUALITY = 95


class MemoryStore:
    """Decoded images in one preallocated uint8 array [capacity, C, C, 3]."""

    def __init__(self, capacity, image_shape):
        self._images = np.empty((capacity, *image_shape), np.uint8)
        self._count = 0
        self._indices = []
        self.example_index = None  # set by `finish`: the example each record holds

    def append(self, images, example_index):
        n = len(images)
        self._images[self._count:self._count + n] = images
        self._count += n
        self._indices.append(np.asarray(example_index, np.int64))

    def finish(self):
        self.example_index = _concatenate(self._indices)
        self._images = self._images[:self._count]
        return self

    @property
    def nbytes(self):
        return self._images.nbytes

    def read(self, records):
        """uint8 [len(records), C, C, 3], in the order given."""
        return self._images[np.asarray(records, np.int64)]


class DiskStore:
    """Decoded images as fixed-size records in one file, plus an index file written last."""

    def __init__(self, path, image_shape):
        self.path = path
        self.image_shape = tuple(image_shape)
        self.record_bytes = int(np.prod(image_shape))
        self.example_index = None
        self._fd = None
        self._partial = None

    # -- reuse -------------------------------------------------------------------------------
    @classmethod
    def open_complete(cls, path, image_shape):
        """The finished store at `path`, or None if there is none (or only a partial one)."""
        _remove_abandoned_partials(path)
        store = cls(path, image_shape)
        if not (os.path.exists(path) and os.path.exists(path + INDEX_SUFFIX)):
            return None
        try:
            index = np.load(path + INDEX_SUFFIX)
        except (OSError, ValueError):
            return None
        if not store._accept_index(index, os.path.getsize(path)):
            return None
        store._fd = os.open(path, os.O_RDONLY)
        return store

    def _accept_index(self, index, file_bytes):
        """Takes a saved index if it matches the file (a complete store); False otherwise."""
        if index.ndim != 1 or file_bytes != len(index) * self.record_bytes:
            return False
        self.example_index = index.astype(np.int64)
        return True

    def _saved_index(self):
        return self.example_index

    # -- writing -----------------------------------------------------------------------------
    def start(self):
        _remove_abandoned_partials(self.path)
        for stale in (self.path + INDEX_SUFFIX, self.path):  # an incomplete or mismatched one
            if os.path.exists(stale):
                os.remove(stale)
        self._partial = f"{self.path}{PARTIAL}{os.getpid()}"
        self._writer = open(self._partial, "wb")
        self._indices = []
        return self

    def append(self, images, example_index):
        self._writer.write(np.ascontiguousarray(images, np.uint8).tobytes())
        self._indices.append(np.asarray(example_index, np.int64))

    def finish(self):
        self._writer.close()
        os.replace(self._partial, self.path)
        self.example_index = _concatenate(self._indices)
        tmp = f"{self.path}{PARTIAL}{os.getpid()}{INDEX_SUFFIX}"
        np.save(tmp, self._saved_index())
        os.replace(tmp, self.path + INDEX_SUFFIX)
        self._fd = os.open(self.path, os.O_RDONLY)
        return self

    def abandon(self):
        """Removes a store left half-written by an error during the fill."""
        if self._partial:
            self._writer.close()
            if os.path.exists(self._partial):
                os.remove(self._partial)

    def delete(self):
        """Removes a finished store (its data was found unusable)."""
        self.close()
        for path in (self.path + INDEX_SUFFIX, self.path):
            if os.path.exists(path):
                os.remove(path)

    # -- reading -----------------------------------------------------------------------------
    def __len__(self):
        return len(self.example_index)

    @property
    def nbytes(self):
        return len(self) * self.record_bytes

    def read(self, records):
        records = np.asarray(records, np.int64)
        out = np.empty((len(records), *self.image_shape), np.uint8)
        flat = out.reshape(len(records), self.record_bytes)
        for k, record in enumerate(records):
            got = _read_into(self._fd, flat[k], int(record) * self.record_bytes)
            if got != self.record_bytes:
                raise self._cut_short(record)
        return out

    def _cut_short(self, record):
        return OSError(f"The disk cache {self.path} is shorter than its index says "
                       f"(record {record}); delete it and run again")

    def close(self):
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def __del__(self):
        self.close()


class JpegDiskStore(DiskStore):
    """Each image as a JPEG at the cache size, one after another in one file; the index holds
    (example, offset, length) per record. `append` takes encoded bytes; `read` gives them back
    (the pipeline decodes them, batched, in TensorFlow)."""

    def __init__(self, path, image_shape):
        super().__init__(path, image_shape)
        self._spans = None  # int64 [N, 2]: offset, length

    def _accept_index(self, index, file_bytes):
        if index.ndim != 2 or index.shape[1] != 3 or len(index) == 0:
            return False
        if int(index[-1, 1] + index[-1, 2]) != file_bytes:
            return False
        self.example_index = index[:, 0].astype(np.int64)
        self._spans = index[:, 1:].astype(np.int64)
        return True

    def start(self):
        super().start()
        self._lengths = []
        return self

    def append(self, encoded, example_index):
        for data in encoded:
            self._writer.write(data)
            self._lengths.append(len(data))
        self._indices.append(np.asarray(example_index, np.int64))

    def finish(self):
        lengths = np.asarray(self._lengths, np.int64)
        self._spans = np.stack([np.cumsum(lengths) - lengths, lengths], axis=1)
        return super().finish()

    def _saved_index(self):
        return np.concatenate([self.example_index[:, None], self._spans], axis=1)

    @property
    def nbytes(self):
        return int(self._spans[:, 1].sum()) if len(self._spans) else 0

    def read(self, records):
        """The encoded images of `records`, as an object array of bytes, in the order given."""
        out = np.empty(len(records), object)
        for k, record in enumerate(np.asarray(records, np.int64)):
            offset, length = self._spans[record]
            data = os.pread(self._fd, int(length), int(offset))
            if len(data) != length:
                raise self._cut_short(record)
            out[k] = data
        return out


def _concatenate(indices):
    return np.concatenate(indices) if indices else np.zeros((0,), np.int64)


def _read_into(fd, buffer, offset):
    """Reads len(buffer) bytes at `offset` straight into `buffer`; the byte count read."""
    if hasattr(os, "preadv"):  # Linux, BSD: no intermediate copy
        return os.preadv(fd, [memoryview(buffer)], offset)
    data = os.pread(fd, len(buffer), offset)
    buffer[:len(data)] = np.frombuffer(data, np.uint8)
    return len(data)


def _remove_abandoned_partials(path):
    """Partial files of processes that are gone (killed while filling the cache)."""
    for partial in glob.glob(glob.escape(path) + PARTIAL + "*"):
        pid = partial[len(path) + len(PARTIAL):].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            os.remove(partial)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- which store, and its name -------------------------------------------------------------------
def available_memory_bytes() -> int:
    """The memory the system can give this process without swapping (MemAvailable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def free_disk_bytes(directory: str) -> int:
    """Free bytes on the file system that holds `directory` (or its nearest existing parent)."""
    return disk_space.free_bytes(directory)


def source_bytes(examples: Examples) -> float:
    """The data's own size: the in-memory arrays, or the files' sizes (from a sample of up to
    _SOURCE_SAMPLE of them, so a million-file set costs a thousand stat calls)."""
    if examples.paths is None:
        return examples.images.nbytes
    paths = examples.paths
    sample = paths[np.linspace(0, len(paths) - 1, min(len(paths), _SOURCE_SAMPLE)).astype(int)]
    sizes = []
    for path in sample:
        try:
            sizes.append(os.path.getsize(path))
        except OSError:
            pass
    return float(np.mean(sizes)) * len(paths) if sizes else 0.0


def cache_dir_or_default(cache_dir: Optional[str]) -> str:
    """`cache_dir`, or a directory under the system's temporary directory."""
    return cache_dir or os.path.join(tempfile.gettempdir(), "googlenet-tf-cache")


def choose_cache_mode(cache: str, examples: Examples, cache_size: int,
                      cache_dir: Optional[str]) -> str:
    """`cache` (one of CACHE_MODES), or for auto the cheapest that fits: RAM if the decoded
    images take at most half the free memory (fastest); else raw pixels on disk if they are no
    bigger than the data itself and take at most half the free disk; else JPEGs on disk (fewer
    bytes, a decode per read; docs/benchmarks.md, "What each cache costs", measures both)."""
    if cache != "auto":
        return cache
    decoded = len(examples) * cache_size * cache_size * 3
    if decoded <= available_memory_bytes() / 2:
        mode = "memory"
    elif (decoded <= source_bytes(examples)
          and decoded <= free_disk_bytes(cache_dir_or_default(cache_dir)) / 2):
        mode = "disk"
    else:
        mode = "disk_jpeg"
    logging.info("Cache: %s (%.2f GB of decoded images)", mode, decoded / 1e9)
    return mode


def cache_file(examples: Examples, image_size: int, cache_size: int, cache_mode: str,
               cache_dir: Optional[str]) -> str:
    """The path of the disk store of `examples` at `cache_size` (its directory is made)."""
    # Named after the content, so a cache made for other files or another size is never reused.
    digest = hashlib.sha1(str(image_size).encode())
    if cache_size != preprocessing.cache_size(image_size):  # a "pad" crop's cache
        digest.update(f"{cache_size}px".encode())
    digest.update(examples.labels.tobytes())
    if examples.paths is not None:
        digest.update("\n".join(examples.paths).encode())
    else:
        digest.update(np.ascontiguousarray(examples.images).tobytes())
    cache_dir = cache_dir_or_default(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    suffix = f"jpg{JPEG_QUALITY}" if cache_mode == "disk_jpeg" else "u8"
    return os.path.join(cache_dir, f"images-{image_size}px-{digest.hexdigest()[:16]}.{suffix}")
