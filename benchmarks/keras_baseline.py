"""Accuracy and wall time against Keras' own path, on Tiny ImageNet: train.py beside model.fit.

    python benchmarks/keras_baseline.py --data_dir=tiny-imagenet-200 --epochs=3 --seeds=0,1

For each seed, one run of each, one after the other on the same machine:
  (a) ours:  python train.py --dataset=tiny_imagenet ... (the command is printed);
  (b) Keras: the same model (`inception.build_model`), trained the way the Keras guides do it:
      `keras.utils.image_dataset_from_directory(shuffle=True)` on train/, augmentation layers in
      the tf.data map, `model.fit` with the aux losses weighted 0.3, scored on the same official
      val/ (with its val_annotations.txt labels) after every epoch.
Same epochs, batch, SGD (momentum 0.9, Nesterov as in the tiny_imagenet recipe), per-step cosine
schedule from the same rate, and the same L2 weight decay on conv and dense kernels (added to the
loss, as training/step.py does). The augmentation is as close to ours as Keras' layers come:
images loaded at our cache size (input / 0.875), RandomZoom in for an area of 25-100%, then
RandomCrop to the input size (random position): 19-75% of the image in all, against ours' random
crop of 25-100% of the area at aspect 3/4-4/3 (`--crop_area=0.19,0.75` gives ours the Keras
range); RandomFlip, RandomColorJitter (brightness, contrast, saturation, hue, with our ranges:
`--keras_contrast` says why its contrast factor is given as two numbers);
evaluation takes the central crop of the same size, as ours. Both sides compute in the same
precision, `--precision` (default float32, Keras' default; mixed_bfloat16 is what train.py picks
on CPUs with native bfloat16), so the comparison is of the input path and the training loop, not
of number formats.

`--keras_augmentation=ours` gives the Keras path our augmentation instead of its layers (a control:
then only the training loop and the input path differ). `--keras_input=ours` feeds `model.fit`
from our InputPipeline instead (our cache, per-epoch permutation and augmentation: then only the
training loop differs).

Prints held-out top-1 / top-5 after every epoch and the total wall time of every run (process
start to end, data loading included), and writes them with --json.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

from harness import (
    ROOT,
    argument_parser,
    print_for_parent,
    read_history,
    run_child,
    write_json,
)

AUX_WEIGHT = 0.3


def settings(args):
    """The shared recipe, as train.py flags."""
    return dict(model=args.model, width_multiplier=args.width_multiplier,
                image_size=args.image_size, batch_size=args.batch_size, epochs=args.epochs,
                lr=args.lr, lr_schedule="cosine", warmup_epochs=0, weight_decay=args.weight_decay,
                nesterov=True, label_smoothing=0.0,
                mixed_precision=args.precision != "float32",
                **({"crop_area": args.crop_area} if args.crop_area else {}))


def run_ours(args, seed, run_dir):
    flags = [f"--{k}={v}" for k, v in settings(args).items()]
    return run_train_py(["--dataset=tiny_imagenet", f"--data_dir={args.data_dir}",
                         f"--run_dir={run_dir}", f"--seed={seed}", *flags], run_dir)


def run_train_py(flags, run_dir):
    """Runs train.py with `flags`: its per-epoch held-out top-1 / top-5 (from history.csv), the
    seconds from launch to the end of each epoch, and the process's wall time."""
    command = [sys.executable, os.path.join(ROOT, "train.py"), *flags]
    print("  " + " ".join(command[1:]), flush=True)
    start = time.time()
    subprocess.run(command, check=True, capture_output=True, text=True)
    seconds = time.time() - start
    rows = read_history(run_dir)
    return dict(top1=[r["top1"] for r in rows], top5=[r["top5"] for r in rows],
                epoch_end=[r["ended"] - start for r in rows], seconds=seconds)


def our_augmentation(args):
    """The tiny_imagenet recipe's augmentation, with --crop_area's range when given."""
    from settings.recipes import get_recipe
    area = tuple(float(a) for a in args.crop_area.split(",")) if args.crop_area else None
    return get_recipe("tiny_imagenet").augmentation_for(100_000, area)  # Tiny's training set


