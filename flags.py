"""Command-line flags shared by train.py, evaluate.py and predict.py.

The flags are made from the settings' own declarations: every field of TrainConfig
(settings/config.py) and of EvalSettings (settings/eval_settings.py) that carries help text becomes
a flag of the same name, its type, default and valid values (read from the registries) included.
Training flags left unset take the dataset's recipe (settings/recipes.py) or, when resuming, the
run's saved settings; the defaults shown are those of a new digits run. Flags read from a file
(absl's --flagfile=FILE, one flag a line; `flagfile_lines` writes one) count as given, as on the
command line, and a flag after --flagfile replaces the file's.
"""
import dataclasses
import typing
from typing import List

from absl import flags

from rundir.recorded import load_run_settings
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


def flagfile_lines(settings_class: type, values: dict) -> List[str]:
    """`values` (settings by field name, e.g. a run's config.json) as the lines of a flagfile
    (`--flagfile=FILE`), one `--name=value` per flag of `settings_class`, in the fields' order:
    lists comma-separated, booleans as --name / --noname. A None value is left out (not given,
    it resolves to None again, or to what the recipe or machine decides), and so are a value
    equal to its field's own default and the fields that are not flags (set by the run, e.g.
    num_classes)."""
    lines = []
    for field in dataclasses.fields(settings_class):
        value = values.get(field.name)
        if field.metadata.get("help") is None or value is None:
            continue
        if field.default is not None and value == field.default:
            # A setting at its own default resolves to it again unwritten (recipes fill only
            # unset ones), and written it would count as given: --augment_ops=2 beside
            # --augment_policy=none is refused as a setting that does nothing.
            continue
        name = _flag_name(field)
        if isinstance(value, bool):
            lines.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, (tuple, list)):
            # str() of a float is its shortest exact form: the file reads back the same number.
            lines.append(f"--{name}={','.join(str(v) for v in value)}")
        else:
            lines.append(f"--{name}={value}")
    return lines


def run_flagfile(run_dir: str) -> str:
    """The settings of the run in `run_dir` (its config.json, as resuming reads it) as a flagfile:
    passed with --flagfile and a new --run_dir, it starts a run that resolves to the same
    settings. Its own --run_dir is a comment. Reads the directory only; raises ValueError (one
    line) when it holds no run."""
    values = load_run_settings(run_dir)
    left_out = []
    # A value the run took from its recipe can be one that settings/checks.py refuses when given
    # (_check_schedule): decay epochs under another schedule than exponential_step, a warm-up
    # longer than a short trial's --epochs. Left out, it resolves from the recipe again.
    if values["lr_decay_epochs"] and values["lr_schedule"] != "exponential_step":
        left_out.append("lr_decay_epochs")
    if (values["warmup_epochs"] or 0) > (values["epochs"] or 0):
        left_out.append("warmup_epochs")
    # The run's own directory only as a comment: the file is for another run, and on a run that
    # resumes its --lr would be a rate change given on resume, not the run's base rate.
    lines = [f"# The settings of the run in --run_dir={run_dir}, from its config.json. "
             f"Pass with --run_dir=<another>: a new run with these settings."]
    if values["lr_overrides"]:
        # Not a flag: a --lr given on resume takes over at a step of that run only.
        changes = ", ".join(f"{lr:g} from step {step}" for step, lr in values["lr_overrides"])
        lines.append(f"# Not here: the rate given on resume ({changes}); a new run keeps --lr.")
    lines += [f"# Left out (refused when given; the recipe's applies): {line}" for line in
              flagfile_lines(TrainConfig, {k: values[k] for k in left_out})]
    lines += flagfile_lines(TrainConfig, {k: v for k, v in values.items()
                                                if k not in (*left_out, "run_dir")})
    return "\n".join(lines) + "\n"


define_flags(TrainConfig)
define_flags(EvalSettings)

# -- Options of one command only ------------------------------------------------------------------
flags.DEFINE_string("restart_from", None, "train.py: continue the run from an older checkpoint of "
                    "its own: an epoch number (the checkpoint saved as it ended) or a name such "
                    "as ckpt-1050; with --lr to change the rate there. Later checkpoints, "
                    "history.csv and logs are moved to <run_dir>/set_aside/, not deleted.")
flags.DEFINE_bool("print_flagfile", False, "train.py: print the settings of the run in --run_dir "
                  "(its config.json) as a flagfile, one --name=value a line, and exit; "
                  "--flagfile=FILE with another --run_dir starts a run with the same settings.")
flags.DEFINE_integer("top_k", 5, "predict.py: classes to print per image.")
