"""Checks every training setting before a run reads data or writes its directory.

A setting that cannot train (a zero batch, a negative rate, no epochs, an image smaller than the
network's total stride) is refused with one line naming the flag, the value and what is valid,
instead of a traceback minutes later or a run directory that then refuses the corrected command.
"""
import dataclasses
from typing import Callable, Collection, Optional

import inception
from settings import recipes
from settings.choices import KERAS_MODEL, is_keras_weights
from settings.config import POSITIVE, TrainConfig, is_number


def _show(value):
    if isinstance(value, (tuple, list)):
        return ",".join(_show(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _fail(name, value, expected, recipe_note=""):
    raise ValueError(f"--{name}={_show(value)}{recipe_note}: {expected}")


def check_config(config: TrainConfig, given: Collection[str] = (),
                 others_from: Optional[str] = None) -> TrainConfig:
    """Raises ValueError for the first setting of `config` (a filled TrainConfig) that cannot
    train. `given` names the settings set on the command line; any other is named with where it
    came from (`others_from`, by default the dataset's recipe), so the user knows which flag to
    pass. Each field's own valid values are declared beside it (settings/config.py: its registry
    or its range); what depends on other settings is checked here."""
    def need(name, ok, expected, value=None):
        if not ok:
            note = "" if name in given else f" ({others_from or f'the {config.dataset} default'})"
            _fail(name, getattr(config, name) if value is None else value, expected, note)

    for field in dataclasses.fields(TrainConfig):
        value, choices = getattr(config, field.name), field.metadata.get("choices")
        if choices is not None:  # a name, against its registry
            need(field.name, value in choices(), f"must be one of {', '.join(choices())}")
        valid = field.metadata.get("valid")
        if valid is not None:
            need(field.name, valid.contains(value), valid.describe())
    for _, rate in config.lr_overrides:  # a --lr given on resume: it takes over from its step
        need("lr", POSITIVE.contains(rate), POSITIVE.describe(), rate)
    _check_model(config, need)
    _check_schedule(config, given, need)
    _check_other(config, given, need)
    return config


def _check_model(c: TrainConfig, need: Callable) -> None:
    """The image size, what trains and the starting weights, against the model."""
    smallest = inception.min_image_size(c.model)
    need("image_size", isinstance(c.image_size, int) and c.image_size >= smallest,
         f"--model={c.model} needs images of at least {smallest} pixels (its total stride; default "
         f"{inception.default_image_size(c.model)})")
    modules = inception.module_names(c.model)
    need("trainable", c.trainable in ("all", "head", *(f"from:{m}" for m in modules)),
         f"must be all, head or from:<module>, a module of --model={c.model}: "
         f"{', '.join(modules)}")
    if c.init_from is not None and is_keras_weights(c.init_from):
        # Whether the weights are there is looked up when a new run starts
        # (finetune.find_init_source): a run under way no longer reads them.
        need("init_from", c.model == KERAS_MODEL and c.width_multiplier == 1,
             f"Keras' InceptionV3 weights fit --model={KERAS_MODEL} at --width_multiplier=1 "
             f"only; this run is --model={c.model} at --width_multiplier="
             f"{_show(c.width_multiplier)}")
    # Whether the batch divides by the towers is checked once the towers are known, also before
    # anything is written (devices.check_batch_size).


def _check_schedule(c: TrainConfig, given: Collection[str], need: Callable) -> None:
    """The decay epochs and the warm-up, against the schedule and the run's length."""
    decays = tuple(c.lr_decay_epochs or ())
    if "lr_decay_epochs" in given and decays and c.lr_schedule != "exponential_step":
        need("lr_decay_epochs", False, f"decay epochs are used only by "
             f"--lr_schedule=exponential_step; this run's schedule is {c.lr_schedule}")
    if c.lr_schedule == "exponential_step":
        need("lr_decay_epochs", all(is_number(e) and 0 < e < c.epochs for e in decays),
             f"every decay epoch must fall within the run, after 0 and before --epochs="
             f"{c.epochs}")
        need("lr_decay_epochs", list(decays) == sorted(set(decays)),
             "decay epochs must be in increasing order, each once")
    need("lr_schedule", c.lr_schedule != "plateau" or c.val_fraction > 0,
         "plateau reduces the rate when the validation top-1 stops improving: give "
         "--val_fraction (e.g. 0.1)")
    need("plateau_patience", "plateau_patience" not in given or c.lr_schedule == "plateau",
         f"is the patience of --lr_schedule=plateau; this run's schedule is {c.lr_schedule}")
    # A recipe's warm-up longer than a short trial run (--epochs=1 on a folder) only stops the
    # rate short of its peak; one the user asks for beyond the run is a mistake.
    if "warmup_epochs" in given:
        need("warmup_epochs", c.warmup_epochs <= c.epochs,
             f"the warm-up must end within the run's --epochs={c.epochs}")


def _check_other(c: TrainConfig, given: Collection[str], need: Callable) -> None:
    """The settings whose valid values are not one range: the optimizer's rate, the
    micro-batches, the average's decay, the crop's area, the test-time mirrors and the profiled
    steps."""
    # The recipes' rates are SGD's (0.1 for a batch of 128); Adam-type updates are already
    # normalised per weight, and at that rate they diverge.
    need("lr", c.optimizer == "sgd" or "lr" in given or "lr" in c.given,
         f"the recipes' rate is SGD's; give --lr with --optimizer={c.optimizer} (e.g. 0.001)")
    need("grad_accum_steps", c.batch_size % c.grad_accum_steps == 0,
         f"--batch_size={c.batch_size} must divide into {c.grad_accum_steps} micro-batches "
         f"(per tower too)")
    trains_with = c.augmentation or recipes.get_recipe(c.dataset).augmentation
    need("tta", c.tta == "none" or trains_with.flip,
         "this run trains without flips (a mirrored digit is another symbol), so its "
         "test-time views cannot be mirrored: use --tta=none")
    need("ema_decay", is_number(c.ema_decay) and (c.ema_decay == 0 or 0 < c.ema_decay < 1),
         "must be 0 (off) or a decay per step between 0 and 1, e.g. 0.999")
    # The patience counts validation scores: without a validation split the only held-out
    # score is the test split's, and choosing when to stop on it leaks the test set.
    need("early_stopping", c.early_stopping == 0 or c.val_fraction > 0,
         "needs a validation split to watch: give --val_fraction (e.g. 0.1)")
    # A policy's strength and RandAugment's op count mean nothing without the policy.
    need("augment_magnitude", c.augment_magnitude is None or c.augment_policy != "none",
         "sets the strength of --augment_policy, which is none: give --augment_policy too")
    need("augment_ops", "augment_ops" not in given or c.augment_policy == "randaugment",
         f"is RandAugment's number of ops; this run's --augment_policy is {c.augment_policy}")
    # What the recipe's crop and flips allow, before any data is read.
    for name in ("crop_area", "pad"):
        refusal = recipes.crop_refusal(name, trains_with)
        need(name, getattr(c, name) is None or refusal is None, refusal)
    need("alternate_flips", not c.alternate_flips or trains_with.flip,
         "this recipe does not flip its images (a mirrored digit is another symbol)")
    if c.crop_area is not None:
        area = tuple(c.crop_area)
        need("crop_area", len(area) == 2 and all(is_number(a) for a in area)
             and 0 < area[0] <= area[1] <= 1,
             "must be two fractions min,max with 0 < min <= max <= 1")
    if c.profile_steps is not None:
        steps = tuple(c.profile_steps)
        need("profile_steps", len(steps) == 2 and all(is_number(s) and float(s).is_integer()
                                                      for s in steps)
             and 1 <= steps[0] <= steps[1],
             "expected A,B: the first and last global steps to profile, whole numbers with "
             "1 <= A <= B")
