"""What the benchmarks share: their command line and JSON report, timing with warm-up, train.py's
training step built as the trainer builds it (training/builder.py), one model's training step and
inference on one device, settings measured in a child process, and train.py run as a user runs
it, with its history.csv read back.

Importing it puts the project's root on sys.path, so a benchmark run as
`python benchmarks/<script>.py` imports the project as train.py does.
"""
import argparse
import csv
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

# Arguments several benchmarks take, with what they mean; each script gives its own defaults.
COMMON_ARGUMENTS = {
    "model": dict(help="network (inception/'s registry)"),
    "image_size": dict(type=int, help="model input size in pixels"),
    "batch_size": dict(type=int, help="images per step"),
    "classes": dict(type=int, help="classes of the model (and of generated data)"),
    "width_multiplier": dict(type=float, help="scales every layer's channels"),
    "warmup": dict(type=int, help="steps run and discarded before the timing"),
    "steps": dict(type=int, help="steps timed"),
    "num_images": dict(type=int, help="images to generate or read"),
    "source_size": dict(type=int, help="side of the generated JPEGs, in pixels"),
    "epochs": dict(type=int, help="epochs to train"),
    "seed": dict(type=int, help="seed of the split, the shuffling and the weights"),
    "seeds": dict(help="comma-separated seeds: one run of each path per seed"),
    "which": dict(help="comma-separated paths to run, in this order"),
}


def argument_parser(doc: str, **defaults) -> argparse.ArgumentParser:
    """A benchmark's parser: the first line of its docstring `doc` as the description, --json,
    and each of COMMON_ARGUMENTS named in `defaults` with the default given there
    (`jit_compile=False` adds the --jit_compile switch)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in defaults.items():
        if name == "jit_compile":
            parser.add_argument("--jit_compile", action="store_true",
                                help="compile the training step with XLA")
        else:
            parser.add_argument(f"--{name}", default=default, **COMMON_ARGUMENTS[name])
    parser.add_argument("--json", help="also write the results here, as JSON")
    return parser


def write_json(path: str, results) -> None:
    """Writes `results` to `path` as indented JSON, when --json named a file."""
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)


def print_for_parent(result) -> None:
    """Prints a child process's `result` as the JSON line its parent reads (`child_result`,
    `run_child`)."""
    print(json.dumps(result))


def timed(fn, warmup, steps):
    """(mean, std) seconds of `steps` calls of `fn` after `warmup` discarded ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.mean(times)), float(np.std(times))


def step_config(model, classes, image_size, batch_size, **options):
    """The `TrainConfig` of a benchmark's training step: `model` at `image_size` px with
    `classes` classes and a global batch of `batch_size`; `options` are any other TrainConfig
    settings (`dataset` names the recipe the rest comes from, default folder's: its weight decay,
    label smoothing and SGD; the model keeps its own width unless `width_multiplier` is given)."""
    from settings.config import TrainConfig, with_defaults
    values = {"dataset": "folder", "width_multiplier": 1.0, **options}
    return with_defaults(TrainConfig(model=model, num_classes=classes, image_size=image_size,
                                     batch_size=batch_size, **values))


def towers_and_state(config, tower_devices, precision, steps_per_epoch):
    """train.py's parts for `config` on one machine's `tower_devices` (training/builder.py): the
    process settings applied in Keras precision policy `precision`, then (towers, state): the
    strategy and the model, optimizer and schedule (on `steps_per_epoch` steps an epoch) in
    its scope. Nothing is saved, so the checkpoints point at a directory already removed."""
    from settings.cluster import Worker
    from training import builder
    builder.apply_process_settings(config, precision)
    towers = builder.build_towers(config, Worker(), tower_devices)
    with tempfile.TemporaryDirectory() as scratch:
        state = builder.build_state(config, towers, steps_per_epoch, scratch)
    return towers, state


def training_step(model_name, classes, image_size, batch_size, steps, jit_compile=False,
                  **options):
    """(model, step, images, labels): train.py's training step (training/builder.py,
    training/step.py: the recipe's SGD, weight decay and label smoothing) on the first GPU or
    else the CPU, in the current Keras precision policy, with a random batch for it; the schedule
    spans `steps` steps. `options`: other TrainConfig settings (`step_config`), e.g.
    width_multiplier, or dataset for another recipe's step."""
    import keras
    import tensorflow as tf

    from training import builder, devices
    config = step_config(model_name, classes, image_size, batch_size, jit_compile=jit_compile,
                         **options)
    towers, state = towers_and_state(config, devices.configure_towers()[:1],
                                     keras.mixed_precision.global_policy().name, steps)
    step = builder.build_steps(config, towers, state).train
    images = tf.random.uniform((batch_size, image_size, image_size, 3), -1, 1)
    labels = tf.random.uniform((batch_size,), 0, classes, tf.int32)
    return state.model, step, images, labels


