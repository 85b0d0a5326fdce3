"""What the benchmarks share: timing with warm-up, one model's training step and inference on one
device, and settings measured in a child process."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


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


def train_and_infer(model_name, classes, image_size, batch_size, *, warmup, steps,
                    jit_compile=False, **model_options):
    """(model, training-step (mean, std), inference (mean, std)) seconds per batch of our training
    step (training/step.py) and forward pass, on the first GPU or else the CPU, in the current
    Keras precision policy."""
    import keras
    import tensorflow as tf

    import inception
    from training import devices
    from training.step import StepConfig, make_train_step
    strategy = devices.make_strategy(devices.configure_towers()[:1])
    with strategy.scope():
        model = inception.build_model(model_name, classes, image_size, **model_options)
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    step = make_train_step(model, optimizer, strategy, StepConfig(batch_size, classes),
                           jit_compile=jit_compile)
    images = tf.random.uniform((batch_size, image_size, image_size, 3), -1, 1)
    labels = tf.random.uniform((batch_size,), 0, classes, tf.int32)
    train = timed(lambda: step(images, labels)["total_loss"].numpy(), warmup, steps)
    forward = tf.function(lambda x: model(x, training=False)["logits"], jit_compile=jit_compile)
    infer = timed(lambda: forward(images).numpy(), warmup, steps)
    return model, train, infer


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
