"""What a finished run holds for scoring and serving, read from its directory, never re-derived:
its model and weights (the averaged ones when it has them), the precision it trained in and the
augmentation that decides the view it is scored on. Runs saved before a field was recorded get
today's behaviour for it, said once a process."""
import contextlib
import os
import sys
from typing import List, Optional, Tuple

import keras
import tensorflow as tf

import input_pipeline
from rundir.best import BEST, best_checkpoint
from rundir.layout import CONFIG_FILE
from rundir.recorded import load_run_config, read_class_names
from rundir.recovery import recover_latest
from settings import recipes
from settings.config import TrainConfig, build_model_from_config
from training import devices
from training.averaging import averaged_weights
from training.checkpoints import Checkpoints, holds_average, read_average

_NOTED = set()  # what an older run's config.json lacks, said once a process


def _note_once(line: str) -> None:
    if line not in _NOTED:
        _NOTED.add(line)
        print(line, file=sys.stderr)


def trained_precision(config: TrainConfig, towers: List[str]) -> str:
    """The Keras precision policy the run trained in, as its config.json records it. A run saved
    before it was recorded gets the one training would choose on `towers`, said once."""
    if config.precision is not None:
        return config.precision
    policy = devices.precision_policy(config.mixed_precision, towers,
                                      config.mixed_precision_dtype)
    _note_once(f"Note: {os.path.join(config.run_dir, CONFIG_FILE)} records no precision (a run "
               f"saved by an earlier version): using {policy}, as training would choose here.")
    return policy


def trained_augmentation(config: TrainConfig) -> input_pipeline.Augmentation:
    """The run's training augmentation, as its config.json records it: its crop and flips decide
    the view it is scored and served on. A run saved before it was recorded gets its dataset's
    recipe as it is now, said once."""
    if config.augmentation is not None:
        return config.augmentation
    _note_once(f"Note: {os.path.join(config.run_dir, CONFIG_FILE)} records no augmentation (a "
               f"run saved by an earlier version): evaluating as the {config.dataset} recipe "
               f"trains now.")
    return recipes.get_recipe(config.dataset).augmentation


def _latest_readable(run_dir: str) -> Optional[str]:
    """The newest checkpoint that reads whole. A reader takes no lock, so it never makes a
    train.py starting meanwhile wait or fail: damaged newer checkpoints are only skipped, and the
    next train.py on the run, which owns the checkpoint index, sets them aside."""
    return recover_latest(run_dir, warn=lambda line: print(line, file=sys.stderr), move=False)


def weights_to_use(path: str, asked: Optional[str] = None) -> str:
    """The weights to read from the checkpoint at `path`: `asked` (--weights: ema or raw), by
    default ema when it holds averaged weights, else raw; ema asked of one without is refused."""
    held = holds_average(path)
    if asked == "ema" and not held:
        raise ValueError(f"--weights=ema: checkpoint {path!r} holds no averaged weights (its run "
                         f"trained without --ema_decay); leave --weights out to score its "
                         f"trained weights")
    return asked or ("ema" if held else "raw")


def restore_model(run_dir: str, checkpoint: Optional[str] = None,
                  strategy: Optional[tf.distribute.Strategy] = None,
                  weights: Optional[str] = None,
                  ) -> Tuple[keras.Model, TrainConfig, List[str], str, int]:
    """(model, config, class names, checkpoint path, step) of a run, from its checkpoint.

    With a `strategy`, the model is built in its scope (one copy per tower). The model holds the
    `weights` (--weights) that `weights_to_use` settles on: by default the averaged ones when the
    checkpoint has them. `checkpoint="best"` is the best epoch's (rundir/best.py: best/).
    """
    config = load_run_config(run_dir)
    if checkpoint == BEST:
        checkpoint = best_checkpoint(run_dir)
    if checkpoint is None:
        checkpoint = _latest_readable(run_dir)
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = build_model_from_config(config)
        checkpoints = Checkpoints(run_dir, model)
    try:
        path = checkpoints.restore(checkpoint)
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        # Missing objects (AssertionError), other shapes (ValueError), unreadable (OpError).
        reason = str(e).splitlines()[0][:300]
        raise ValueError(f"Checkpoint {checkpoint or checkpoints.latest!r} does not hold a "
                         f"{config.model} model like the one in {run_dir!r}: {reason}") from None
    if path is None:
        raise ValueError(f"No checkpoint in {checkpoints.directory!r}; has this run trained "
                         f"for at least one epoch or --checkpoint_every steps?")
    if weights_to_use(path, weights) == "ema":
        read_average(path, averaged_weights(model))
    return model, config, read_class_names(run_dir), path, int(checkpoints.step.numpy())
