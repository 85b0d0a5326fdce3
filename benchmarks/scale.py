"""How the cost of the input path grows with the data: N = 10,000, 50,000 and 200,000 images.

    python benchmarks/scale.py                                   # all three sizes, three caches
    python benchmarks/scale.py --sizes=10000,50000 --caches=disk_jpeg --json=scale.json
    python benchmarks/scale.py --page_cache=warm                 # files read just before

Class-sorted generated JPEG folders (benchmarks/collection.py: photo-like, 256-400 px, made once
under --root and reused), 64-px input. Each (N, cache) runs in its own process through the real
train.py path: the folder reader and the split (`input_pipeline.load_dataset`), the first pass
that decodes and caches the training and held-out images (`InputPipeline`), the model, one
training step (`training.loop.Trainer`, minigooglenet x0.25, batch 64), then one more epoch of
the training pipeline alone. It reports, per run:
  - seconds to list and split; first-pass img/s (training subset); seconds from the process's
    start to the end of the first training step (TensorFlow's import included);
  - during the first pass: the cores this process kept busy (its CPU seconds over the wall
    seconds), the cores the whole machine kept busy (other processes included) and the share of
    CPU time the hypervisor took away (steal, from /proc/stat): what tells a first pass slowed by
    its own pipeline (few cores busy) from one slowed by the machine (steal, or other processes);
  - cache bytes per image (memory: resident-memory growth over the fill; disk: bytes on disk)
    and the process's peak resident memory;
  - epochs 2+ img/s of the input pipeline alone (no model; 150,000 images or one epoch, from
    the first batch);
  - the class mix of the epoch's first batch: chi-square statistic against the class frequencies
    and its Monte-Carlo p-value (uniform sampling gives p spread over (0, 1); a sweep through
    the sorted classes gives p ~ 0);
  - bytes the first pass fetched from the disk (/proc/self/io), as a share of its files' bytes:
    about 1 when it read cold files, about 0 when they came from the page cache.
and checks the targets: per-image costs within 1.3x between the smallest and largest N, peak
memory with a disk cache within 1.3x across N, memory cache at most 1.5x the decoded bytes.
The page cache is set before every run (`--page_cache`):
  - cold (the default): every file of the N is dropped from the page cache
    (posix_fadvise DONTNEED), as on a user's first run over a collection, or over any collection
    larger than the machine's memory (ImageNet's 140 GB). Before each N, the files are read once,
    timed (the disk's cold read rate), and dropped again.
  - warm: every file of the N is read just before each run.
A warm page cache cannot be promised: the kernel may reclaim it behind the process's back (the
2-core VM of docs/benchmarks.md, "Cost as the data grows", runs DAMON, which pages out file pages
left untouched for a minute), so the disk-bytes column says which state each run met.
The disk caches live in a temporary directory on the same disk as --root.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

STARTED = time.perf_counter()  # the child's clock for "seconds to the first step"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from collection import make_collection, subset_view  # noqa: E402 (benchmarks/collection.py)
from epoch_order import chi_square, monte_carlo_p  # noqa: E402 (benchmarks/epoch_order.py)

from harness import argument_parser, print_for_parent, write_json  # noqa: E402 (benchmarks/)

CLASSES = 100
EPOCH_IMAGES = 150_000  # images read to time epochs 2+ (several epochs of the small sets)
TARGET_PER_IMAGE = 1.3
TARGET_MEMORY_OVER_DECODED = 1.5


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def cpu_jiffies():
    """Machine-wide (busy, steal, total) CPU time from /proc/stat, in clock ticks."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    total = sum(fields[:8])
    return total - idle - steal, steal, total


