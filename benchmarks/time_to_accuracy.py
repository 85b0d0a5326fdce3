"""Time to a held-out accuracy on CIFAR-10: train.py beside model.fit on Keras' own input path.

    python benchmarks/time_to_accuracy.py --data_dir=CIFAR-10-images --thresholds=0.8,0.85 \
        --work_dir=tta-cifar10

One run of each, one after the other on the same machine, with the cifar10 recipe
(settings/recipes.py) on both sides:
  (a) ours:  python train.py --dataset=cifar10 --data_dir=... (the recipe's defaults; the command
      is printed);
  (b) Keras: the same model (`inception.build_model`) the way the Keras guides train CIFAR-10:
      `keras.utils.image_dataset_from_directory(shuffle=True)` on train/, RandomTranslation by up
      to 4 px (1/8 of the side, zero fill) and RandomFlip in the tf.data map, `model.fit` with the
      aux losses weighted 0.3, the recipe's optimiser (SGD, momentum 0.9, Nesterov), schedule
      (its warm-up and linear decay, training/optimization.EpochSchedule), label smoothing and L2
      weight decay on the conv and dense kernels; scored on test/ after every epoch.
`--data_dir` is the image-folder form (train/<class>/, test/<class>/), which both sides read.
Both compute in `--precision` (default float32, Keras' default; mixed_bfloat16 is train.py's
`--mixed_precision --mixed_precision_dtype=bfloat16` and Keras' global policy), so the comparison
is of the input path and the training loop, not of number formats.
Both are scored on test/ after every epoch, and at the end with the recipe's test-time
augmentation too (its --tta, mirror_shift: each image, its mirror and both shifted a pixel, softmax
averaged; ours every epoch, from the same forward pass, Keras once its training ends, by the same
rule). Each stops at the end of
the first epoch that
reaches the highest threshold (ours by a Ctrl+C, Keras by `stop_training`) or at the end of the
schedule; `--full_schedule` trains both to the end.

A path's time to a threshold is its start-up (from the launch of its process to the start of
epoch 1: loading the data, ours' first pass) plus its epoch times (training and scoring) up to the
end of the first epoch whose held-out top-1 reaches it. Runs of hours survive interruption: with
`--work_dir` the same command continues each path where it stopped (ours from its last checkpoint,
Keras from its last finished epoch with keras.callbacks.BackupAndRestore, as the Keras guides do)
and does not run again a path that has finished. A resumed launch's start-up is not counted, nor
is a Keras epoch cut short (it is trained again). Without --work_dir the runs go to a temporary
directory, removed at the end. Prints the per-epoch top-1 and the times, and writes them with
--json.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time

from keras_baseline import fit_and_score, held_out  # benchmarks/keras_baseline.py

from harness import (  # benchmarks/harness.py
    PRECISION_FLAGS,
    argument_parser,
    in_work_dir,
    read_history,
    stop,
    train_py,
    write_json,
)


def recipe(args):
    """The cifar10 recipe's settings, with --epochs over its own when given."""
    from settings.recipes import get_recipe
    settings = dict(get_recipe("cifar10").settings)
    if args.epochs:
        settings["epochs"] = args.epochs
    return settings


# --precision's values: Keras' policy names, each with train.py's flags for it.
KERAS_POLICIES = {"float32": PRECISION_FLAGS["float32"],
                  "mixed_bfloat16": PRECISION_FLAGS["bfloat16"]}

# --keras_jit_compile's values, as compile() takes them.
JIT = {"auto": "auto", "on": True, "off": False}


def reached(args, top1):
    """Whether any of these top-1 values reaches the highest threshold, which ends a path
    (unless --full_schedule)."""
    return not args.full_schedule and any(v >= max(args.thresholds) for v in top1)


def finished(args, top1):
    """Whether a path with these per-epoch top-1 values is done: it reached the highest
    threshold or trained every epoch of the schedule."""
    return reached(args, top1) or len(top1) >= recipe(args)["epochs"]


def path_result(rows, startup, tta_top1=None):
    """A path's per-epoch rows (top1, top5, seconds), start-up and last epoch's top-1 with
    test-time augmentation, as the script reports them."""
    return dict(top1=[r["top1"] for r in rows], top5=[r["top5"] for r in rows],
                epoch_seconds=[r["seconds"] for r in rows], startup=startup, tta_top1=tta_top1)


