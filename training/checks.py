"""Checks every training setting before a run reads data or writes its directory.

A setting that cannot train (a zero batch, a negative rate, no epochs, an image smaller than the
network's total stride) is refused with one line naming the flag, the value and what is valid,
instead of a traceback minutes later or a run directory that then refuses the corrected command.
"""
import dataclasses
import math
from typing import Collection, Optional

import inception
from training.config import TrainConfig
from training.pretrained import KERAS_MODEL, is_keras_weights

# The largest width multiplier accepted: 4x GoogLeNet is ~16x its parameters and compute, beyond
# what a machine of this project's users trains; a larger value is almost surely a typo.
MAX_WIDTH_MULTIPLIER = 4.0
MAX_SEED = 2 ** 31 - 1  # scikit-learn's split and TF's stateless seeds both take it


def _show(value):
    if isinstance(value, (tuple, list)):
        return ",".join(_show(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _fail(name, value, expected, recipe_note=""):
    raise ValueError(f"--{name}={_show(value)}{recipe_note}: {expected}")


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_config(config: TrainConfig, given: Collection[str] = (),
                 others_from: Optional[str] = None) -> TrainConfig:
    """Raises ValueError for the first setting of `config` (a filled TrainConfig) that cannot
    train. `given` names the settings set on the command line; any other is named with where it
    came from (`others_from`, by default the dataset's recipe), so the user knows which flag to
    pass."""
    c = config
    others_from = others_from or f"the {c.dataset} default"

    def need(name, ok, expected, value=None):
        if not ok:
            note = "" if name in given else f" ({others_from})"
            _fail(name, getattr(c, name) if value is None else value, expected, note)

    def in_range(name, low, high, *, low_open=False, high_open=False, integer=False,
                 value=None):
        """`value` (by default the setting `name`'s) within low..high."""
        value = getattr(c, name) if value is None else value
        ok = _number(value) and (not integer or isinstance(value, int))
        if ok:
            ok = (value > low if low_open else value >= low) if low is not None else True
            if ok and high is not None:
                ok = value < high if high_open else value <= high
        low_text = None if low is None else f"{'>' if low_open else '>='} {_show(low)}"
        high_text = None if high is None else f"{'<' if high_open else '<='} {_show(high)}"
        bounds = " and ".join(t for t in (low_text, high_text) if t)
        need(name, ok, f"must be {'an integer' if integer else 'a number'} {bounds}", value)

    for field in dataclasses.fields(TrainConfig):  # names, against their registries
        choices = field.metadata.get("choices")
        if choices is not None:
            need(field.name, getattr(c, field.name) in choices(),
                 f"must be one of {', '.join(choices())}")
    smallest = inception.min_image_size(c.model)
    need("image_size", isinstance(c.image_size, int) and c.image_size >= smallest,
         f"--model={c.model} needs images of at least {smallest} pixels (its total stride; default "
         f"{inception.default_image_size(c.model)})")
    in_range("width_multiplier", 0, MAX_WIDTH_MULTIPLIER, low_open=True)
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
    in_range("test_fraction", 0, 1, low_open=True, high_open=True)
    in_range("seed", 0, MAX_SEED, integer=True)

    if c.num_gpus is not None:
        in_range("num_gpus", 1, None, integer=True)
    in_range("batch_size", 1, None, integer=True)
    # Whether it divides by the towers is checked once the towers are known, also before
    # anything is written (devices.check_batch_size).

    in_range("epochs", 1, None, integer=True)
    in_range("lr", 0, None, low_open=True)
    for _, rate in c.lr_overrides:  # a --lr given on resume: it takes over from its step
        in_range("lr", 0, None, low_open=True, value=rate)
    decays = tuple(c.lr_decay_epochs or ())
    if "lr_decay_epochs" in given and decays and c.lr_schedule != "exponential_step":
        need("lr_decay_epochs", False, f"decay epochs are used only by "
             f"--lr_schedule=exponential_step; this run's schedule is {c.lr_schedule}")
    if c.lr_schedule == "exponential_step":
        need("lr_decay_epochs", all(_number(e) and 0 < e < c.epochs for e in decays),
             f"every decay epoch must fall within the run, after 0 and before --epochs="
             f"{c.epochs}")
        need("lr_decay_epochs", list(decays) == sorted(set(decays)),
             "decay epochs must be in increasing order, each once")
    in_range("lr_gamma", 0, 1, low_open=True)
    in_range("warmup_epochs", 0, None)
    # A recipe's warm-up longer than a short trial run (--epochs=1 on a folder) only stops the
    # rate short of its peak; one the user asks for beyond the run is a mistake.
    if "warmup_epochs" in given:
        need("warmup_epochs", c.warmup_epochs <= c.epochs,
             f"the warm-up must end within the run's --epochs={c.epochs}")
    in_range("momentum", 0, 1, high_open=True)
    in_range("weight_decay", 0, None)
    in_range("label_smoothing", 0, 1, high_open=True)
    in_range("aux_weight", 0, None)
    need("ema_decay", _number(c.ema_decay) and (c.ema_decay == 0 or 0 < c.ema_decay < 1),
         "must be 0 (off) or a decay per step between 0 and 1, e.g. 0.999")
    if c.dropout_rate is not None:
        in_range("dropout_rate", 0, 1, high_open=True)
    if c.crop_area is not None:
        area = tuple(c.crop_area)
        need("crop_area", len(area) == 2 and all(_number(a) for a in area)
             and 0 < area[0] <= area[1] <= 1,
             "must be two fractions min,max with 0 < min <= max <= 1")

    in_range("log_every", 1, None, integer=True)
    in_range("checkpoint_every", 0, None, integer=True)
    in_range("keep_checkpoints", 0, None, integer=True)
    in_range("eval_every_epochs", 1, None, integer=True)
    if c.profile_steps is not None:
        steps = tuple(c.profile_steps)
        need("profile_steps", len(steps) == 2 and all(_number(s) and float(s).is_integer()
                                                      for s in steps)
             and 1 <= steps[0] <= steps[1],
             "expected A,B: the first and last global steps to profile, whole numbers with "
             "1 <= A <= B")
    return config
