"""Time to a held-out accuracy on CIFAR-10: train.py beside model.fit on Keras' own input path.

    python benchmarks/time_to_accuracy.py --data_dir=CIFAR-10-images --thresholds=0.8,0.85

One run of each, one after the other on the same machine, with the cifar10 recipe
(training/recipes.py) on both sides:
  (a) ours:  python train.py --dataset=cifar10 --data_dir=... (the recipe's defaults; the command
      is printed);
  (b) Keras: the same model (`inception.build_model`) the way the Keras guides train CIFAR-10:
      `keras.utils.image_dataset_from_directory(shuffle=True)` on train/, RandomTranslation by up
      to 4 px (1/8 of the side, zero fill) and RandomFlip in the tf.data map, `model.fit` with the
      aux losses weighted 0.3, the recipe's optimiser (SGD, momentum 0.9, Nesterov), schedule
      (its warm-up and linear decay, training/optimization.EpochSchedule), label smoothing and L2
      weight decay on the conv and dense kernels; scored on test/ after every epoch.
`--data_dir` is the image-folder form (train/<class>/, test/<class>/), which both sides read.

The clock starts when the script launches each run's process, so a run's time to a threshold
includes its start-up and data loading (ours: the first pass) up to the end of the first epoch
whose held-out top-1 reaches it. Prints the per-epoch top-1 and the times, and writes them with
--json.
"""
import argparse
import os
import sys
import tempfile
import time

from keras_baseline import fit_and_score, run_train_py  # benchmarks/keras_baseline.py

from harness import (  # benchmarks/harness.py
    argument_parser,
    print_for_parent,
    run_child,
    write_json,
)


def recipe(args):
    """The cifar10 recipe's settings, with --epochs over its own when given."""
    from training.recipes import get_recipe
    settings = dict(get_recipe("cifar10").settings)
    if args.epochs:
        settings["epochs"] = args.epochs
    return settings


def run_ours(args, run_dir):
    """train.py with the recipe: per-epoch held-out top-1 and seconds since launch."""
    return run_train_py(["--dataset=cifar10", f"--data_dir={args.data_dir}",
                         f"--run_dir={run_dir}", f"--seed={args.seed}",
                         *([f"--epochs={args.epochs}"] if args.epochs else [])], run_dir)


def keras_path(args, started):
    """(b), in this process: per-epoch top-1 on test/ and seconds since `started`."""
    import keras
    import tensorflow as tf

    import inception
    from training.optimization import EpochSchedule
    settings = recipe(args)
    keras.utils.set_random_seed(args.seed)
    size, batch = 32, settings["batch_size"]
    train = keras.utils.image_dataset_from_directory(
        os.path.join(args.data_dir, "train"), image_size=(size, size), batch_size=batch,
        shuffle=True, seed=args.seed)
    test = keras.utils.image_dataset_from_directory(
        os.path.join(args.data_dir, "test"), image_size=(size, size), batch_size=batch,
        shuffle=False)
    augment = keras.Sequential([
        keras.layers.RandomTranslation(0.125, 0.125, fill_mode="constant", seed=args.seed),
        keras.layers.RandomFlip("horizontal", seed=args.seed),
        keras.layers.Rescaling(1 / 127.5, offset=-1.0)])
    rescale = keras.layers.Rescaling(1 / 127.5, offset=-1.0)
    autotune = tf.data.AUTOTUNE
    steps, num_classes = int(train.cardinality()), len(train.class_names)
    train = train.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=autotune)
    test = test.map(lambda x, y: (rescale(x), y), num_parallel_calls=autotune)
    net = inception.build_model(settings["model"], num_classes, size,
                                width_multiplier=settings.get("width_multiplier", 1.0))
    schedule = EpochSchedule(settings["lr"], settings["lr_schedule"], steps, settings["epochs"],
                             settings.get("warmup_epochs", 0))
    ended = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):  # after the epoch's validation
            ended.append(time.time() - started)
    result = fit_and_score(net, train, test,
                           keras.optimizers.SGD(schedule, momentum=0.9,
                                                nesterov=settings.get("nesterov", False)),
                           settings["epochs"], weight_decay=settings["weight_decay"],
                           label_smoothing=settings.get("label_smoothing", 0.0),
                           callbacks=[Clock()])
    return dict(top1=result["top1"], epoch_end=ended)


def run_keras(args):
    own = ("--json",)  # the parent's flags, not the child's
    # The child's clock starts here, when its process is launched.
    return run_child(os.path.abspath(__file__), f"--child_start={time.time()}",
                     *[a for a in sys.argv[1:] if not a.startswith(own)])


def time_to(result, threshold):
    """Seconds from launch to the end of the first epoch reaching `threshold`, or None."""
    for top1, seconds in zip(result["top1"], result["epoch_end"]):
        if top1 >= threshold:
            return seconds
    return None


def main():
    parser = argument_parser(__doc__, seed=0, which="ours,keras")
    parser.add_argument("--data_dir", required=True, help="CIFAR-10 as train/ and test/ folders")
    parser.add_argument("--epochs", type=int, help="default: the cifar10 recipe's")
    parser.add_argument("--thresholds", default="0.8,0.85",
                        type=lambda s: [float(v) for v in s.split(",")])
    parser.add_argument("--child_start", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data_dir = os.path.abspath(os.path.expanduser(args.data_dir))
    if args.child_start is not None:
        print_for_parent(keras_path(args, args.child_start))
        return
    results = {}
    for name in args.which.split(","):
        print(f"{name}:", flush=True)
        if name == "ours":
            with tempfile.TemporaryDirectory() as scratch:
                results[name] = run_ours(args, os.path.join(scratch, "run"))
        else:
            results[name] = run_keras(args)
        print("  top-1 per epoch " + " ".join(f"{v:.4f}" for v in results[name]["top1"]),
              flush=True)
    print(f"\n{'path':<6} | " + " | ".join(f"time to {t:.0%}" for t in args.thresholds)
          + " | final top-1 | wall time")
    for name, r in results.items():
        cells = []
        for threshold in args.thresholds:
            seconds = time_to(r, threshold)
            cells.append(f"{seconds / 60:.1f} min" if seconds is not None else "not reached")
        print(f"{name:<6} | " + " | ".join(cells)
              + f" | {r['top1'][-1]:.2%} | {r['seconds'] / 60:.1f} min")
    write_json(args.json, dict(recipe=recipe(args), thresholds=args.thresholds, results=results))


if __name__ == "__main__":
    main()
