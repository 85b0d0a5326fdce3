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


# The last stop signal, for the message and exit code of a stop outside the training loop.
_stop_signal = [signal.SIGINT]


def _interrupt(signum, frame):
    """SIGINT and SIGTERM alike raise KeyboardInterrupt, so `finally` blocks clean up (a disk
    cache being written is abandoned) and the run directory is left as the next start needs."""
    _stop_signal[0] = signum
    raise KeyboardInterrupt


def fail(message: str, code: int = 1):
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(code)


def _reporting_errors(main, stopped_note=None):
    """`main`, with the errors a user can fix reported in one line: bad settings or data
    (ValueError), a diverged loss (FloatingPointError), a stopped run (its own exit code, 128 +
    the signal, as a shell reports a process killed by it) and an unreachable cluster peer."""
    import tensorflow as tf
    from absl import logging

    from host.signals import TrainingInterrupted

    def wrapped(argv):
        logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except TrainingInterrupted as stopped:
            print(stopped)
            sys.exit(128 + stopped.signal_number)
        except KeyboardInterrupt:  # outside the training loop's own handling: before it (the
            # first pass), after it (the last evaluation), a second Ctrl+C, or evaluate.py
            name = signal.Signals(_stop_signal[0]).name
            print(f"\nStopped by {name}.{' ' + stopped_note if stopped_note else ''}",
                  file=sys.stderr)
            sys.exit(128 + _stop_signal[0])
        except (ValueError, FloatingPointError) as error:
            fail(str(error))
        except tf.errors.UnavailableError as error:  # multi-worker: a peer went away
            fail(f"a worker of the job is unreachable ({error.message.splitlines()[0]}). Restart "
                 f"every worker with the same command to resume from the last checkpoint.")
    return wrapped


def run(main, stopped_note=None):
    """absl's app.run(main) for an entry point, after the shared start-up. `stopped_note` is
    added to the line a stop by Ctrl+C / SIGTERM prints (what the user's next step is)."""
    from absl import app

    from host.runtime import configure_malloc
    configure_malloc()
    # SIGTERM (a scheduler's stop) as Ctrl+C, so training saves a checkpoint before it exits.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    app.run(_reporting_errors(main, stopped_note))
