"""What train.py, evaluate.py and predict.py share at start-up: quiet logs, a compact heap, and
errors turned into one line and an exit code instead of a traceback.

Import it before anything that loads TensorFlow: its C++ info and warning lines (device probing,
grappler cost notes) would bury the progress lines; errors still show, and TF_CPP_MIN_LOG_LEVEL=0
brings the rest back.
"""
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def fail(message: str, code: int = 1):
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(code)


def _reporting_errors(main):
    """`main`, with the errors a user can fix reported in one line: bad settings or data
    (ValueError), a diverged loss (FloatingPointError), a stopped run (its own exit code, 128 +
    the signal, as a shell reports a process killed by it) and an unreachable cluster peer."""
    import tensorflow as tf
    from absl import logging

    from training.loop import TrainingInterrupted

    def wrapped(argv):
        logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except TrainingInterrupted as stopped:
            print(stopped)
            sys.exit(128 + stopped.signal_number)
        except (ValueError, FloatingPointError) as error:
            fail(str(error))
        except tf.errors.UnavailableError as error:  # multi-worker: a peer went away
            fail(f"a worker of the job is unreachable ({error.message.splitlines()[0]}). Restart "
                 f"every worker with the same command to resume from the last checkpoint.")
    return wrapped


def run(main):
    """absl's app.run(main) for an entry point, after the shared start-up."""
    from absl import app

    from input_pipeline.memory import configure_malloc
    configure_malloc()
    # SIGTERM (a scheduler's stop) as Ctrl+C, so training saves a checkpoint before it exits.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    app.run(_reporting_errors(main))
