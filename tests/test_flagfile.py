"""Configuration files: absl's --flagfile with the settings' flags, train.py --print_flagfile, and
the example flagfiles of docs/usage.md, "Configuration files".

A printed flagfile is checked by resolving it as train.py does (flags.given_settings, then
rundir.recorded.resolve_config) and comparing with the run it came from, without training; one
tiny run goes through train.py end to end.
"""
import contextlib
import dataclasses
import json
import os
import re
import sys

import pytest
from absl import flags as absl_flags

import flags
import train
from conftest import ROOT, run, train_args
from rundir.layout import CONFIG_FILE, LOCK_FILE
from rundir.recorded import load_run_settings, resolve_config, save_run_config
from settings.config import GivenSettings, TrainConfig
from settings.eval_settings import EvalSettings
from settings.recipes import RECIPES

FLAGS = absl_flags.FLAGS
# The settings that are flags; the others are set by the run (num_classes, lr_overrides, ...).
FLAG_FIELDS = [f.name for f in dataclasses.fields(TrainConfig) if "help" in f.metadata]


@contextlib.contextmanager
def parsed(*args: str):
    """FLAGS parsed from train.py's command line `args`, unparsed again after."""
    FLAGS.unparse_flags()
    FLAGS(["train.py", *args])
    try:
        yield
    finally:
        FLAGS.unparse_flags()


def resolved(*args: str) -> TrainConfig:
    """The config train.py resolves for a new run from the command line `args`."""
    with parsed(*args):
        return resolve_config(GivenSettings.of(flags.given_settings(TrainConfig)))


def write(path, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def flag_settings(values) -> dict:
    """The flag settings of a config (or config.json's values) but its run directory."""
    values = values.to_dict() if isinstance(values, TrainConfig) else values
    return {name: (tuple(values[name]) if isinstance(values[name], list) else values[name])
            for name in FLAG_FIELDS if name != "run_dir"}


def test_flags_from_a_file_are_given_and_a_later_flag_replaces_the_files(tmp_path):
    path = write(tmp_path / "a.flags", "# a comment\n--lr=0.5\n--lr_decay_epochs=\n--nonesterov\n"
                 "--data_dir=/data/a b\n--epochs=3\n--checkpoint_dir=runs/x\n--crops=10\n")
    with parsed("--epochs=1", f"--flagfile={path}", "--lr=0.7"):
        # The file's --epochs replaces the one before it; the --lr after it replaces the file's.
        assert flags.given_settings(TrainConfig) == dict(
            data_dir="/data/a b", epochs=3, lr=0.7, lr_decay_epochs=(), nesterov=False)
        assert EvalSettings(**flags.given_settings(EvalSettings)) == EvalSettings(
            run_dir="runs/x", crops=10, data_dir="/data/a b")
    # Given from a file, a setting replaces the recipe's, as on the command line.
    config = resolved(f"--flagfile={path}", f"--run_dir={tmp_path / 'run'}")
    assert (config.lr, config.epochs, config.nesterov) == (0.5, 3, False)
    assert config.lr != RECIPES["digits"].settings["lr"]


def test_flagfile_lines_write_each_flag_as_it_is_typed():
    # momentum=0.9 and towers_on_cpu=False are their fields' own defaults: left out.
    values = dict(lr=0.05, nesterov=False, deterministic=True, crop_area=(0.25, 1.0),
                  lr_decay_epochs=(), model="googlenet_bn", num_gpus=None, num_classes=5,
                  lr_overrides=((3, 0.1),), given=("lr",), momentum=0.9, towers_on_cpu=False)
    assert flags.flagfile_lines(TrainConfig, values) == [
        "--model=googlenet_bn", "--crop_area=0.25,1.0", "--lr=0.05", "--lr_decay_epochs=",
        "--nonesterov", "--deterministic"]
    # A field whose flag has another name is written under the flag's.
    assert flags.flagfile_lines(EvalSettings, dict(run_dir="runs/x", crops=10)) == [
        "--checkpoint_dir=runs/x", "--crops=10"]


# New runs of every recipe, and recipe values that are refused when given.
CASES = [[f"--dataset={name}"] for name in sorted(RECIPES)] + [
    ["--dataset=folder", "--epochs=1"],  # the recipe's 2-epoch warm-up is longer than the run
    ["--dataset=imagenet", "--lr_schedule=cosine"],  # the recipe's decay epochs go unused
    ["--dataset=imagenet", "--epochs=30", "--nesterov", "--crop_area=0.2,0.9", "--seed=7",
     "--lr=0.0125", "--profile_steps=3,5", "--ema_decay=0.999", "--tta=mirror"],
]


@pytest.mark.parametrize("args", CASES, ids=[" ".join(c) for c in CASES])
def test_a_printed_flagfile_resolves_to_the_run_it_came_from(tmp_path, args):
    data = ["--data_dir=~/data/x"] if "--dataset=digits" not in args else []
    original = resolved(*args, *data, f"--run_dir={tmp_path / 'a'}")
    save_run_config(original)
    text = flags.run_flagfile(str(tmp_path / "a"))
    copy = resolved(f"--flagfile={write(tmp_path / 'a.flags', text)}",
                    f"--run_dir={tmp_path / 'b'}")
    assert flag_settings(copy) == flag_settings(original)
    assert copy.run_dir == str(tmp_path / "b")
    assert f"--run_dir={tmp_path / 'a'}" not in text.splitlines()  # a comment only
    left_out = [line for line in text.splitlines() if line.startswith("# Left out")]
    if args == ["--dataset=folder", "--epochs=1"]:
        assert left_out == ["# Left out (refused when given; the recipe's applies): "
                            "--warmup_epochs=2"]
    if "--lr_schedule=cosine" in args:
        assert left_out == ["# Left out (refused when given; the recipe's applies): "
                            "--lr_decay_epochs=70,140,210,280"]


def test_what_the_run_decided_is_left_out_and_a_rate_given_on_resume_noted(tmp_path):
    # config.json as a run under way writes it: what the data decided, a --lr given on resume.
    config = dataclasses.replace(resolved(f"--run_dir={tmp_path / 'a'}"), num_classes=10,
                                 precision="float32", lr_overrides=((450, 0.01),))
    save_run_config(config)
    text = flags.run_flagfile(str(tmp_path / "a"))
    assert "# Not here: the rate given on resume (0.01 from step 450); a new run keeps --lr." \
        in text.splitlines()
    names = {re.match(r"--(?:no)?(\w+)", line).group(1) for line in text.splitlines()
             if line.startswith("--")}
    assert names and names <= set(FLAG_FIELDS)
    assert not {"num_classes", "precision", "lr_overrides", "augmentation", "given"} & names


def test_print_flagfile_reads_the_run_only_and_refuses_other_settings(tmp_path, capsys):
    run_dir = tmp_path / "a"
    save_run_config(resolved(f"--run_dir={run_dir}"))
    before = {p: os.stat(run_dir / p).st_mtime_ns for p in os.listdir(run_dir)}
    with parsed(f"--run_dir={run_dir}", "--print_flagfile"):
        train.main(["train.py"])
    assert capsys.readouterr().out == flags.run_flagfile(str(run_dir))
    assert {p: os.stat(run_dir / p).st_mtime_ns for p in os.listdir(run_dir)} == before
    assert LOCK_FILE not in before
    with parsed(f"--run_dir={run_dir}", "--print_flagfile", "--epochs=3"):
        with pytest.raises(ValueError, match="takes no other setting; also given: --epochs$"):
            train.main(["train.py"])
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match=f"has no {CONFIG_FILE}$"):
        flags.run_flagfile(str(tmp_path / "empty"))


