"""Tests for --val_fraction, --early_stopping and best/ (input_pipeline/datasets.py, rundir/best.py,
training/loop.py, evaluate.py --checkpoint=best).

The epoch whose validation top-1 peaks is made known by construction: the held-out scoring is
replaced by one returning scripted scores, the test split's disagreeing with the validation's.
"""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import input_pipeline
from conftest import (
    ENV,
    ROOT,
    assert_refused_before_data,
    cpu_devices,
    scalars,
    tiny_settings,
    write_image_folder,
)
from evaluation.evaluate_run import EvalSettings, evaluate_checkpoint, watch
from evaluation.evaluate_run import run as run_evaluation
from evaluation.trained import restore_model
from rundir.best import BestEpoch, best_checkpoint, read_best
from rundir.history_repair import repair_history
from rundir.plot import curves
from rundir.recorded import resolve_config
from training import heldout
from training.loop import Trainer

QUIET = dict(print_fn=lambda *a: None)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three classes of ten 36x36 JPEGs: 7 train and 3 test images per class at 0.3."""
    root = tmp_path_factory.mktemp("val") / "photos"
    write_image_folder(str(root), classes=("a", "b", "c"), per_class=10, size=(36, 36))
    return str(root)


def settings(data_dir, run_dir, **extra):
    return tiny_settings(data_dir, run_dir, **{"epochs": 8, **extra})


def paths(examples):
    return set(examples.paths.tolist())


def per_class(examples):
    return np.bincount(examples.labels).tolist()


def test_the_validation_split_is_per_class_disjoint_seeded_and_saved(photos, tmp_path):
    plain = input_pipeline.load_dataset("folder", photos, split_dir=str(tmp_path / "plain"))
    split_dir = str(tmp_path / "data")
    splits = input_pipeline.load_dataset("folder", photos, split_dir=split_dir, val_fraction=0.3)
    # Out of the training images alone: the test split is the one made without validation.
    assert paths(splits.test) == paths(plain.test)
    assert paths(splits.train) | paths(splits.validation) == paths(plain.train)
    assert not paths(splits.train) & paths(splits.validation)
    assert not paths(splits.validation) & paths(splits.test)
    assert sorted(per_class(splits.validation)) == [2, 2, 3]  # 30% of 21, each class in it
    assert os.path.exists(os.path.join(split_dir, input_pipeline.VALIDATION_FILE))
    # Reloaded (a resumed run) it is the saved one, also when another seed is passed.
    again = input_pipeline.load_dataset("folder", photos, split_dir=split_dir, seed=5,
                                        val_fraction=0.3)
    assert paths(again.validation) == paths(splits.validation)
    assert paths(again.train) == paths(splits.train)
    # Seeded: the same seed makes the same split, another seed another one.
    same = input_pipeline.load_dataset("folder", photos, split_dir=str(tmp_path / "same"),
                                       val_fraction=0.3)
    other = input_pipeline.load_dataset("folder", photos, split_dir=str(tmp_path / "other"),
                                        seed=5, val_fraction=0.3)
    assert paths(same.validation) == paths(splits.validation)
    assert paths(other.validation) != paths(splits.validation)


def test_a_layout_with_its_own_test_split_keeps_it_whole(tmp_path):
    root = tmp_path / "presplit"
    write_image_folder(str(root / "train"), classes=("a", "b"), per_class=5, size=(36, 36))
    write_image_folder(str(root / "test"), classes=("a", "b"), per_class=3, size=(36, 36))
    split_dir = str(tmp_path / "data")
    splits = input_pipeline.load_dataset("folder", str(root), split_dir=split_dir,
                                         val_fraction=0.2)
    assert len(splits.test) == 6 and all("/test/" in p for p in splits.test.paths)
    assert per_class(splits.validation) == [1, 1]
    assert all("/train/" in p for p in splits.validation.paths)
    assert len(splits.train) == 8 and not paths(splits.train) & paths(splits.validation)
    with pytest.raises(ValueError, match="^--val_fraction: 0.9 of the 10 training images"):
        input_pipeline.load_dataset("folder", str(root), split_dir=str(tmp_path / "d2"),
                                    val_fraction=0.9)


@pytest.fixture(scope="module")
def stopped_run(photos, tmp_path_factory):
    """A run whose scripted validation top-1 peaks at epoch 2, with --early_stopping=2 and a
    test top-1 that peaks at epoch 4 instead: (run dir, result, trainer, weights per epoch,
    printed lines)."""
    run_dir = str(tmp_path_factory.mktemp("run") / "stops")
    config = resolve_config(settings(photos, run_dir, val_fraction=0.3, early_stopping=2,
                                     keep_checkpoints=1))
    lines = []
    trainer = Trainer(config, towers=cpu_devices(1), print_fn=lines.append)
    validation = iter([0.2, 0.5, 0.4, 0.45, 0.9, 0.9, 0.9, 0.9])
    test = iter([0.9, 0.1, 0.2, 0.95, 0.3, 0.3, 0.3, 0.3])
    weights = []

    def scripted(model, strategy, pipeline, *args, **kwargs):
        if pipeline is trainer.data.validation:
            weights.append([w.copy() for w in model.get_weights()])
            top1 = next(validation)
        else:
            assert pipeline is trainer.data.test
            top1 = next(test)
        return dict(top1=top1, top5=1.0, balanced=top1, loss=1.0 - top1,
                    count=len(pipeline.examples))

    patch = pytest.MonkeyPatch()
    patch.setattr(heldout, "evaluate", scripted)
    try:
        result = trainer.train()
    finally:
        patch.undo()
    return run_dir, result, trainer, weights, lines


def history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_early_stopping_stops_patience_evaluations_after_the_peak(stopped_run):
    run_dir, result, trainer, weights, lines = stopped_run
    steps = trainer.data.steps_per_epoch
    # Peak at epoch 2, two evaluations without improvement (epochs 3 and 4): stopped after 4.
    assert result["step"] == 4 * steps
    rows = history(run_dir)
    assert [float(r["val_top1"]) for r in rows] == [0.2, 0.5, 0.4, 0.45]
    assert [float(r["heldout_top1"]) for r in rows] == [0.9, 0.1, 0.2, 0.95]
    with open(os.path.join(run_dir, "best", "best.json")) as f:
        best = json.load(f)
    # The choice follows validation (epoch 2), not the test split (which peaks at epoch 4).
    assert best["epoch"] == 2 and best["step"] == 2 * steps and best["metric"] == "val_top1"
    assert best["score"] == 0.5
    # --keep_checkpoints=1 pruned epoch 2's checkpoint; best/ holds its weights still.
    assert not os.path.exists(os.path.join(run_dir, "checkpoints", f"ckpt-{2 * steps}.index"))
    model = restore_model(run_dir, "best")[0]
    for kept, scored in zip(model.get_weights(), weights[1]):
        np.testing.assert_array_equal(kept, scored)
    assert sorted(os.listdir(os.path.join(run_dir, "best"))) == [
        "best.json", f"ckpt-{2 * steps}.data-00000-of-00001", f"ckpt-{2 * steps}.index"]
    assert any(" / 7 validation images (out of the training images)" in line
               for line in lines)
    epoch_lines = [line for line in lines if line.startswith("Epoch ")]
    assert len(epoch_lines) == 4
    assert "| validation top-1 0.5000 | test top-1 0.1000 top-5 1.0000 |" in epoch_lines[1]
    assert lines[-1].startswith("Early stopping: val_top1 has not improved for 2 evaluation(s) "
                               "since epoch 2 (0.5000)")


def test_validation_and_test_scores_are_logged_apart(stopped_run):
    run_dir = stopped_run[0]
    validation, _ = scalars(os.path.join(run_dir, "validation"))
    test, _ = scalars(os.path.join(run_dir, "eval"))
    assert validation["top1"] == pytest.approx([0.2, 0.5, 0.4, 0.45])
    assert validation["epoch_accuracy"] == pytest.approx([0.2, 0.5, 0.4, 0.45])
    assert test["top1"] == pytest.approx([0.9, 0.1, 0.2, 0.95])
    panels = curves(history(run_dir))
    assert [y for _, y in panels["top-1 (%) by epoch"]["validation"]] == pytest.approx(
        [20, 50, 40, 45])


def test_a_resumed_run_keeps_its_validation_split_and_best_so_far(stopped_run, photos):
    run_dir, result, trainer, _, _ = stopped_run
    lines = []
    resumed = Trainer(resolve_config({"run_dir": run_dir}), towers=cpu_devices(1),
                      print_fn=lines.append)
    assert paths(resumed.splits.validation) == paths(trainer.splits.validation)
    assert paths(resumed.splits.train) == paths(trainer.splits.train)
    # The run already used up its patience: it stops at once, its best epoch known.
    assert resumed.train()["step"] == result["step"]
    assert any(line.startswith("Early stopping: val_top1 has not improved for 2 evaluation(s) "
                               "since epoch 2 (0.5000)") for line in lines)
    assert resumed.best.epoch == 2 and resumed.best.since == 2
    with pytest.raises(ValueError, match=r"^--val_fraction=0.2: the run in .* holds out 0.3 of "
                                         r"its training images"):
        resolve_config({"run_dir": run_dir, "val_fraction": 0.2})


def test_a_history_rebuilt_from_the_logs_keeps_the_validation_scores(stopped_run, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(stopped_run[0], run_dir)
    steps = stopped_run[2].data.steps_per_epoch
    with open(os.path.join(run_dir, "history.csv"), "a") as f:
        f.write("5,cut off")  # a crash mid-write
    lines = []
    repair_history(run_dir, 4, steps, lines.append)
    assert lines[0].endswith("rebuilt from the TensorBoard logs in train/, eval/ and validation/ "
                             "(4 of 4 epochs; train_loss, images_per_second and epoch_seconds, "
                             "which the logs do not hold per epoch, left empty).")
    rows = history(run_dir)
    assert [float(r["val_top1"]) for r in rows] == pytest.approx([0.2, 0.5, 0.4, 0.45])
    assert [float(r["heldout_top1"]) for r in rows] == pytest.approx([0.9, 0.1, 0.2, 0.95])
    # So a resumed run still knows its best epoch and the evaluations since.
    best = BestEpoch.resume(run_dir, ema=False)
    assert (best.epoch, best.since) == (2, 2)


def test_evaluate_checkpoint_best_scores_the_best_epochs_weights(stopped_run, tmp_path):
    run_dir, _, trainer, _, _ = stopped_run
    steps = trainer.data.steps_per_epoch
    report = evaluate_checkpoint(EvalSettings(run_dir, checkpoint="best", batch_size=4),
                                 trainer.towers.strategy, **QUIET)
    assert report["checkpoint"] == os.path.join(run_dir, "best", f"ckpt-{2 * steps}")
    assert report["step"] == 2 * steps and report["count"] == len(trainer.splits.test)
    assert os.path.exists(os.path.join(run_dir, "eval", "metrics_best.json"))
    no_best = str(tmp_path / "no_best")
    os.makedirs(no_best)
    with open(os.path.join(run_dir, "config.json")) as f, \
            open(os.path.join(no_best, "config.json"), "w") as g:
        g.write(f.read())
    with pytest.raises(ValueError, match=r"^--checkpoint=best: .* holds no .*best/"):
        restore_model(no_best, "best")


@pytest.mark.parametrize("given, message", [
    (dict(early_stopping=3), "--early_stopping=3: needs a validation split to watch: give "
                             "--val_fraction"),
    (dict(early_stopping=-1, val_fraction=0.1), "--early_stopping=-1: must be an integer >= 0"),
    (dict(val_fraction=1.0), "--val_fraction=1: must be a number >= 0 and < 1"),
    (dict(val_fraction=-0.1), "--val_fraction=-0.1: must be a number >= 0 and < 1"),
])
def test_bad_values_are_refused_in_one_line_before_data_is_read(given, message, tmp_path):
    assert_refused_before_data(given, message, tmp_path)


def test_train_py_refuses_early_stopping_without_validation(tmp_path):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--dataset=folder",
                           f"--data_dir={tmp_path / 'missing'}", f"--run_dir={tmp_path / 'run'}",
                           "--early_stopping=2"], capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "--early_stopping" in line]
    assert len(errors) == 1 and "needs a validation split" in errors[0]


def test_watch_with_checkpoint_best_scores_the_best_epoch_and_stops(stopped_run):
    run_dir, _, trainer, _, _ = stopped_run
    steps = trainer.data.steps_per_epoch
    lines = []
    reports = watch(EvalSettings(run_dir, checkpoint="best", batch_size=4, watch=True,
                                 watch_timeout=30), trainer.towers.strategy, lines.append,
                    poll_seconds=0.1)
    assert [r["checkpoint"] for r in reports] == [os.path.join(run_dir, "best",
                                                               f"ckpt-{2 * steps}")]
    assert lines[-1] == "Training has finished; stopping."
    with pytest.raises(ValueError, match=r"^--watch scores each new checkpoint .*; "
                                         r"--checkpoint=ckpt-3 names one"):
        run_evaluation(EvalSettings(run_dir, checkpoint="ckpt-3", watch=True))


def test_evaluate_py_checkpoint_best_on_the_command_line(stopped_run):
    run_dir, _, trainer, _, _ = stopped_run
    steps = trainer.data.steps_per_epoch
    done = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"),
                           f"--checkpoint_dir={run_dir}", "--checkpoint=best", "--batch_size=4",
                           ], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    best = os.path.join(run_dir, "best", f"ckpt-{2 * steps}")
    assert f"Checkpoint {best} (trained weights)" in done.stdout


def write_history(run_dir, scores):
    """history.csv rows of epochs 1.. with these val_top1 scores (None: not evaluated)."""
    columns = ["epoch", "step", "val_top1"]
    with open(os.path.join(run_dir, "history.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for epoch, score in enumerate(scores, start=1):
            writer.writerow([epoch, 10 * epoch, "" if score is None else score])


def test_a_resume_rebuilds_the_best_so_far_and_a_copy_a_crash_missed(tmp_path):
    run_dir = str(tmp_path)
    write_history(run_dir, [0.3, 0.6, None, 0.6, 0.5])
    # A crash after epoch 2's checkpoint was saved, before it was copied into best/.
    os.makedirs(os.path.join(run_dir, "checkpoints"))
    for suffix in (".index", ".data-00000-of-00001"):
        with open(os.path.join(run_dir, "checkpoints", "ckpt-20" + suffix), "w") as f:
            f.write(suffix)
    best = BestEpoch.resume(run_dir, ema=False, warn=pytest.fail)
    # A tie is no improvement; an epoch without evaluation does not count.
    assert (best.epoch, best.score, best.since) == (2, 0.6, 2)
    assert best.exhausted(2) and not best.exhausted(3) and not best.exhausted(0)
    assert read_best(run_dir) == dict(epoch=2, step=20, metric="val_top1", score=0.6,
                                      checkpoint="ckpt-20")
    with open(os.path.join(best_checkpoint(run_dir) + ".index")) as f:
        assert f.read() == ".index"
    # A later, better evaluation replaces the copy; the older one's files go.
    for suffix in (".index", ".data-00000-of-00001"):
        with open(os.path.join(run_dir, "checkpoints", "ckpt-60" + suffix), "w") as f:
            f.write("60")
    assert best.record(6, 60, dict(top1=0.7), os.path.join(run_dir, "checkpoints", "ckpt-60"))
    assert sorted(os.listdir(os.path.join(run_dir, "best"))) == [
        "best.json", "ckpt-60.data-00000-of-00001", "ckpt-60.index"]
    assert not best.record(7, 70, dict(top1=0.7), "unused") and best.since == 1