def run_ours(args, work_dir):
    """(a): train.py in `work_dir`/ours, launched (or continued) unless it has finished, and
    stopped with a Ctrl+C once it has; its per-epoch results and start-up."""
    run_dir = os.path.join(work_dir, "ours")
    launches = os.path.join(work_dir, "ours_launches.txt")
    if not finished(args, [r["top1"] for r in read_history(run_dir)]):
        with open(launches, "a") as f:
            f.write(f"{time.time()}\n")
        log = os.path.join(work_dir, "ours.log")
        returncode = train_py(["--dataset=cifar10", f"--data_dir={args.data_dir}",
                               f"--seed={args.seed}", *KERAS_POLICIES[args.precision],
                               *([f"--epochs={args.epochs}"] if args.epochs else [])],
                              run_dir, log, until=lambda rows: finished(
                                  args, [r["top1"] for r in rows]))
        if returncode != 0:
            stop(returncode, "train.py", log)
    rows = read_history(run_dir)
    with open(launches) as f:
        launched = [float(line) for line in f if line.strip()]
    began = rows[0]["ended"] - rows[0]["seconds"]  # epoch 1's start, in the launch that ended it
    startup = began - max(t for t in launched if t <= began + 1)  # wall_time is to the second
    return path_result(rows, max(startup, 0.0), rows[-1].get("tta_top1"))


