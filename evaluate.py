"""Score a training run: top-1 / top-5, per-class report, confusion matrix; optionally export it.

    python evaluate.py --checkpoint_dir=runs/digits-minigooglenet
    python evaluate.py --checkpoint_dir=runs/... --crops=10          # or 144, as in the paper
    python evaluate.py --checkpoint_dir=runs/... --eval_split=test   # a folder's test/ beside val/
    python evaluate.py --checkpoint_dir=runs/... --watch             # beside a running train.py
    python evaluate.py --checkpoint_dir=runs/... --export_dir=serving/model
"""
import os
import sys

# Before TensorFlow loads: its C++ info and warning lines (device probing, grappler cost notes)
# would bury the progress lines; errors still show. TF_CPP_MIN_LOG_LEVEL=0 brings them back.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags as absl_flags

import flags  # noqa: F401  (declares the flags)
from input_pipeline.memory import limit_malloc_arenas
from training.evaluate_run import EvalSettings, run

FLAGS = absl_flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.checkpoint_dir:
        raise app.UsageError("--checkpoint_dir (a run directory written by train.py) is required")
    settings = EvalSettings(
        run_dir=FLAGS.checkpoint_dir, checkpoint=FLAGS.checkpoint, crops=int(FLAGS.crops),
        batch_size=FLAGS.batch_size or 64, num_gpus=FLAGS.num_gpus,
        towers_on_cpu=FLAGS.towers_on_cpu,
        dataset=FLAGS.dataset if FLAGS["dataset"].present else None, data_dir=FLAGS.data_dir,
        eval_split=FLAGS.eval_split,
        export_dir=FLAGS.export_dir, watch=FLAGS.watch, watch_timeout=FLAGS.watch_timeout)
    try:
        run(settings)
    except ValueError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    limit_malloc_arenas()
    app.run(main)