def contrast_factor(flag):
    """--keras_contrast as RandomContrast's `factor`: "0.5,0.5" -> (0.5, 0.5), x0.5-1.5 as ours;
    a single number stays one, which Keras 3 reads as (0, factor): x1.0-1.5, contrast only ever
    raised (its docstring promises 1 - factor to 1 + factor)."""
    try:
        values = [float(v) for v in flag.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(
            f"expected one number or lower,upper (e.g. 0.5,0.5), got {flag!r}")
    return tuple(values) if len(values) == 2 else values[0]


def val_labels(root, class_names):
    """Official val/ labels in the alphanumeric order of the files, as Keras wants them."""
    index = {name: i for i, name in enumerate(class_names)}
    with open(os.path.join(root, "val", "val_annotations.txt")) as f:
        by_file = dict(line.split("\t")[:2] for line in f if line.strip())
    return [index[by_file[name]] for name in sorted(by_file)]


def keras_path(args, seed):
    """(b), in this process: returns per-epoch top-1 / top-5 on val/."""
    import keras
    import tensorflow as tf

    import inception
    from input_pipeline.preprocessing import cache_size
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(args.precision)
    root, size = args.data_dir, args.image_size
    load = cache_size(size)
    train = keras.utils.image_dataset_from_directory(
        os.path.join(root, "train"), image_size=(load, load), batch_size=args.batch_size,
        shuffle=True, seed=seed)
    class_names = train.class_names
    val = keras.utils.image_dataset_from_directory(
        os.path.join(root, "val", "images"), labels=val_labels(root, class_names),
        image_size=(load, load), batch_size=args.batch_size, shuffle=False)
    augment = keras.Sequential([
        keras.layers.RandomZoom(height_factor=(-0.5, 0.0), seed=seed),  # area 25-100%
        keras.layers.RandomCrop(size, size, seed=seed),
        keras.layers.RandomFlip("horizontal", seed=seed),
        # Ours: brightness +-32/255, contrast and saturation x0.5-1.5, hue +-0.2 of the circle.
        # Keras scales saturation by f / (1 - f) and shifts hue by up to half its factor.
        keras.layers.RandomColorJitter(value_range=(0, 255), brightness_factor=32 / 255,
                                       contrast_factor=args.keras_contrast,
                                       saturation_factor=(1 / 3, 0.6), hue_factor=0.4,
                                       seed=seed),
        keras.layers.Rescaling(1 / 127.5, offset=-1.0)])
    center = keras.Sequential([keras.layers.CenterCrop(size, size),
                               keras.layers.Rescaling(1 / 127.5, offset=-1.0)])
    autotune = tf.data.AUTOTUNE

    if args.keras_augmentation == "ours":
        # The control: Keras' path with our augmentation (input_pipeline/preprocessing.py, the
        # tiny_imagenet recipe's), so only the training loop and input path differ.
        from input_pipeline.preprocessing import apply_augmentation, sample_augmentation
        ours = our_augmentation(args)

        def augment(images, training=True):
            key = tf.random.uniform([2], maxval=2 ** 31 - 1, dtype=tf.int64)  # new every batch
            params = sample_augmentation(tf.shape(images)[0], key, ours)
            return apply_augmentation(images, params, size, ours)
    if args.keras_input == "keras":
        steps = int(train.cardinality())
        train = train.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=autotune)
    else:
        # The control that leaves only the training loop different: our pipeline, model.fit.
        import input_pipeline
        splits = input_pipeline.load_dataset("tiny_imagenet", root)
        assert splits.class_names == class_names
        pipeline = input_pipeline.InputPipeline(
            splits.train, image_size=size, training=True, seed=seed,
            augmentation=our_augmentation(args))
        steps = pipeline.num_examples // args.batch_size
        train = pipeline.dataset(args.batch_size, num_epochs=args.epochs)
    net = inception.build_model(args.model, len(class_names), size,
                                width_multiplier=args.width_multiplier)
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=args.epochs * steps)
    return fit_and_score(net, train,
                         val.map(lambda x, y: (center(x), y), num_parallel_calls=autotune),
                         keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
                         args.epochs, weight_decay=args.weight_decay,
                         steps_per_epoch=steps if args.keras_input == "ours" else None)


def held_out(logs, metric):
    """The held-out value of `metric` ("accuracy" for top-1, "top5") in model.fit's logs or
    history, whatever Keras named the main output's metric."""
    return next(v for k, v in logs.items() if k.startswith("val_") and k.endswith(metric))


def fit_and_score(net, train, val, optimizer, epochs, weight_decay=0.0, aux_weight=AUX_WEIGHT,
                  steps_per_epoch=None, label_smoothing=0.0, callbacks=(), backup_dir=None,
                  jit_compile="auto"):
    """`model.fit` of `net` on batched (image, label) datasets: every head a cross-entropy loss
    (the aux heads weighted `aux_weight`, every head's targets smoothed by `label_smoothing` as
    training/step.py does), plus `weight_decay` times the L2 of the conv and dense kernels;
    per-epoch top-1 / top-5 on `val` of the epochs this call trained. With `backup_dir`, the
    Keras guides' fault tolerance: keras.callbacks.BackupAndRestore saves the model and optimizer
    there after every epoch, and a later call continues from the last one saved. `jit_compile`
    is compile()'s: Keras' default "auto" compiles the step with XLA whenever every layer
    allows it, on CPUs too."""
    import keras
    import tensorflow as tf

    from training.step import decayed_weights
    size = train.element_spec[0].shape[1]
    outputs = net(tf.zeros([1, size, size, 3]), training=True)
    heads = sorted(outputs, key=lambda k: k != "logits")
    num_classes = outputs["logits"].shape[-1]

    class WithHeadsAndDecay(keras.Model):
        """Every head as an output (the aux heads exist only in training, so evaluation repeats
        the logits; only the first output's metrics are read) and the L2 term in the loss."""

        def __init__(self):
            super().__init__()
            self.net = net

        def call(self, images, training=False):
            out = self.net(images, training=training)
            if training and weight_decay:
                self.add_loss(weight_decay * tf.add_n(
                    [tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in decayed_weights(self.net)]))
            if training:
                return tuple(out[h] for h in heads)
            return tuple(out["logits"] for _ in heads)

    model = WithHeadsAndDecay()
    if label_smoothing:  # Keras' sparse loss has no smoothing: one-hot targets instead
        loss = keras.losses.CategoricalCrossentropy(from_logits=True,
                                                    label_smoothing=label_smoothing)
        metrics = ["categorical_accuracy", keras.metrics.TopKCategoricalAccuracy(5, name="top5")]
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = ["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5")]
    model.compile(optimizer, loss=[loss] * len(heads),
                  loss_weights=[1.0 if h == "logits" else aux_weight for h in heads],
                  metrics=[metrics] + [[] for _ in heads[1:]], jit_compile=jit_compile)
    autotune = tf.data.AUTOTUNE

    def per_head(dataset):  # one label per head
        def targets(y):
            return tf.one_hot(y, num_classes) if label_smoothing else y
        return dataset.map(lambda x, y: (x, (targets(y),) * len(heads))).prefetch(autotune)
    callbacks = list(callbacks)
    if backup_dir:
        model(tf.zeros([1, size, size, 3]))  # BackupAndRestore restores into a built model
        callbacks.append(keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False))
    history = model.fit(per_head(train), validation_data=per_head(val), epochs=epochs,
                        steps_per_epoch=steps_per_epoch, verbose=2, callbacks=callbacks)
    logs = history.history
    return dict(top1=[float(v) for v in held_out(logs, "accuracy")],
                top5=[float(v) for v in held_out(logs, "top5")])