def read_keras(work_dir):
    """The Keras path's epochs.csv: per epoch (the last record of each) top-1, top-5, seconds."""
    path = os.path.join(work_dir, "keras", "epochs.csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        by_epoch = {int(r["epoch"]): r for r in csv.DictReader(f)}
    return [dict(top1=float(r["top1"]), top5=float(r["top5"]), seconds=float(r["seconds"]))
            for _, r in sorted(by_epoch.items())]


def keras_path(args, started):
    """(b), in this process (launched at `started`): trains from the last backup in
    `work_dir`/keras, appending each epoch's held-out top-1 / top-5 and seconds to its
    epochs.csv, and its start-up to startup.json when it starts epoch 1."""
    import keras
    import tensorflow as tf

    import inception
    from training.optimization import EpochSchedule
    settings = recipe(args)
    out = os.path.join(args.work_dir, "keras")
    os.makedirs(out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    keras.mixed_precision.set_global_policy(args.precision)
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

    class Clock(keras.callbacks.Callback):
        """Records each epoch before BackupAndRestore saves it (a crash between the two trains
        the epoch again, and its last record counts)."""

        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.time()
            if epoch == 0:
                with open(os.path.join(out, "startup.json"), "w") as f:
                    json.dump(dict(seconds=self.began - started), f)

        def on_epoch_end(self, epoch, logs=None):  # after the epoch's scoring on test/
            path = os.path.join(out, "epochs.csv")
            new = not os.path.exists(path)
            top1 = float(held_out(logs, "accuracy"))
            with open(path, "a", newline="") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(["epoch", "top1", "top5", "seconds"])
                writer.writerow([epoch + 1, top1, float(held_out(logs, "top5")),
                                 time.time() - self.began])
            if reached(args, [top1]):
                self.model.stop_training = True
    trained = fit_and_score(net, train, test,
                  keras.optimizers.SGD(schedule, momentum=0.9,
                                       nesterov=settings.get("nesterov", False)),
                  settings["epochs"], weight_decay=settings["weight_decay"],
                  label_smoothing=settings.get("label_smoothing", 0.0), callbacks=[Clock()],
                  backup_dir=os.path.join(out, "backup"), jit_compile=JIT[args.keras_jit_compile])
    del trained
    with open(os.path.join(out, "tta.json"), "w") as f:
        json.dump(dict(top1=tta_top1(net, test, settings.get("tta", "none"))), f)


def tta_top1(net, test, tta):
    """Top-1 of `net` on the batched (image, label) dataset `test` (model inputs in [-1, 1]) with
    each image's softmax averaged over the test-time views of --tta=`tta`, as train.py scores
    (input_pipeline.crops.tta_views makes the views for both)."""
    import numpy as np
    import tensorflow as tf

    from input_pipeline.crops import tta_views
    correct = count = 0
    for images, labels in test:
        views = tta_views(tf.cast(images, tf.float32), tta)
        flat = tf.reshape(views, [-1, *views.shape[2:]])
        probs = tf.nn.softmax(tf.cast(net(flat, training=False)["logits"], tf.float32))
        probs = tf.reduce_mean(tf.reshape(probs, [views.shape[0], views.shape[1], -1]), axis=1)
        correct += int(np.sum(np.argmax(probs, -1) == labels.numpy()))
        count += len(labels)
    return correct / count


def run_keras(args, work_dir):
    """(b) in a fresh process, unless it has finished: its per-epoch results and start-up."""
    if not finished(args, [r["top1"] for r in read_keras(work_dir)]):
        own = ("--json", "--work_dir", "--which")  # the parent's flags, not the child's
        command = [sys.executable, os.path.abspath(__file__), f"--child_start={time.time()}",
                   f"--work_dir={work_dir}", *[a for a in sys.argv[1:] if not a.startswith(own)]]
        with open(os.path.join(work_dir, "keras.log"), "a") as log:
            print(f"  model.fit  (output: {work_dir}/keras.log)", flush=True)
            returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
        if returncode != 0:
            stop(returncode, "The Keras path", os.path.join(work_dir, "keras.log"))
    rows = read_keras(work_dir)
    with open(os.path.join(work_dir, "keras", "startup.json")) as f:
        startup = json.load(f)["seconds"]
    tta_path = os.path.join(work_dir, "keras", "tta.json")
    tta = json.load(open(tta_path))["top1"] if os.path.exists(tta_path) else None
    return path_result(rows, startup, tta)


def time_to(result, threshold):
    """Start-up plus the epoch times up to the end of the first epoch reaching `threshold`, in
    seconds, or None."""
    elapsed = result["startup"]
    for top1, seconds in zip(result["top1"], result["epoch_seconds"]):
        elapsed += seconds
        if top1 >= threshold:
            return elapsed
    return None


def compare(args, work_dir):
    results = {}
    for name in args.which.split(","):
        print(f"{name}:", flush=True)
        results[name] = (run_ours if name == "ours" else run_keras)(args, work_dir)
        print("  top-1 per epoch " + " ".join(f"{v:.4f}" for v in results[name]["top1"]),
              flush=True)
    print(f"\n{'path':<6} | " + " | ".join(f"time to {t:.0%}" for t in args.thresholds)
          + " | epochs | last top-1 | with TTA | time in all")
    for name, r in results.items():
        cells = []
        for threshold in args.thresholds:
            seconds = time_to(r, threshold)
            cells.append(f"{seconds / 60:.1f} min" if seconds is not None else "not reached")
        total = r["startup"] + sum(r["epoch_seconds"])
        tta = f"{r['tta_top1']:.2%}" if r["tta_top1"] is not None else "-"
        print(f"{name:<6} | " + " | ".join(cells)
              + f" | {len(r['top1'])} | {r['top1'][-1]:.2%} | {tta} | {total / 60:.1f} min")
    return results


def main():
    parser = argument_parser(__doc__, seed=0, which="ours,keras")
    parser.add_argument("--data_dir", required=True, help="CIFAR-10 as train/ and test/ folders")
    parser.add_argument("--epochs", type=int, help="default: the cifar10 recipe's")
    parser.add_argument("--thresholds", default="0.8,0.85",
                        type=lambda s: [float(v) for v in s.split(",")])
    parser.add_argument("--full_schedule", action="store_true",
                        help="train both to the schedule's end, not only to the last threshold")
    parser.add_argument("--work_dir", help="where the runs are kept; the same command continues "
                        "them (default: a temporary directory, removed at the end)")
    parser.add_argument("--precision", default="float32", choices=sorted(KERAS_POLICIES),
                        help="both paths' number format")
    parser.add_argument("--keras_jit_compile", choices=sorted(JIT), default="auto",
                        help="the Keras path's compile(jit_compile=...): auto (Keras' default: "
                        "XLA wherever the layers allow it), on or off")
    parser.add_argument("--child_start", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data_dir = os.path.abspath(os.path.expanduser(args.data_dir))
    if args.child_start is not None:
        keras_path(args, args.child_start)
        return
    results = in_work_dir(args.work_dir, lambda work_dir: compare(args, work_dir))
    write_json(args.json, dict(recipe=recipe(args), thresholds=args.thresholds, results=results))


if __name__ == "__main__":
    main()
