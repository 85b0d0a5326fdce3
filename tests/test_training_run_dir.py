"""Tests for rundir/recorded.py and config.py: what a run directory accepts and refuses."""
import dataclasses
import json
import os

import pytest

from evaluation import trained
from rundir import recorded as rd
from settings.config import TrainConfig, with_defaults


def test_new_run_takes_dataset_defaults(tmp_path):
    config = rd.resolve_config({"dataset": "digits", "run_dir": str(tmp_path / "r")})
    assert config.model == "minigooglenet" and config.image_size == 32
    assert config.epochs and config.lr and config.batch_size
    default_dir = with_defaults(TrainConfig(dataset="imagenet")).run_dir
    assert default_dir == "runs/imagenet-googlenet_bn"


def saved_run(tmp_path, **settings):
    config = with_defaults(TrainConfig(dataset="folder", data_dir="/data/photos",
                                       run_dir=str(tmp_path / "run"), **settings))
    rd.save_run_config(config)
    return config


def write_checkpoint(run_dir, step):
    """A checkpoint holding only the step: enough for the run to count as started."""
    import tensorflow as tf
    checkpoint = tf.train.Checkpoint(step=tf.Variable(step, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, os.path.join(run_dir, "checkpoints"), 3).save(step)


def test_existing_run_refuses_another_model_or_dataset(tmp_path):
    saved = saved_run(tmp_path, model="googlenet")
    write_checkpoint(saved.run_dir, 12)
    before = open(os.path.join(saved.run_dir, "config.json")).read()
    with pytest.raises(ValueError, match="model='googlenet'.*asks for model='minigooglenet'"):
        rd.resolve_config({"dataset": "folder", "run_dir": saved.run_dir, "model": "minigooglenet"})
    with pytest.raises(ValueError, match="dataset='folder'.*asks for dataset='digits'"):
        rd.resolve_config({"dataset": "digits", "run_dir": saved.run_dir})
    with pytest.raises(ValueError, match="data_dir='/data/photos'"):
        rd.resolve_config({"dataset": "folder", "run_dir": saved.run_dir, "data_dir": "/other"})
    assert open(os.path.join(saved.run_dir, "config.json")).read() == before


def test_resume_keeps_saved_settings_and_takes_new_ones(tmp_path):
    saved = saved_run(tmp_path, model="googlenet", lr=0.05, epochs=5)
    write_checkpoint(saved.run_dir, 12)
    config = rd.resolve_config({"run_dir": saved.run_dir, "epochs": 9})
    assert config.model == "googlenet" and config.epochs == 9 and config.lr == 0.05
    assert config.lr_overrides == ()


def test_the_config_is_frozen_and_a_rate_given_on_resume_is_checked(tmp_path):
    saved = saved_run(tmp_path, model="googlenet", lr=0.05)
    write_checkpoint(saved.run_dir, 12)
    config = rd.resolve_config({"run_dir": saved.run_dir, "lr": 0.01})
    # The run keeps its base rate; the one given takes over at the checkpoint's step.
    assert config.lr == 0.05 and config.lr_overrides == ((12, 0.01),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 0.1
    with pytest.raises(ValueError, match=r"^--lr=-1: must be a number > 0$"):
        rd.resolve_config({"run_dir": saved.run_dir, "lr": -1.0})


def test_a_run_saved_before_a_setting_existed_resumes_with_its_default(tmp_path):
    saved = saved_run(tmp_path, model="googlenet", lr=0.05)
    path = os.path.join(saved.run_dir, "config.json")
    with open(path) as f:
        values = json.load(f)
    del values["augment_on"], values["test_fraction"]
    with open(path, "w") as f:
        json.dump(values, f)
    write_checkpoint(saved.run_dir, 12)
    config = rd.resolve_config({"run_dir": saved.run_dir, "test_fraction": 0.3, "epochs": 9})
    assert config.augment_on == "auto" and config.test_fraction == 0.3 and config.epochs == 9


def test_a_run_with_no_checkpoint_yet_is_started_afresh_by_a_corrected_command(tmp_path):
    # e.g. --image_size=10 was refused after config.json and the split were written.
    saved = saved_run(tmp_path, model="minigooglenet", image_size=10, lr=0.05)
    os.makedirs(os.path.join(saved.run_dir, "data"))
    corrected = rd.resolve_config({"dataset": "folder", "data_dir": "/data/photos",
                                   "run_dir": saved.run_dir, "model": "minigooglenet",
                                   "image_size": 64, "lr": 0.005})
    # The given rate is the run's rate, from the start.
    assert corrected.image_size == 64 and corrected.lr == 0.005 and corrected.lr_overrides == ()
    assert not os.path.exists(os.path.join(saved.run_dir, "data"))  # made for 10-px images


def test_settings_saved_by_a_start_that_never_checkpointed_bind_nothing(tmp_path):
    # An ImageNet start that failed on its data saved the recipe's 300 epochs and decay epochs
    # 70,140,210,280, the rate it was given, and its split.
    data = dict(dataset="imagenet", data_dir="/data/imagenet", run_dir=str(tmp_path / "run"),
                model="minigooglenet")
    rd.save_run_config(rd.resolve_config(dict(data, lr=0.5)))
    os.makedirs(os.path.join(data["run_dir"], "data", "split"))
    # A one-epoch trial has the recipe's decay epochs at the same fractions of its one epoch,
    # not the saved ones (which no longer fall within the run); the rate given before stays.
    trial = rd.resolve_config({"run_dir": data["run_dir"], "epochs": 1})
    assert (trial.dataset, trial.data_dir, trial.model, trial.epochs) == (
        "imagenet", "/data/imagenet", "minigooglenet", 1)
    assert trial.lr_decay_epochs == pytest.approx((70 / 300, 140 / 300, 210 / 300, 280 / 300))
    assert trial.lr == 0.5
    assert trial.given == ("data_dir", "dataset", "epochs", "lr", "model", "run_dir")
    # Same data, model and seed: the split stays.
    assert os.path.isdir(os.path.join(data["run_dir"], "data", "split"))
    # --run_dir alone starts the same run again, as the failed command gave it.
    again = rd.resolve_config({"run_dir": data["run_dir"]})
    assert (again.dataset, again.epochs, again.lr, again.lr_decay_epochs) == (
        "imagenet", 300, 0.5, (70, 140, 210, 280))


def test_foreign_directory_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not a run of this program"):
        rd.resolve_config({"dataset": "digits", "run_dir": str(tmp_path / "mine")})


def test_restore_model_errors(tmp_path):
    with pytest.raises(ValueError, match="has no config.json"):
        trained.restore_model(str(tmp_path))
    saved = saved_run(tmp_path, model="minigooglenet", width_multiplier=0.25, num_classes=3)
    with pytest.raises(ValueError, match="No checkpoint in"):
        trained.restore_model(saved.run_dir)


def test_config_round_trips_through_json(tmp_path):
    saved = saved_run(tmp_path, lr_decay_epochs=(3, 6))
    loaded = rd.load_run_config(saved.run_dir)
    assert loaded == saved
    with pytest.raises(ValueError, match="Unknown settings"):
        TrainConfig.from_dict({**json.load(open(os.path.join(saved.run_dir, "config.json"))),
                               "colour": "blue"})


def test_one_data_folder_spelled_with_a_tilde_relative_or_absolute_is_one_run(tmp_path,
                                                                              monkeypatch):
    """bash leaves `~` unexpanded after `--data_dir=`: the run's data_dir is saved expanded and
    absolute, and a resume spelling the same folder another way is the same run."""
    home = tmp_path / "home"
    (home / "photos").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)
    config = rd.resolve_config({"dataset": "folder", "data_dir": "~/photos",
                                "run_dir": "~/runs/one"})
    assert config.data_dir == str(home / "photos") and config.run_dir == str(home / "runs/one")
    rd.save_run_config(config)
    write_checkpoint(config.run_dir, 12)
    for spelled in ("~/photos", str(home / "photos"), "photos", "./photos/"):
        resumed = rd.resolve_config({"dataset": "folder", "data_dir": spelled,
                                     "run_dir": str(home / "runs" / "one"), "epochs": 9})
        assert resumed.data_dir == str(home / "photos") and resumed.epochs == 9
    with pytest.raises(ValueError, match="holds a run with data_dir="):
        rd.resolve_config({"dataset": "folder", "data_dir": "~/other",
                           "run_dir": str(home / "runs" / "one")})


def test_a_run_saved_with_a_tilde_in_its_data_dir_resumes_with_it_expanded(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    saved = TrainConfig.from_dict({**with_defaults(TrainConfig(
        dataset="folder", data_dir="/placeholder", run_dir=str(tmp_path / "run"))).to_dict(),
        "data_dir": "~/photos"})  # as config.json kept it before paths were normalised
    rd.save_run_config(saved)
    write_checkpoint(saved.run_dir, 12)
    resumed = rd.resolve_config({"dataset": "folder", "data_dir": str(tmp_path / "photos"),
                                 "run_dir": saved.run_dir})
    assert resumed.data_dir == str(tmp_path / "photos")


def test_a_resume_with_another_batch_size_is_refused(tmp_path):
    """Its checkpoints count epochs in steps of the batch it trains with: at step 12 with 3 steps
    an epoch it is in epoch 5, and with 6 (half the batch) it would be in epoch 3."""
    saved = saved_run(tmp_path, batch_size=32)
    write_checkpoint(saved.run_dir, 12)
    before = open(os.path.join(saved.run_dir, "config.json")).read()
    with pytest.raises(ValueError, match=r"^--batch_size=16: the run in .* trains with batch 32"):
        rd.resolve_config({"run_dir": saved.run_dir, "batch_size": 16})
    assert open(os.path.join(saved.run_dir, "config.json")).read() == before
    assert rd.resolve_config({"run_dir": saved.run_dir, "batch_size": 32}).batch_size == 32


def test_a_resume_with_another_optimizer_is_refused(tmp_path):
    """Its checkpoints hold SGD's momentum, not Adam's moments."""
    saved = saved_run(tmp_path)
    write_checkpoint(saved.run_dir, 12)
    before = open(os.path.join(saved.run_dir, "config.json")).read()
    with pytest.raises(ValueError, match=r"^--optimizer=adamw: the run in .* trains with "
                                         r"--optimizer=sgd, whose state its checkpoints hold"):
        rd.resolve_config({"run_dir": saved.run_dir, "optimizer": "adamw", "lr": 0.001})
    assert open(os.path.join(saved.run_dir, "config.json")).read() == before
    assert rd.resolve_config({"run_dir": saved.run_dir, "optimizer": "sgd"}).optimizer == "sgd"
