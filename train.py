"""Train a GoogLeNet-family model; re-running the same command resumes it.

    python train.py                          # minigooglenet on the digits, a few minutes on a CPU
    python train.py --num_gpus=2 --dataset=mini_imagenet --data_dir=...
    python train.py --run_dir=runs/a --print_flagfile > a.flags   # its settings, as a flagfile
    python train.py --flagfile=a.flags --run_dir=runs/b            # a new run with them
    tensorboard --logdir runs/
"""
from host import entry  # first: it quiets TensorFlow before TensorFlow loads

# isort: split

from typing import List

from absl import app
from absl import flags as absl_flags

import flags
from rundir import guard
from rundir.layout import best_dir
from rundir.recorded import resolve_config
from rundir.restart import find_restart
from settings.cluster import worker_from_tf_config
from settings.config import GivenSettings, TrainConfig
from training.loop import Trainer

FLAGS = absl_flags.FLAGS


def main(argv: List[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # The settings boundary: the flags given, normalised, with the recipe's defaults filled.
    given = GivenSettings.of(flags.given_settings(TrainConfig))
    run_dir = given.run_dir
    if FLAGS.print_flagfile:
        # Before the run directory is locked or TF_CONFIG read: it only reads config.json.
        others = sorted(set(given.given) - {"run_dir"})
        if others:
            raise ValueError(f"--print_flagfile prints the settings saved in --run_dir and takes "
                             f"no other setting; also given: --{', --'.join(others)}")
        print(flags.run_flagfile(run_dir), end="")
        return
    # TF_CONFIG, read once: only the chief writes the run directory (other workers of a job
    # write scratch files).
    worker = worker_from_tf_config(given.filled["strategy"])
    with guard.writing(run_dir, worker.is_chief, warn=print):
        restart = (find_restart(run_dir, FLAGS.restart_from)
                   if FLAGS.restart_from is not None else None)
        result = Trainer(resolve_config(given, restart), restart=restart, worker=worker).train()
    if "top1" not in result:  # another worker than the chief: it has no evaluation to report
        print(f"Worker {result['worker']} done at step {result['step']}; the chief evaluates "
              f"the model and writes the run directory.")
        return
    ema = result.get("ema")
    averaged = (f"; averaged weights: top-1 {ema['top1']:.4f}, top-5 {ema['top5']:.4f}, "
                f"loss {ema['loss']:.4f}" if ema else "")
    validation = result.get("val")
    scored = (f"; validation top-1 {validation['top1']:.4f} (the best epoch's weights are in "
              f"{best_dir(run_dir)})" if validation else "")
    print(f"Done at step {result['step']}: test top-1 {result['top1']:.4f}, "
          f"top-5 {result['top5']:.4f}, loss {result['loss']:.4f}{averaged}{scored}")


if __name__ == "__main__":
    entry.run(main, stopped_note="The checkpoints saved so far are kept: the same command resumes "
              "from the latest, or starts afresh if there is none yet.")
