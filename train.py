"""Train a GoogLeNet-family model; re-running the same command resumes it.

    python train.py                                   # minigooglenet on the digits, a few minutes on a CPU
    python train.py --num_gpus=2 --dataset=mini_imagenet --data_dir=...
    tensorboard --logdir runs/
"""
import os
import signal
import sys

# Before TensorFlow loads: its C++ info and warning lines (device probing, grappler cost notes)
# would bury the progress lines; errors still show. TF_CPP_MIN_LOG_LEVEL=0 brings them back.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf
from absl import app, logging
from absl import flags as absl_flags

import flags  # noqa: F401  (declares the flags)
from input_pipeline.memory import limit_malloc_arenas
from training.config import TrainConfig
from training.loop import Trainer, TrainingInterrupted
from training.restart import find_restart
from training.run_dir import resolve_config, run_dir_of

FLAGS = absl_flags.FLAGS
SETTINGS = [f for f in TrainConfig.__dataclass_fields__ if f not in ("lr_overrides", "num_classes")]


def given_settings():
    """The training settings set on the command line; the rest come from the recipe or the run."""
    given = {name: FLAGS[name].value for name in SETTINGS if FLAGS[name].present}
    if given.get("lr_decay_epochs") is not None:
        given["lr_decay_epochs"] = tuple(float(e) for e in given["lr_decay_epochs"])
    return given


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    try:
        given = given_settings()
        restart = (find_restart(run_dir_of(given), FLAGS.restart_from)
                   if FLAGS.restart_from is not None else None)
        result = Trainer(resolve_config(given, restart), restart=restart).train()
    except TrainingInterrupted as stopped:
        print(stopped)
        sys.exit(128 + stopped.signal_number)
    except (ValueError, FloatingPointError) as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(1)
    except tf.errors.UnavailableError as error:  # multi-worker: a peer went away
        print(f"Error: a worker of the job is unreachable ({error.message.splitlines()[0]}). "
              f"Restart every worker with the same command to resume from the last checkpoint.",
              file=sys.stderr)
        sys.exit(1)
    if "top1" not in result:  # another worker than the chief: it has no evaluation to report
        print(f"Worker {result['worker']} done at step {result['step']}; the chief evaluates "
              f"the model and writes the run directory.")
        return
    print(f"Done at step {result['step']}: test top-1 {result['top1']:.4f}, "
          f"top-5 {result['top5']:.4f}, loss {result['loss']:.4f}")


if __name__ == "__main__":
    limit_malloc_arenas()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    app.run(main)
