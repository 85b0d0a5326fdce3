"""Print the top classes of each image with a trained run.

    python predict.py --checkpoint_dir=runs/digits-minigooglenet photo1.jpg photo2.png
"""
import os
import sys

# Before TensorFlow loads: its C++ info and warning lines (device probing, grappler cost notes)
# would bury the progress lines; errors still show. TF_CPP_MIN_LOG_LEVEL=0 brings them back.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from absl import app
from absl import flags as absl_flags

import flags  # noqa: F401  (declares the flags)
from input_pipeline.preprocessing import decode_image, preprocess_for_eval
from training.run_dir import restore_model

FLAGS = absl_flags.FLAGS


def main(argv):
    paths = argv[1:]
    if not FLAGS.checkpoint_dir or not paths:
        raise app.UsageError("usage: predict.py --checkpoint_dir=RUN_DIR IMAGE [IMAGE ...]")
    try:
        model, config, class_names, _, _ = restore_model(FLAGS.checkpoint_dir, FLAGS.checkpoint)
    except ValueError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)
    k = min(FLAGS.top_k, len(class_names))
    failures = 0
    for path in paths:
        try:
            image = decode_image(tf.io.read_file(path))
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
            print(f"{path}: skipped, not a readable image ({error.message.splitlines()[0]})")
            failures += 1
            continue
        logits = model(preprocess_for_eval(image, config.image_size)[None], training=False)
        probs = tf.nn.softmax(logits["logits"])[0].numpy()
        top = np.argsort(-probs)[:k]
        print(f"{path}: " + ", ".join(f"{class_names[i]} {probs[i]:.3f}" for i in top))
    if failures == len(paths):
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
