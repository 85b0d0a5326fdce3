"""The run directory: what a run is (config.json), its data split, checkpoints and logs.

    runs/<dataset>-<model>/
      config.json      every setting (TrainConfig)
      data/            the train / test split and the class names (input_pipeline)
      checkpoints/     model, optimizer, step, epoch
      train/ eval/     TensorBoard logs
      history.csv      one row per epoch (rundir.history)
      set_aside/       what a --restart_from abandoned (rundir.restart), damaged
                       checkpoints (rundir.recovery)
      train.lock       held by the train.py writing the run (rundir.lock)
      skipped_files.txt  images that could not be decoded, if any
      training_done.json written when training finished (evaluate.py --watch stops there)

evaluate.py and predict.py need nothing but this directory.
"""
import json
import os
import shutil
from typing import List, Optional, Union

import tensorflow as tf

import input_pipeline
from rundir.layout import CONFIG_FILE, LOCK_FILE, checkpoint_dir, split_dir
from rundir.restart import Restart
from settings.checks import check_config
from settings.config import (
    IDENTITY_KEYS,
    GivenSettings,
    TrainConfig,
    check_known_settings,
    field_defaults,
    normalised_paths,
    settings_with_defaults,
)
from settings.recipes import FALLBACK


def load_run_settings(run_dir: str) -> dict:
    """The settings saved in `run_dir`'s config.json, by name (checked to be TrainConfig's);
    a field the file does not hold (one added since the run was made) has its default, or the
    value of a recipe that does not set it (`recipes.FALLBACK`: --tta=none, as it scored)."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{run_dir!r} is not a training run directory: it has no {CONFIG_FILE}")
    values = _read_settings_file(path)
    try:
        check_known_settings(values)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return {**field_defaults(), **FALLBACK, **values}


def _read_settings_file(path: str) -> dict:
    """config.json's settings by name; raises one line naming the file when it is damaged. It is
    not rebuilt: nothing else in the run records every setting."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        values = json.loads(data.decode("utf-8")) if data.strip() else None
    except UnicodeDecodeError as error:
        reason = f"byte {error.start} is not UTF-8 text"
    except json.JSONDecodeError as error:
        reason = f"not JSON: {error.msg} at line {error.lineno} column {error.colno}"
    else:
        if isinstance(values, dict):
            return values
        reason = "it is empty" if values is None else "it holds no object of settings"
    raise ValueError(f"{path} is damaged ({reason}): it holds the run's settings, which nothing "
                     f"else in the run records. Nothing was changed; restore it from a copy, or "
                     f"train a new run with another --run_dir")


def load_run_config(run_dir: str) -> TrainConfig:
    """The `TrainConfig` a run directory holds."""
    return TrainConfig.from_dict(load_run_settings(run_dir))