def test_print_flagfile_end_to_end(data_dir, tmp_path):
    # One tiny run, its config.json as train.py writes it; the printed file, resolved again.
    run_dir = str(tmp_path / "run")
    done = run(train_args(data_dir, run_dir, "--epochs=1", "--model=minigooglenet"))
    assert done.returncode == 0, done.stderr[-3000:]
    listing = sorted(os.listdir(run_dir))
    printed = run([sys.executable, os.path.join(ROOT, "train.py"), f"--run_dir={run_dir}",
                   "--print_flagfile"])
    assert printed.returncode == 0, printed.stderr[-3000:]
    assert sorted(os.listdir(run_dir)) == listing
    copy = resolved(f"--flagfile={write(tmp_path / 'run.flags', printed.stdout)}",
                    f"--run_dir={tmp_path / 'again'}")
    with open(os.path.join(run_dir, CONFIG_FILE)) as f:
        saved = json.load(f)
    assert flag_settings(copy) == flag_settings(load_run_settings(run_dir)) != {}
    assert saved["num_classes"] == 3  # a settled config.json, not only the flags
    missing = run([sys.executable, os.path.join(ROOT, "train.py"),
                   f"--run_dir={tmp_path / 'nowhere'}", "--print_flagfile"])
    assert missing.returncode == 1 and missing.stdout == ""
    # TensorFlow's own start-up lines may come first; the error is one line, no traceback.
    assert "Traceback" not in missing.stderr
    assert [line for line in missing.stderr.splitlines() if line.startswith("Error")] == [
        f"Error: {str(tmp_path / 'nowhere')!r} is not a training run directory: it has no "
        f"{CONFIG_FILE}"]
    assert not os.path.exists(tmp_path / "nowhere")


def example_flagfiles() -> list:
    """The fenced blocks of docs/usage.md, "Configuration files", that are flagfiles (every line a
    flag or a comment)."""
    text = open(os.path.join(ROOT, "docs", "usage.md"), encoding="utf-8").read()
    section = text.split("\n## Configuration files\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    return [b for b in blocks if all(line.startswith(("--", "#")) for line in b.splitlines())]


def test_the_documented_flagfiles_name_real_flags_and_the_recipes_values(tmp_path):
    examples = example_flagfiles()
    datasets = []
    for i, example in enumerate(examples):
        path = write(tmp_path / f"{i}.flags", example)
        # absl refuses a flag it does not know, and each flag's value of the wrong type.
        with parsed(f"--flagfile={path}"):
            given = flags.given_settings(TrainConfig)
        recipe = RECIPES[given["dataset"]].settings
        assert {k: v for k, v in given.items() if k in recipe} == {
            k: (tuple(recipe[k]) if isinstance(recipe[k], tuple) else recipe[k])
            for k in given if k in recipe}, example
        # It resolves and passes the settings' checks as a new run.
        resolved(f"--flagfile={path}", f"--run_dir={tmp_path / str(i)}")
        datasets.append(given["dataset"])
    assert sorted(datasets) == sorted(RECIPES)
