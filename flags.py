"""Command-line flags shared by train.py, evaluate.py and predict.py.

The flags are made from the settings' own declarations: every field of TrainConfig
(settings/config.py) and of EvalSettings (settings/eval_settings.py) that carries help text becomes
a flag of the same name, its type, default and valid values (read from the registries) included.
Training flags left unset take the dataset's recipe (settings/recipes.py) or, when resuming, the
run's saved settings; the defaults shown are those of a new digits run.
"""
import dataclasses
import typing

from absl import flags

from settings.config import TrainConfig
from settings.eval_settings import EvalSettings

FLAGS = flags.FLAGS


def _flag_name(field: dataclasses.Field):
    return field.metadata.get("flag") or field.name


def _base_type(field: dataclasses.Field):
    """int, float, bool, str or tuple, from the annotation (Optional[X] -> X)."""
    kind = field.type
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if typing.get_origin(kind) is typing.Union and len(args) == 1 else kind


def define_flags(settings_class: type) -> None:
    """One flag per field of `settings_class` with help text, unless a flag of that name exists
    (a setting shared with an earlier class is declared there)."""
    for field in dataclasses.fields(settings_class):
        name, help_text = _flag_name(field), field.metadata.get("help")
        if help_text is None or name in FLAGS:
            continue
        kind, default, choices = _base_type(field), field.default, field.metadata.get("choices")
        if choices is not None:
            flags.DEFINE_enum(name, None if default is None else str(default),
                              [str(c) for c in choices()], help_text)
        elif kind is bool:
            flags.DEFINE_bool(name, default, help_text)
        elif kind is int:
            flags.DEFINE_integer(name, default, help_text)
        elif kind is float:
            flags.DEFINE_float(name, default, help_text)
        elif kind is tuple:
            flags.DEFINE_list(name, default, help_text)
        else:
            flags.DEFINE_string(name, default, help_text)


def given_settings(settings_class: type) -> dict:
    """{field: value} of the flags of `settings_class` set on the command line, in the fields'
    types; the fields not given keep their defaults (a recipe's or a saved run's, for training)."""
    given = {}
    for field in dataclasses.fields(settings_class):
        name = _flag_name(field)
        if name not in FLAGS or not FLAGS[name].present:
            continue
        value, kind = FLAGS[name].value, _base_type(field)
        if value is not None and kind is tuple:
            try:
                value = tuple(float(v) for v in value)
            except ValueError:
                raise ValueError(f"--{name}={','.join(value)}: expected numbers separated by "
                                 f"commas") from None
        elif value is not None and kind in (int, float) and isinstance(value, str):  # an enum
            value = kind(value)
        given[field.name] = value
    return given


define_flags(TrainConfig)
define_flags(EvalSettings)

# -- Options of one command only ------------------------------------------------------------------
flags.DEFINE_string("restart_from", None, "train.py: continue the run from an older checkpoint of "
                    "its own: an epoch number (the checkpoint saved as it ended) or a name such "
                    "as ckpt-1050; with --lr to change the rate there. Later checkpoints, "
                    "history.csv and logs are moved to <run_dir>/set_aside/, not deleted.")
flags.DEFINE_integer("top_k", 5, "predict.py: classes to print per image.")