def disk_read_bytes():
    """Bytes this process has caused to be fetched from storage (page-cache hits excluded)."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("read_bytes:")).split()[1])


def measure(data_dir, cache, image_size, batch_size):
    """One (N, cache) run, in this process; a dict of figures."""
    from host.runtime import configure_malloc
    configure_malloc()  # as train.py does
    import input_pipeline
    from input_pipeline import preprocessing
    from rundir.recorded import resolve_config
    from training.loop import Trainer

    timings = {}
    load_dataset, pipeline_class = input_pipeline.load_dataset, input_pipeline.InputPipeline

    def timed_load(*args, **kwargs):
        start = time.perf_counter()
        splits = load_dataset(*args, **kwargs)
        timings.setdefault("list_and_split_seconds", time.perf_counter() - start)
        return splits

    def timed_pipeline(examples, **kwargs):
        before, start = rss_bytes(), time.perf_counter()
        cpu_before, machine_before = time.process_time(), cpu_jiffies()
        disk_before = disk_read_bytes()
        pipeline = pipeline_class(examples, **kwargs)
        if kwargs.get("training"):
            seconds = time.perf_counter() - start
            busy, steal, total = (b - a for a, b in zip(machine_before, cpu_jiffies()))
            ticks = os.sysconf("SC_CLK_TCK")
            timings.update(first_pass_seconds=seconds,
                           first_pass_images_per_second=len(examples) / seconds,
                           fill_rss_growth=rss_bytes() - before,
                           first_pass_cores_busy=(time.process_time() - cpu_before) / seconds,
                           first_pass_machine_cores_busy=busy / ticks / seconds,
                           first_pass_steal_fraction=steal / max(total, 1),
                           first_pass_disk_share=(disk_read_bytes() - disk_before) / sum(
                               os.path.getsize(p) for p in examples.paths))
        return pipeline

    input_pipeline.load_dataset, input_pipeline.InputPipeline = timed_load, timed_pipeline
    scratch = tempfile.mkdtemp(prefix="scale-", dir=os.path.dirname(data_dir))
    try:
        config = resolve_config(dict(
            dataset="folder", data_dir=data_dir, run_dir=os.path.join(scratch, "run"),
            cache=cache, cache_dir=os.path.join(scratch, "cache"), model="minigooglenet",
            width_multiplier=0.25, image_size=image_size, batch_size=batch_size, epochs=2))
        trainer = Trainer(config, print_fn=lambda *a: None)
        images, labels = next(trainer.run_dataset(0))
        trainer.steps.train(images, labels)["total_loss"].numpy()
        first_step = time.perf_counter() - STARTED

        train = trainer.data.train
        # Epochs 2+ as training reads them: one dataset over enough epochs for EPOCH_IMAGES
        # images, timed from its first batch (so start-up is not charged to small N).
        epochs = max(1, -(-EPOCH_IMAGES // train.num_examples))
        batches = iter(train.dataset(batch_size, epoch=1, num_epochs=epochs))
        first_labels = next(batches)[1].numpy()
        count, start = 0, time.perf_counter()
        for x, y in batches:
            count += int(y.shape[0])
        epoch_seconds = time.perf_counter() - start
        frequencies = np.bincount(train.examples.labels, minlength=CLASSES) / len(train.examples)
        statistic = chi_square(np.bincount(first_labels, minlength=CLASSES),
                               frequencies * len(first_labels))
        size = preprocessing.cache_size(image_size)
        store_bytes = train.cache_bytes
        cache_bytes = timings["fill_rss_growth"] if cache == "memory" else store_bytes
        return dict(
            n=len(trainer.splits.train) + len(trainer.splits.test), cache=train.cache_mode,
            train_images=train.num_examples, heldout_images=trainer.data.test.num_examples,
            list_and_split_seconds=timings["list_and_split_seconds"],
            first_pass_images_per_second=timings["first_pass_images_per_second"],
            first_pass_cores_busy=timings["first_pass_cores_busy"],
            first_pass_machine_cores_busy=timings["first_pass_machine_cores_busy"],
            first_pass_steal_fraction=timings["first_pass_steal_fraction"],
            first_pass_disk_share=timings["first_pass_disk_share"],
            seconds_to_first_step=first_step,
            cache_bytes_per_image=cache_bytes / train.num_examples,
            decoded_bytes_per_image=size * size * 3,
            peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            epoch2_images_per_second=count / epoch_seconds,
            first_batch_classes=int(len(set(first_labels.tolist()))),
            first_batch_chi_square=statistic,
            first_batch_p=monte_carlo_p(statistic, frequencies, len(first_labels)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def jpeg_paths(folder):
    return [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files
            if f.endswith(".jpg")]


def read_every_file(folder):
    """Reads every file under `folder` once, 16 at a time; (files, seconds, bytes)."""
    from concurrent.futures import ThreadPoolExecutor
    paths = jpeg_paths(folder)

    def read(path):
        with open(path, "rb") as f:
            return len(f.read())
    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        total = sum(pool.map(read, paths, chunksize=64))
    return len(paths), time.perf_counter() - start, total


def drop_from_page_cache(folder):
    """Evicts every file under `folder` from the operating system's page cache."""
    os.sync()  # dirty pages cannot be dropped
    for path in jpeg_paths(folder):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def spread(rows, key):
    values = [r[key] for r in rows]
    return max(values) / min(values)


