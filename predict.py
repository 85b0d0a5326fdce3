"""Print the top classes of each image with a trained run.

    python predict.py --checkpoint_dir=runs/digits-minigooglenet photo1.jpg photo2.png

A run trained with --ema_decay predicts with its averaged weights unless --weights=raw, and with
the run's --tta views averaged; an image whose header declares more than the run's
--max_image_pixels is skipped undecoded.
"""
from host import entry  # first: it quiets TensorFlow before TensorFlow loads

# isort: split

import sys
from typing import List

import keras
import numpy as np
import tensorflow as tf
from absl import app
from absl import flags as absl_flags

import flags  # noqa: F401  (declares the flags)
from evaluation.trained import restore_model, trained_augmentation, trained_precision
from input_pipeline import image_header
from input_pipeline.crops import tta_views
from input_pipeline.preprocessing import decode_image, preprocess_for_eval
from rundir.recorded import load_run_config
from training import devices
from training.step import softmax_of_views

FLAGS = absl_flags.FLAGS


def main(argv: List[str]) -> None:
    paths = argv[1:]
    if not FLAGS.checkpoint_dir or not paths:
        raise app.UsageError("usage: predict.py --checkpoint_dir=RUN_DIR IMAGE [IMAGE ...]")
    # The precision and view the run trained with, as evaluate.py scores it.
    config = load_run_config(FLAGS.checkpoint_dir)
    keras.mixed_precision.set_global_policy(trained_precision(config, devices.configure_towers()))
    model, config, class_names, _, _ = restore_model(FLAGS.checkpoint_dir, FLAGS.checkpoint,
                                                     weights=FLAGS.weights)
    k = min(FLAGS.top_k, len(class_names))
    trained_with = trained_augmentation(config)
    failures = 0
    for path in paths:
        try:
            data = tf.io.read_file(path)
            pixels = int(image_header.declared_size(data)[2])
            if pixels > config.max_image_pixels or pixels == image_header.UNSIZED:
                print(f"{path}: skipped, its header declares {pixels:,} pixels, over the "
                      f"limit of {config.max_image_pixels:,} (--max_image_pixels)"
                      if pixels > 0 else f"{path}: skipped, its size cannot be read before "
                      f"decoding")
                failures += 1
                continue
            image = decode_image(data)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
            print(f"{path}: skipped, not a readable image ({error.message.splitlines()[0]})")
            failures += 1
            continue
        image = preprocess_for_eval(image, config.image_size, trained_with.eval_fraction)
        # The run's test-time augmentation, as evaluate.py scores and the export serves.
        views = tta_views(image[None], config.tta or "none")
        probs = tf.reduce_mean(softmax_of_views(model, views), axis=1)[0].numpy()
        top = np.argsort(-probs)[:k]
        print(f"{path}: " + ", ".join(f"{class_names[i]} {probs[i]:.3f}" for i in top))
    if failures == len(paths):
        sys.exit(1)


if __name__ == "__main__":
    entry.run(main)
