"""flags.py: the flags are made from the settings' declarations, choices from the registries."""
import dataclasses
import os
import re
import subprocess
import sys

import pytest
from absl import flags as absl_flags

import flags
import inception
import input_pipeline
from input_pipeline.crops import CROP_COUNTS
from settings import choices
from settings.config import TrainConfig
from settings.eval_settings import EvalSettings
from settings.recipes import RECIPES

FLAGS = absl_flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_setting_with_help_is_a_flag_with_its_default_and_help():
    for cls in (TrainConfig, EvalSettings):
        for field in dataclasses.fields(cls):
            if "help" not in field.metadata:
                continue
            flag = FLAGS[field.metadata.get("flag") or field.name]
            assert flag.help.endswith(field.metadata["help"])
            if cls is TrainConfig or field.name not in {f.name for f in dataclasses.fields(
                    TrainConfig)}:
                assert flag.default == (None if field.default is None else
                                        str(field.default) if field.metadata["choices"] else
                                        field.default)
    # Set by the run, never by the user.
    assert "lr_overrides" not in FLAGS and "num_classes" not in FLAGS


@pytest.mark.parametrize("name, registry", [
    ("dataset", sorted(RECIPES)), ("model", inception.model_names()),
    ("cache", input_pipeline.CACHE_MODES), ("lr_schedule", choices.SCHEDULES),
    ("strategy", choices.STRATEGIES), ("augment_on", choices.AUGMENT_ON),
    ("augment_policy", choices.AUGMENT_POLICIES),
    ("mixed_precision_dtype", choices.MIXED_PRECISION_DTYPES),
    ("crops", [str(c) for c in CROP_COUNTS])])
def test_enum_choices_are_the_registries(name, registry):
    assert list(FLAGS[name].parser.enum_values) == list(registry)


@pytest.mark.parametrize("flag", ["--crop_area=0.2,big", "--profile_steps=two,3"])
def test_a_list_that_is_not_numbers_is_refused_naming_its_flag(flag):
    FLAGS.unparse_flags()
    FLAGS(["train.py", flag])
    try:
        with pytest.raises(ValueError, match=f"^{re.escape(flag)}: expected numbers separated by "
                                             "commas"):
            flags.given_settings(TrainConfig)
    finally:
        FLAGS.unparse_flags()


def test_given_settings_holds_only_what_the_command_line_set_in_the_fields_types():
    argv = ["train.py", "--lr=0.5", "--lr_decay_epochs=3,7.5", "--nonesterov", "--crops=10",
            "--checkpoint_dir=runs/x", "--batch_size=8"]
    FLAGS.unparse_flags()
    FLAGS(argv)
    try:
        assert flags.given_settings(TrainConfig) == dict(
            lr=0.5, lr_decay_epochs=(3.0, 7.5), nesterov=False, batch_size=8)
        assert EvalSettings(**flags.given_settings(EvalSettings)) == EvalSettings(
            run_dir="runs/x", crops=10, batch_size=8)
    finally:
        FLAGS.unparse_flags()


def test_the_flags_are_made_without_loading_the_evaluation():
    # train.py's flags come from the settings' declarations, not from the application that
    # evaluates (a fresh process: this one has imported everything).
    code = "import sys, flags; print('evaluation.evaluate_run' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True,
                         text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}).stdout
    assert out.strip().splitlines()[-1] == "False"
