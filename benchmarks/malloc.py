"""glibc's malloc under the training step as train.py feeds it: through a distributed iterator.

    python benchmarks/malloc.py                    # googlenet_bn x0.25, 64 px, generated JPEGs
    python benchmarks/malloc.py --dataset=tiny_imagenet --data_dir=tiny-imagenet-200 --classes=20

The step, train.py's with the Tiny ImageNet recipe (built as the trainer builds it,
training/builder.py; float32), takes batches from the real input pipeline (memory cache, Tiny
ImageNet's augmentation, on the host) through `distribute_datasets_from_function`, as
training/loop.py does.
Each setting runs in its own process (malloc's settings and TensorFlow's change to them hold for
the whole process) and is timed in --windows windows of --steps steps after --warmup, so a
setting whose cost grows as the heap ages shows it:
  default        glibc as it comes, capped at 2 arenas (train.py before host/runtime.py
                 kept freed memory)
  tf_threshold   configure_malloc() as the entry points call it, then the iterator made with plain
                 iter(): TensorFlow (2.21, on Python 3.11) sets the mmap threshold to 128 KB
  entry_points   the same with the iterator from training/devices.distributed_iterator, which
                 sets it back: what train.py, evaluate.py and predict.py do
Reported per window: ms a step, minor page faults a step, the CPU's busy cores and the kernel's
share of them; then the resident memory, and each setting's speed-up against the default.
"""
import argparse
import os
import resource
import shutil
import tempfile
import time

from harness import (  # benchmarks/harness.py
    argument_parser,
    child_result,
    print_for_parent,
    step_config,
    towers_and_state,
    write_json,
)

SETTINGS = ("default", "tf_threshold", "entry_points")


def measure(args, setting):
    from host import runtime
    if setting == "default":
        import ctypes
        # The arena cap alone, as train.py set it before configure_malloc.
        ctypes.CDLL("libc.so.6").mallopt(runtime.M_ARENA_MAX, 2)
    else:
        runtime.configure_malloc()
    import input_pipeline
    from settings.recipes import get_recipe
    from training import builder, devices

    examples, classes, root = load_examples(args)
    try:
        pipeline = input_pipeline.InputPipeline(
            examples, image_size=args.image_size, training=True, cache="memory", seed=0,
            augmentation=get_recipe("tiny_imagenet").augmentation)
    finally:
        if root:
            shutil.rmtree(root, ignore_errors=True)
    config = step_config(args.model, classes, args.image_size, args.batch_size,
                         dataset="tiny_imagenet", width_multiplier=args.width_multiplier,
                         augment_on="host")
    towers, state = towers_and_state(config, devices.configure_towers(), "float32",
                                     pipeline.num_examples // args.batch_size)
    steps = builder.build_steps(config, towers, state, train=pipeline)
    step = steps.train

    def dataset_fn(ctx):
        return pipeline.dataset(towers.per_tower_batch, num_epochs=None,
                                augment_on=steps.augment_on)
    if setting == "entry_points":
        batches = devices.distributed_iterator(towers.strategy, dataset_fn)
    else:
        batches = iter(towers.strategy.distribute_datasets_from_function(dataset_fn))

    def window(steps):
        usage, cpu = resource.getrusage(resource.RUSAGE_SELF), os.times()
        start = time.perf_counter()
        for i in range(steps):
            result = step(*next(batches))
            if (i + 1) % 20 == 0:  # as train.py reads its losses: a sync every few steps
                result["total_loss"].numpy()
        result["total_loss"].numpy()
        seconds = time.perf_counter() - start
        usage_after, cpu_after = resource.getrusage(resource.RUSAGE_SELF), os.times()
        busy = cpu_after.user + cpu_after.system - cpu.user - cpu.system
        return dict(ms=1000 * seconds / steps,
                    faults=(usage_after.ru_minflt - usage.ru_minflt) / steps,
                    cores=busy / seconds, kernel=(cpu_after.system - cpu.system) / seconds)
    window(args.warmup)
    windows = [window(args.steps) for _ in range(args.windows)]
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024
    return dict(windows=windows, rss_bytes=rss, train_images=pipeline.num_examples,
                classes=classes)


def load_examples(args):
    """(training examples, classes, a temporary folder to delete or None): the first --classes
    classes of --dataset, or generated JPEGs."""
    import numpy as np

    import input_pipeline
    from input_pipeline.examples import Examples
    if args.dataset:
        train = input_pipeline.load_dataset(args.dataset, args.data_dir).train
        keep = np.flatnonzero(train.labels < args.classes)
        return train.subset(keep), int(train.labels[keep].max()) + 1, None
    from pipeline import write_jpegs  # benchmarks/pipeline.py
    root = tempfile.mkdtemp(prefix="malloc-bench-")
    paths, labels = write_jpegs(root, args.num_images, args.source_size, args.classes)
    return Examples(labels, paths=paths), args.classes, root


def main():
    parser = argument_parser(__doc__, source_size=256, model="googlenet_bn",
                             width_multiplier=0.25, image_size=64, batch_size=64, warmup=30)
    parser.add_argument("--dataset", help="a dataset name (input_pipeline's registry); "
                                          "default: generated JPEGs")
    parser.add_argument("--data_dir")
    parser.add_argument("--classes", type=int, default=20,
                        help="the dataset's first N classes, or N generated ones")
    parser.add_argument("--num_images", type=int, default=4000, help="generated JPEGs")
    parser.add_argument("--steps", type=int, default=100, help="steps in a window")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dataset and not args.data_dir:
        parser.error("--dataset needs --data_dir")
    if args.child:
        print_for_parent(measure(args, args.child))
        return
    results = {name: child_result(__file__, f"--child={name}") for name in SETTINGS}
    base = sum(w["ms"] for w in results["default"]["windows"])
    first = results["default"]
    print(f"{args.model} x{args.width_multiplier}, {args.image_size} px, batch {args.batch_size}, "
          f"{first['train_images']} training images of {first['classes']} classes, "
          f"{os.cpu_count()} cores; {args.windows} windows of {args.steps} steps")
    for name, result in results.items():
        windows = result["windows"]
        result["speedup"] = base / sum(w["ms"] for w in windows)
        print(f"{name:<14} ms/step " + " ".join(f"{w['ms']:6.1f}" for w in windows)
              + "  faults/step " + " ".join(f"{w['faults']:7.0f}" for w in windows)
              + "  kernel/busy cores " + " ".join(f"{w['kernel']:.2f}/{w['cores']:.2f}"
                                                  for w in windows)
              + f"  RSS {result['rss_bytes'] / 2 ** 20:,.0f} MB  speed-up {result['speedup']:.2f}x")
    write_json(args.json, dict(vars(args), settings=results))


if __name__ == "__main__":
    main()