def train_and_infer(model_name, classes, image_size, batch_size, *, warmup, steps,
                    jit_compile=False, **options):
    """(model, training-step (mean, std), inference (mean, std)) seconds per batch of
    `training_step`'s step and forward pass."""
    import tensorflow as tf
    model, step, images, labels = training_step(model_name, classes, image_size, batch_size,
                                                warmup + steps, jit_compile, **options)
    train = timed(lambda: step(images, labels)["total_loss"].numpy(), warmup, steps)
    forward = tf.function(lambda x: model(x, training=False)["logits"], jit_compile=jit_compile)
    infer = timed(lambda: forward(images).numpy(), warmup, steps)
    return model, train, infer


def forward_flops(model, image_size) -> int:
    """FLOPs of one image's forward pass through `model` (its "logits"), counted by TensorFlow's
    profiler on the forward graph: 2 per multiply-add."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder
    forward = tf.function(lambda x: model(x, training=False)["logits"])
    graph = forward.get_concrete_function(
        tf.TensorSpec([1, image_size, image_size, 3], tf.float32)).graph
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return model_analyzer.profile(graph, options=options).total_float_ops


def child_result(script, *extra_args, drop=()):
    """Runs `script` again in a fresh process - thread pools, devices and precision are fixed
    once TensorFlow starts - with this run's arguments plus `extra_args` (which replace this
    run's values of the same flags; --json and the flags in `drop` are left out), and returns
    the JSON it prints last."""
    replaced = ("--json", *drop, *(a.split("=")[0] for a in extra_args))
    passed = [a for a in sys.argv[1:] if a.split("=")[0] not in replaced]
    command = [sys.executable, os.path.abspath(script), *extra_args, *passed]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_child(script, *flags):
    """`script` with only `flags` in a fresh process: the JSON it prints last, plus its wall
    time in seconds."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, script, *flags], check=True, capture_output=True,
                         text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - start
    return result


def read_history(run_dir: str) -> list:
    """train.py's history.csv in `run_dir`, one dict per epoch: held-out top-1 and top-5, top-1
    with test-time augmentation (None without --tta), training images per second, the epoch's
    seconds (training and scoring) and its end (unix time); [] before the first epoch ends."""
    path = os.path.join(run_dir, "history.csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [dict(top1=float(r["heldout_top1"]), top5=float(r["heldout_top5"]),
                     tta_top1=float(r["heldout_tta_top1"]) if r.get("heldout_tta_top1")
                     else None,
                     images_per_second=float(r["images_per_second"]),
                     seconds=float(r["epoch_seconds"]),
                     ended=datetime.datetime.fromisoformat(r["wall_time"]).timestamp())
                for r in csv.DictReader(f)]


def train_py(flags: list, run_dir: str, log: str, until=None) -> int:
    """Runs `python train.py --run_dir=run_dir *flags`, its output appended to the file `log`,
    and returns its exit code. With `until`, a test of the run's history (`read_history`) made
    every few seconds, a run for which it holds is stopped as a user stops one, with a Ctrl+C
    (train.py saves a checkpoint and exits), and counts as finished (0). If this script is
    interrupted, train.py is stopped the same way, so the same command continues it."""
    command = [sys.executable, os.path.join(ROOT, "train.py"), f"--run_dir={run_dir}", *flags]
    print("  " + " ".join(command[1:]) + f"  (output: {log})", flush=True)
    with open(log, "a") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            while process.poll() is None:
                time.sleep(5)
                if until is not None and until(read_history(run_dir)):
                    process.send_signal(signal.SIGINT)
                    process.wait()
                    return 0
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                process.wait()
    return process.returncode


# train.py's flags that fix its precision, by name, whatever the CPU would choose by itself.
PRECISION_FLAGS = {
    "float32": ["--nomixed_precision"],
    "bfloat16": ["--mixed_precision", "--mixed_precision_dtype=bfloat16"],
}


def stop(returncode: int, what: str, log: str) -> None:
    """Ends a benchmark in one line when a process it ran (`what`, its output in `log`) did not
    finish; the same command with --work_dir continues it."""
    how = (f"was stopped ({signal.Signals(-returncode).name})" if returncode < 0
           else "was stopped (Ctrl+C)" if returncode in (130, 143)
           else f"failed (exit code {returncode})")
    sys.exit(f"{what} {how}: see {log}. With --work_dir the same command continues it.")


def in_work_dir(work_dir, compare):
    """`compare(directory)`'s result, run in `work_dir` (made if missing; the runs kept there let
    the same command continue them) or, without one, in a temporary directory removed at the
    end. A Ctrl+C ends the script in one line."""
    try:
        if work_dir:
            os.makedirs(work_dir, exist_ok=True)
            return compare(os.path.abspath(work_dir))
        with tempfile.TemporaryDirectory() as scratch:
            return compare(scratch)
    except KeyboardInterrupt:
        sys.exit("Interrupted." + (" The same command continues the runs in --work_dir."
                                   if work_dir else ""))
