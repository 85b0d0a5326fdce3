"""How well an epoch's order mixes the classes, on a real dataset: the class mix of the first
batches of two epochs, against what uniform sampling gives.

    python benchmarks/epoch_order.py --dataset=tiny_imagenet --data_dir=~/data/tiny-imagenet-200
    python benchmarks/epoch_order.py --dataset=folder --data_dir=~/photos --cache=disk

Reads the training split as train.py does (same reader, split and pipeline), then for epochs 1 and
2 prints the first batch's class histogram, how many classes it holds, its chi-square statistic
against the class frequencies and a Monte-Carlo p-value (the share of 20,000 uniformly drawn
batches of the same size with a statistic at least as large; the chi-square approximation is poor
when, as for 200 classes in a batch of 64, most expected counts are below 1), and how many
classes the first ten batches hold. A class-sorted order read through a buffer smaller than the
data shows p ~ 0 and a handful of classes. `--time_epoch` also reads one whole epoch (no model) and
prints its img/s and the process's peak resident memory, to compare the cache modes' costs.
"""
import os
import resource
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads

import numpy as np

from harness import argument_parser, write_json  # benchmarks/harness.py


def chi_square(counts, expected):
    return float(np.sum((counts - expected) ** 2 / expected))


def monte_carlo_p(statistic, frequencies, batch, draws=20_000, seed=0):
    rng = np.random.default_rng(seed)
    expected = frequencies * batch
    samples = rng.multinomial(batch, frequencies, size=draws)
    stats = np.sum((samples - expected) ** 2 / expected, axis=1)
    return float(np.mean(stats >= statistic))


def main():
    parser = argument_parser(__doc__, image_size=32, batch_size=64, seed=0)
    parser.add_argument("--dataset", default="tiny_imagenet")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--cache", default="memory",
                        choices=["memory", "disk", "disk_jpeg", "none"])
    parser.add_argument("--test_fraction", type=float, default=0.3)
    parser.add_argument("--time_epoch", action="store_true",
                        help="also time one whole epoch and report the peak RSS")
    args = parser.parse_args()

    import input_pipeline
    splits = input_pipeline.load_dataset(args.dataset, os.path.expanduser(args.data_dir),
                                         test_fraction=args.test_fraction, seed=args.seed)
    start = time.perf_counter()
    cache_dir = tempfile.mkdtemp(prefix="epoch-order-")
    try:
        pipeline = input_pipeline.InputPipeline(
            splits.train, image_size=args.image_size, training=True, cache=args.cache,
            seed=args.seed, cache_dir=cache_dir)
        measure(args, pipeline, splits, time.perf_counter() - start)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def measure(args, pipeline, splits, fill_seconds):
    train, classes = splits.train, splits.num_classes
    frequencies = np.bincount(train.labels, minlength=classes) / len(train)
    print(f"{args.dataset}: {len(train):,} training images, {classes} classes, files in class "
          f"order: {bool(np.all(np.diff(train.labels) >= 0))}; cache ({args.cache}) filled in "
          f"{fill_seconds:.0f} s")
    results = []
    for epoch in range(2):
        labels = []
        for _, batch_labels in pipeline.dataset(args.batch_size, epoch=epoch).take(10):
            labels.append(batch_labels.numpy())
        first = labels[0]
        counts = np.bincount(first, minlength=classes)
        statistic = chi_square(counts, frequencies * len(first))
        p = monte_carlo_p(statistic, frequencies, len(first))
        uniform_distinct = classes * (1 - (1 - 1 / classes) ** len(first))
        result = dict(epoch=epoch + 1, first_batch_classes=int(np.count_nonzero(counts)),
                      uniform_expected_classes=round(uniform_distinct, 1),
                      chi_square=round(statistic, 1), degrees_of_freedom=classes - 1,
                      monte_carlo_p=p,
                      first_10_batches_classes=int(len(np.unique(np.concatenate(labels)))),
                      first_batch_histogram={int(c): int(n) for c, n in enumerate(counts) if n})
        results.append(result)
        print(f"epoch {epoch + 1}: first batch of {len(first)} holds "
              f"{result['first_batch_classes']} classes (uniform: {uniform_distinct:.1f}); "
              f"chi-square {statistic:.1f} on {classes - 1} df, Monte-Carlo p = {p:.4f}; "
              f"first 10 batches hold {result['first_10_batches_classes']} classes")
        print(f"  histogram (class: count): {result['first_batch_histogram']}")
    timing = {}
    if args.time_epoch:
        batches = iter(pipeline.dataset(args.batch_size, epoch=2))
        next(batches)
        start, seen = time.perf_counter(), args.batch_size
        for _, batch_labels in batches:
            seen += len(batch_labels)
        rate = seen / (time.perf_counter() - start)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        timing = dict(epoch_img_per_s=rate, peak_rss_bytes=peak)
        print(f"one epoch from the {args.cache} cache: {rate:,.0f} img/s; peak RSS of the "
              f"process {peak / 1e9:.2f} GB; {pipeline.describe_cache()}")
    write_json(args.json, dict(vars(args), results=results, fill_seconds=fill_seconds, **timing))


if __name__ == "__main__":
    main()