def run_keras(args, seed):
    own = ("--json", "--seeds", "--which")  # the parent's flags, not the child's
    return run_child(os.path.abspath(__file__), f"--child_seed={seed}",
                     *[a for a in sys.argv[1:] if not a.startswith(own)])


def side_by_side(seeds, paths):
    """Runs every path ({name: seed -> result}) for every seed, one after the other, printing
    each run's per-epoch top-1; the results in run order."""
    results = []
    for seed in seeds:
        for name, run in paths.items():
            print(f"seed {seed}: {name}", flush=True)
            if name == "ours":
                with tempfile.TemporaryDirectory() as scratch:
                    result = run(seed, os.path.join(scratch, "run"))
            else:
                result = run(seed)
            results.append(dict(which=name, seed=seed, **result))
            top1 = result["top1"]
            best = max(range(len(top1)), key=top1.__getitem__)
            print(f"  top-1 per epoch {' '.join(f'{v:.4f}' for v in top1)}; last {top1[-1]:.2%}, "
                  f"best {top1[best]:.2%} (epoch {best + 1}); {result['seconds']:.0f} s",
                  flush=True)
    return results


def main():
    parser = argument_parser(__doc__, epochs=3, seeds="0,1", which="ours,keras",
                             model="googlenet_bn", width_multiplier=0.25, image_size=64,
                             batch_size=64)
    parser.add_argument("--data_dir", required=True, help="tiny-imagenet-200")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--weight_decay", type=float, default=2e-4)
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
    parser.add_argument("--keras_augmentation", default="keras", choices=["keras", "ours"],
                        help="the Keras path's augmentation: its own layers (default), or ours "
                             "applied in its tf.data map (a control that isolates the loop)")
    parser.add_argument("--keras_input", default="keras", choices=["keras", "ours"],
                        help="what feeds model.fit: image_dataset_from_directory (default), or "
                             "our InputPipeline (a control that leaves only the loop different)")
    parser.add_argument("--keras_contrast", default="0.5,0.5", type=contrast_factor,
                        help="RandomColorJitter's contrast_factor: lower,upper (default "
                             "x0.5-1.5, ours), or one number, which Keras 3 draws as x1.0-1.5 "
                             '(docs/results.md, "With the augmentation matched", has both)')
    parser.add_argument("--crop_area", help="min,max: the area range of our random crop, as "
                        "train.py's --crop_area (default: the tiny_imagenet recipe's 0.25,1), for "
                        "ours and for the Keras path's controls that use our augmentation")
    parser.add_argument("--child_seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data_dir = os.path.abspath(os.path.expanduser(args.data_dir))
    if args.child_seed is not None:
        print_for_parent(keras_path(args, args.child_seed))
        return
    paths = {"ours": lambda seed, run_dir: run_ours(args, seed, run_dir),
             "keras": lambda seed: run_keras(args, seed)}
    results = side_by_side([int(s) for s in args.seeds.split(",")],
                           {name: paths[name] for name in args.which.split(",")})
    print(f"\n{'path':<6} {'seed':>4} | " + " | ".join(
        f"ep{e + 1} top-1/top-5" for e in range(args.epochs)) + " | wall time")
    for r in results:
        cells = " | ".join(f"{a:.2%} / {b:.2%}" for a, b in zip(r["top1"], r["top5"]))
        print(f"{r['which']:<6} {r['seed']:>4} | {cells} | {r['seconds']:.0f} s")
    write_json(args.json, dict(settings=settings(args), results=results))


if __name__ == "__main__":
    main()
