"""Tests for rundir/restart.py: keep every checkpoint, go back to an older one with a new
rate, and find the abandoned epochs moved aside, not deleted."""
import csv
import os

import pytest

from conftest import cpu_devices, scalars, write_image_folder
from rundir.recorded import load_run_config, resolve_config
from rundir.restart import find_restart, list_checkpoints
from training.loop import Trainer


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("restart") / "shapes"
    write_image_folder(str(root), classes=("a", "b", "c"), per_class=6, size=(36, 36))
    return str(root)


QUIET = dict(towers=cpu_devices(1), print_fn=lambda *a: None)


def history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def train(data_dir, run_dir, **extra):
    settings = dict(dataset="folder", data_dir=data_dir, run_dir=run_dir, model="minigooglenet",
                    image_size=32, width_multiplier=0.125, batch_size=4, epochs=4, lr=0.01,
                    lr_schedule="constant", warmup_epochs=0, **extra)
    return Trainer(resolve_config(settings), **QUIET).train()


def test_keep_checkpoints_zero_keeps_every_one_and_three_keeps_three(data_dir, tmp_path):
    # 12 training images, batch 4: 3 steps per epoch.
    every, recent = str(tmp_path / "every"), str(tmp_path / "recent")
    train(data_dir, every, keep_checkpoints=0)
    train(data_dir, recent, keep_checkpoints=3)
    assert [(r.step, r.epoch) for r in list_checkpoints(every)] == [(3, 1), (6, 2), (9, 3),
                                                                  (12, 4)]
    assert [r.step for r in list_checkpoints(recent)] == [6, 9, 12]
    with pytest.raises(ValueError, match=r"--restart_from=1: no such checkpoint .* it keeps "
                                         r"epochs 2, 3, 4 \(ckpt-6, ckpt-9, ckpt-12\)"):
        find_restart(recent, "1")
    assert not os.path.exists(os.path.join(recent, "set_aside"))  # refused before moving anything


def test_restart_from_an_older_epoch_with_a_lower_rate(data_dir, tmp_path, monkeypatch):
    # A relative run directory, like the default runs/<dataset>-<model>: the checkpoint index
    # holds paths relative to its own directory, which the restart must read and write alike.
    monkeypatch.chdir(tmp_path)
    run_dir = os.path.join("runs", "run")
    train(data_dir, run_dir, keep_checkpoints=0)
    before = history(run_dir)
    assert [r["epoch"] for r in before] == ["1", "2", "3", "4"]
    checkpoint_files = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))

    restart = find_restart(run_dir, "2")
    assert (os.path.basename(restart.path), restart.step, restart.epoch) == ("ckpt-6", 6, 2)
    assert find_restart(run_dir, "ckpt-6") == restart
    config = resolve_config({"run_dir": run_dir, "lr": 0.001}, restart)
    assert config.lr_overrides == ((6, 0.001),)
    trainer = Trainer(config, restart=restart, **QUIET)
    assert int(trainer.state.checkpoints.step.numpy()) == 6
    assert trainer.train()["step"] == 12

    # The abandoned epochs are set aside whole: checkpoints, history, event files.
    (aside,) = os.listdir(os.path.join(run_dir, "set_aside"))
    aside = os.path.join(run_dir, "set_aside", aside)
    assert aside.endswith(os.sep + os.path.basename(aside)) and "after-step-6-" in aside
    assert sorted(os.listdir(os.path.join(aside, "checkpoints"))) == sorted(
        f for f in checkpoint_files if f.startswith(("ckpt-9.", "ckpt-12.")))
    with open(os.path.join(aside, "history.csv"), newline="") as f:
        assert list(csv.DictReader(f)) == before
    old_train, _ = scalars(os.path.join(aside, "train"))
    assert len(old_train["epoch_loss"]) == 4

    # The run continues from epoch 2: one row and one point per epoch, the first two unchanged.
    after = history(run_dir)
    assert [r["epoch"] for r in after] == ["1", "2", "3", "4"]
    assert after[:2] == before[:2] and after[2]["wall_time"] >= before[3]["wall_time"]
    assert [float(r["lr"]) for r in after] == pytest.approx([0.01, 0.01, 0.001, 0.001])
    train_logs, events = scalars(os.path.join(run_dir, "train"))
    assert [e.step for e in events.Tensors("epoch_loss")] == [1, 2, 3, 4]
    assert train_logs["epoch_loss"][:2] == old_train["epoch_loss"][:2]
    steps = [e.step for e in events.Tensors("learning_rate")]
    assert steps == sorted(set(steps)) and steps[-1] == 12
    _, eval_events = scalars(os.path.join(run_dir, "eval"))
    assert [e.step for e in eval_events.Tensors("top1")] == [3, 6, 9, 12]
    assert [r.step for r in list_checkpoints(run_dir)] == [3, 6, 9, 12]
    with open(os.path.join(run_dir, "checkpoints", "checkpoint")) as f:
        assert "runs" not in f.read()  # still relative: the run directory can be moved
    # The rate change recorded is the one made at the restart, nothing from the abandoned part.
    assert load_run_config(run_dir).lr_overrides == ((6, 0.001),)
