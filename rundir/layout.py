"""The run directory's layout: every file and folder a run holds, named here and nowhere else.

    runs/<dataset>-<model>/
      config.json        every setting as resolved (settings.config.TrainConfig)
      data/              the train / test split and the class names (input_pipeline names the
                         files inside the folder it is given)
      checkpoints/       model, optimizer, step, epoch (training.checkpoints); `checkpoint` is
                         TensorFlow's index of them
      best/              a copy of the checkpoint of the epoch with the best validation top-1
                         (--val_fraction) and best.json naming it (rundir.best); never pruned
      train/ eval/       TensorBoard logs (a --profile_steps trace goes to train/); validation/
                         the validation split's scores (--val_fraction)
      cache/             a worker's disk cache of decoded images, when --cache asks for one
      history.csv        one row per epoch (rundir.history), drawn as history.png (rundir.plot)
      set_aside/         what a --restart_from abandoned (rundir.restart), damaged checkpoints and
                         a damaged index (rundir.recovery), a damaged history.csv
                         (rundir.history_repair)
      train.lock         held by the train.py writing the run (rundir.lock)
      skipped_files.txt  images that could not be decoded, if any (input_pipeline names it)
      training_done.json written when training finished (evaluate.py --watch stops there)

evaluate.py and predict.py need nothing but this directory.
"""
import os

CONFIG_FILE = "config.json"
SPLIT_DIR = "data"
CHECKPOINT_DIR = "checkpoints"
INDEX_FILE = "checkpoint"  # tf.train.CheckpointManager's list of the checkpoints it keeps
TRAIN_LOG_DIR, EVAL_LOG_DIR = "train", "eval"
# The validation split's scores, in a writer of their own so TensorBoard overlays them with the
# test split's under the same tags ("validation", not "val": a folder's val/ is a test split).
VAL_LOG_DIR = "validation"
BEST_DIR = "best"  # the best epoch's checkpoint, kept apart from checkpoints/' pruning
BEST_FILE = "best.json"  # inside BEST_DIR: which checkpoint it holds, its epoch and score
CACHE_DIR = "cache"
HISTORY_FILE = "history.csv"
PLOT_FILE = "history.png"
SET_ASIDE_DIR = "set_aside"
LOCK_FILE = "train.lock"
DONE_FILE = "training_done.json"  # the last step and checkpoint of a finished run


def config_path(run_dir: str) -> str:
    return os.path.join(run_dir, CONFIG_FILE)


def split_dir(run_dir: str) -> str:
    """Where the run's data split and class names are saved (input_pipeline.load_dataset)."""
    return os.path.join(run_dir, SPLIT_DIR)


def checkpoint_dir(run_dir: str) -> str:
    """Where a run directory keeps its checkpoints."""
    return os.path.join(run_dir, CHECKPOINT_DIR)


def absolute_checkpoint_dir(run_dir: str) -> str:
    """`checkpoint_dir`, absolute, for reading the index's list of checkpoints: TensorFlow joins
    the index's relative entries to the directory it is given, and only rewrites paths it wrote
    relative to a relative directory (runs/... is the default)."""
    return os.path.abspath(checkpoint_dir(run_dir))


def history_path(run_dir: str) -> str:
    return os.path.join(run_dir, HISTORY_FILE)


def done_path(run_dir: str) -> str:
    return os.path.join(run_dir, DONE_FILE)


def log_dir(run_dir: str, kind: str) -> str:
    """TensorBoard's folder of `kind` (TRAIN_LOG_DIR, EVAL_LOG_DIR or VAL_LOG_DIR)."""
    return os.path.join(run_dir, kind)


def best_dir(run_dir: str) -> str:
    """Where the best epoch's checkpoint is kept (rundir.best)."""
    return os.path.join(run_dir, BEST_DIR)