def report(results):
    print(f"\n{'N':>8} {'cache':>9} | {'split s':>7} {'pass img/s':>10} {'cores':>11} "
          f"{'steal':>5} {'disk':>5} {'1st step s':>10} | "
          f"{'KB/img':>7} {'peak RSS GB':>11} | {'ep2+ img/s':>10} | {'classes':>7} "
          f"{'chi2':>6} {'p':>5}")
    for r in results:
        print(f"{r['n']:>8,} {r['cache']:>9} | {r['list_and_split_seconds']:7.1f} "
              f"{r['first_pass_images_per_second']:10,.0f} "
              f"{r['first_pass_cores_busy']:4.2f} of {r['first_pass_machine_cores_busy']:4.2f} "
              f"{r['first_pass_steal_fraction']:5.1%} {r['first_pass_disk_share']:5.2f} "
              f"{r['seconds_to_first_step']:10.1f} | "
              f"{r['cache_bytes_per_image'] / 1e3:7.1f} {r['peak_rss_bytes'] / 1e9:11.2f} | "
              f"{r['epoch2_images_per_second']:10,.0f} | {r['first_batch_classes']:7d} "
              f"{r['first_batch_chi_square']:6.1f} {r['first_batch_p']:5.2f}")
    checks = []
    for cache in sorted({r["cache"] for r in results}):
        rows = [r for r in results if r["cache"] == cache]
        if len(rows) > 1:
            for key in ("first_pass_images_per_second", "cache_bytes_per_image",
                        "epoch2_images_per_second"):
                checks.append((f"{cache}: {key} spread over N", spread(rows, key),
                               TARGET_PER_IMAGE))
            if cache != "memory":
                checks.append((f"{cache}: peak RSS spread over N", spread(rows, "peak_rss_bytes"),
                               TARGET_PER_IMAGE))
        if cache == "memory":
            for r in rows:
                checks.append((f"memory cache / decoded bytes, N={r['n']:,}",
                               r["cache_bytes_per_image"] / r["decoded_bytes_per_image"],
                               TARGET_MEMORY_OVER_DECODED))
    print()
    for name, value, target in checks:
        print(f"{name:<58} {value:5.2f}x  (target <= {target}x) "
              f"{'ok' if value <= target else 'MISSED'}")
    return checks


def main():
    parser = argument_parser(__doc__, image_size=64, batch_size=64)
    parser.add_argument("--root", default=os.path.expanduser("~/.cache/googlenet-tf/scale"))
    parser.add_argument("--sizes", default="10000,50000,200000")
    parser.add_argument("--caches", default="memory,disk,disk_jpeg")
    parser.add_argument("--page_cache", choices=("cold", "warm"), default="cold",
                        help="the collection's files before each run: dropped from the page "
                             "cache (cold) or read just before (warm)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "N,cache": measure in this process
    args = parser.parse_args()
    root = os.path.expanduser(args.root)
    if args.child:
        n, cache = args.child.split(",")
        print_for_parent(measure(subset_view(root, int(n), CLASSES), cache, args.image_size,
                                 args.batch_size))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    make_collection(root, max(sizes), CLASSES)
    results = []
    for n in sizes:
        view = subset_view(root, n, CLASSES)
        drop_from_page_cache(view)
        files, seconds, total = read_every_file(view)
        print(f"N={n:,}: read every file once from the disk: {files / seconds:,.0f} files/s, "
              f"{total / seconds / 1e6:,.0f} MB/s", flush=True)
        for cache in args.caches.split(","):
            if args.page_cache == "cold":
                drop_from_page_cache(view)
            else:
                read_every_file(view)
            # A fresh process per run: peak memory and the first step are its own.
            command = [sys.executable, os.path.abspath(__file__), f"--child={n},{cache}",
                       f"--root={root}", f"--image_size={args.image_size}",
                       f"--batch_size={args.batch_size}"]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            r = results[-1]
            print(f"N={n:,} {cache}: first pass {r['first_pass_images_per_second']:,.0f} img/s "
                  f"({r['first_pass_cores_busy']:.2f} cores busy of the machine's "
                  f"{r['first_pass_machine_cores_busy']:.2f}, steal "
                  f"{r['first_pass_steal_fraction']:.1%}, {r['first_pass_disk_share']:.2f} of its "
                  f"bytes from the disk), "
                  f"epochs 2+ {r['epoch2_images_per_second']:,.0f} img/s", flush=True)
    checks = report(results)
    write_json(args.json, {"page_cache": args.page_cache, "results": results,
                           "checks": [dict(name=n, value=v, target=t) for n, v, t in checks]})


if __name__ == "__main__":
    main()