def save_run_config(config: TrainConfig) -> None:
    os.makedirs(config.run_dir, exist_ok=True)
    tmp = os.path.join(config.run_dir, CONFIG_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(config.to_dict(), f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(config.run_dir, CONFIG_FILE))


def resolve_config(given: Union[dict, GivenSettings], restart: Optional[Restart] = None
                   ) -> TrainConfig:
    """The run's config from the settings the user gave (a dict of explicitly set flags, or
    those as `GivenSettings`, with the defaults filled), built and checked once; it is frozen
    from here on.

    A new run fills the rest from the dataset's defaults. A run directory with a checkpoint keeps
    its saved settings (so `--run_dir` alone resumes it), takes the ones given now (e.g. more
    --epochs, a new --lr), and refuses a command that would make it another run (another model,
    dataset, data, size). One without a checkpoint starts afresh (`_start_afresh`). With a
    `restart` (restart.find_restart), the run continues from that older checkpoint: a --lr given
    takes over there, and rate changes made after it are dropped.
    """
    settings = given if isinstance(given, GivenSettings) else GivenSettings.of(given)
    given, values, run_dir = settings.given, settings.filled, settings.run_dir
    if restart is not None and not os.path.exists(os.path.join(run_dir, CONFIG_FILE)):
        raise ValueError(f"--restart_from: {run_dir!r} holds no run to restart")
    if not os.path.exists(os.path.join(run_dir, CONFIG_FILE)):
        if os.path.isdir(run_dir) and set(os.listdir(run_dir)) - {LOCK_FILE}:
            raise ValueError(f"--run_dir={run_dir!r} exists, is not empty and holds no "
                             f"{CONFIG_FILE}: it is not a run of this program; choose another")
        return check_config(TrainConfig.from_dict({**values, "given": given_names(given)}),
                            given)
    # A run saved by a version that kept data_dir as typed is compared as normalised too.
    saved = normalised_paths(load_run_settings(run_dir))
    step = checkpoint_step(run_dir) if restart is None else restart.step
    if step is None:
        return _start_afresh(given, saved)
    if given.get("val_fraction") not in (None, saved["val_fraction"]):
        raise ValueError(
            f"--val_fraction={given['val_fraction']:g}: the run in {run_dir!r} holds out "
            f"{saved['val_fraction']:g} of its training images for validation, and its "
            f"checkpoints trained on the rest; another fraction would score images they trained "
            f"on. Nothing was changed: leave --val_fraction out to resume, or pass another "
            f"--run_dir for a new run")
    changed = [key for key in IDENTITY_KEYS
               if given.get(key) is not None and given[key] != saved[key]]
    if changed:
        key = changed[0]
        raise ValueError(
            f"Run directory {run_dir!r} holds a run with {key}={saved[key]!r}; this "
            f"command asks for {key}={given[key]!r}. Nothing was changed: pass another "
            f"--run_dir for a new run")
    if given.get("batch_size") not in (None, saved["batch_size"]):
        raise ValueError(
            f"--batch_size={given['batch_size']}: the run in {run_dir!r} trains with batch "
            f"{saved['batch_size']}, and its checkpoints count epochs in steps of that batch, "
            f"which another batch would renumber. Nothing was changed: leave --batch_size out to "
            f"resume, or pass another --run_dir for a new run")
    if given.get("optimizer") not in (None, saved["optimizer"]):
        raise ValueError(
            f"--optimizer={given['optimizer']}: the run in {run_dir!r} trains with "
            f"--optimizer={saved['optimizer']}, whose state its checkpoints hold. Nothing was "
            f"changed: leave --optimizer out to resume, or pass another --run_dir for a new run")
    values = {**saved, **{k: v for k, v in given.items() if v is not None}, "run_dir": run_dir}
    saved_note = f"as saved in {os.path.join(run_dir, CONFIG_FILE)}"
    # A run under way keeps its base rate, so its schedule up to now stays as it was; a --lr
    # given now takes over at the checkpoint's step (checks.check_config checks it as --lr), and
    # the trainer drops it again if it equals the rate the schedule already gives there
    # (optimization.settled_overrides). A restart drops the rate changes made after its step.
    overrides = [o for o in saved["lr_overrides"] if restart is None or o[0] <= restart.step]
    if given.get("lr") is not None and values["lr_schedule"] == "plateau":
        # The validation scores set a plateau run's rate from its base; a new base would undo
        # the reductions made so far.
        raise ValueError(f"--lr={given['lr']:g}: the run in {run_dir!r} follows "
                         f"--lr_schedule=plateau, whose rate the validation scores set. Nothing "
                         f"was changed: leave --lr out to resume")
    if given.get("lr") is not None:
        overrides.append([step, given["lr"]])
    values.update(lr=saved["lr"], lr_overrides=overrides,
                  given=tuple(sorted(set(saved["given"]) | set(given_names(given)))))
    return check_config(TrainConfig.from_dict(values), given, saved_note)


def given_names(given: dict) -> tuple:
    """The names of the settings a command gave (flags left unset are None)."""
    return tuple(sorted(key for key, value in given.items() if value is not None))


def _start_afresh(given: dict, saved: dict) -> TrainConfig:
    """The config of a command on a run directory that has no checkpoint yet (a start that
    failed, was refused or was stopped before its first checkpoint): the settings the earlier
    commands gave, with this command's over them, resolved as a new run's.

    A run's saved settings bind it from its first checkpoint on, as resuming reads that
    checkpoint: before it, nothing has trained with them. Only those the user gave are taken
    again (so `--run_dir` alone starts the same run again); the others were derived for that
    command (the recipe's decay epochs at its --epochs), and kept they would refuse or silently
    reshape the corrected command. config.json itself is still written first
    (training.loop.Trainer): it is what makes the directory a run's, so a start that fails
    after the split was written leaves a directory the corrected command accepts. A split made for
    other data settings is dropped; it is remade from the data.
    """
    combined = {**{key: saved[key] for key in saved["given"] if key in saved},
                **{key: value for key, value in given.items() if value is not None}}
    values = {**settings_with_defaults(combined), "given": given_names(combined)}
    config = check_config(TrainConfig.from_dict(values), combined)
    if any(getattr(config, key) != saved[key] for key in IDENTITY_KEYS):
        shutil.rmtree(split_dir(config.run_dir), ignore_errors=True)
    return config


def checkpoint_step(run_dir: str) -> Optional[int]:
    """The step of the latest checkpoint in `run_dir`, read without building a model."""
    latest = tf.train.latest_checkpoint(checkpoint_dir(run_dir))
    if latest is None:
        return None
    return int(tf.train.load_variable(latest, "step/.ATTRIBUTES/VARIABLE_VALUE"))


def class_names_path(run_dir: str) -> str:
    return os.path.join(split_dir(run_dir), input_pipeline.CLASS_NAMES_FILE)


def read_class_names(run_dir: str) -> List[str]:
    return input_pipeline.read_class_names(split_dir(run_dir))
