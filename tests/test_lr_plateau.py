"""Tests for --lr_schedule=plateau (training/plateau.py, training/optimization.py,
training/loop.py): the rate falls by --lr_gamma after --plateau_patience evaluations without a
higher validation top-1, the rule is Keras' ReduceLROnPlateau, and a resumed run reduces where an
uninterrupted one would.

The validation scores are scripted (the held-out scoring is replaced by a function returning
them), so the epochs of the reductions are known by hand.
"""
import csv
import os

import keras
import numpy as np
import pytest

from conftest import assert_refused_before_data, cpu_devices, tiny_settings, write_image_folder
from rundir.recorded import resolve_config
from training import heldout
from training.loop import Trainer
from training.plateau import Plateau


def test_the_rule_is_keras_reduce_lr_on_plateau():
    scores = [0.2, 0.5, 0.4, 0.45, 0.5, 0.6, 0.3, 0.3, 0.3, 0.3, 0.7, 0.1]
    # By hand, patience 2: no better than 0.5 at epochs 3-4 (reduced after 4); 5 ties 0.5
    # (not better) and 6 improves; 7-8 (reduced after 8), 9-10 (after 10); 11 improves.
    expected = [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0.125]
    plateau = Plateau(patience=2, gamma=0.5)
    ours = []
    for score in scores:
        plateau.see(score)
        ours.append(float(plateau.factor()))
    assert ours == expected
    # Keras' callback on the same scores, on a model whose optimizer starts at rate 1.
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    callback = keras.callbacks.ReduceLROnPlateau(monitor="val_top1", mode="max", factor=0.5,
                                                 patience=2, min_delta=0.0, verbose=0)
    callback.set_model(model)
    callback.on_train_begin()
    theirs = []
    for epoch, score in enumerate(scores):
        callback.on_epoch_end(epoch, {"val_top1": score})
        theirs.append(float(model.optimizer.learning_rate.numpy()))
    assert theirs == expected


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("plateau") / "photos"
    write_image_folder(str(root), classes=("a", "b", "c"), per_class=10, size=(36, 36))
    return str(root)


def train_with_scores(config, validation_scores, lines):
    """Trains `config` on one tower with these validation top-1 scores, one per evaluation."""
    trainer = Trainer(config, towers=cpu_devices(1), print_fn=lines.append)
    scores = iter(validation_scores)

    def scripted(model, strategy, pipeline, *args, **kwargs):
        top1 = next(scores) if pipeline is trainer.data.validation else 0.5
        return dict(top1=top1, top5=1.0, balanced=top1, loss=1.0 - top1,
                    count=len(pipeline.examples))

    patch = pytest.MonkeyPatch()
    patch.setattr(heldout, "evaluate", scripted)
    try:
        trainer.train()
    finally:
        patch.undo()
    return trainer


def rates(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return [float(row["lr"]) for row in csv.DictReader(f)]


def plateau_settings(photos, run_dir, **extra):
    return tiny_settings(photos, run_dir, val_fraction=0.3, lr=0.01, lr_schedule="plateau",
                         plateau_patience=2, lr_gamma=0.5, **extra)


def test_a_run_lowers_its_rate_after_patience_evaluations_and_resumes_the_count(photos,
                                                                                 tmp_path):
    scores = [0.2, 0.5, 0.4, 0.45, 0.6, 0.3]
    # By hand: epochs 3 and 4 do not beat epoch 2's 0.5, so the rate halves after epoch 4.
    expected = [0.01, 0.01, 0.01, 0.01, 0.005, 0.005]
    whole = str(tmp_path / "whole")
    lines = []
    trainer = train_with_scores(resolve_config(plateau_settings(photos, whole, epochs=6)),
                                scores, lines)
    assert rates(whole) == pytest.approx(expected)
    # The optimizer trains at that rate: its schedule at the last step.
    steps = trainer.data.steps_per_epoch
    assert float(trainer.state.optimizer.learning_rate) == pytest.approx(0.005)
    assert float(trainer.state.schedule(6 * steps - 1)) == pytest.approx(0.005)
    # Said once, right after epoch 4's own line.
    after = lines[lines.index(next(line for line in lines if line.startswith("Epoch 4/6"))) + 1]
    reduced = [line for line in lines if line.startswith("Plateau:")]
    assert reduced == [after] == ["Plateau: validation top-1 has not improved on 0.5000 for 2 "
                       "evaluation(s); the learning rate is multiplied by 0.5 (reduction 1), "
                       "to 0.005."]
    assert any("lr 0.01 (x0.5 after each 2 evaluations without a better validation top-1)"
               in line for line in lines)
    # Stopped after epoch 3 (one evaluation without improvement counted) and resumed for 6:
    # the checkpoint holds the count and the best score, so epoch 4 reduces as above.
    parted = str(tmp_path / "parted")
    train_with_scores(resolve_config(plateau_settings(photos, parted, epochs=3)), scores[:3],
                      [])
    train_with_scores(resolve_config({"run_dir": parted, "epochs": 6}), scores[3:], [])
    assert rates(parted) == pytest.approx(expected)


@pytest.mark.parametrize("given, message", [
    (dict(lr_schedule="plateau"), "--lr_schedule=plateau: plateau reduces the rate when the "
                                  "validation top-1 stops improving: give --val_fraction"),
    (dict(plateau_patience=3, lr_schedule="cosine"),
     "--plateau_patience=3: is the patience of --lr_schedule=plateau; this run's schedule is "
     "cosine"),
    (dict(plateau_patience=0, lr_schedule="plateau", val_fraction=0.1),
     "--plateau_patience=0: must be an integer >= 1"),
])
def test_bad_plateau_settings_are_refused_in_one_line(given, message, tmp_path):
    assert_refused_before_data(given, message, tmp_path)


def test_a_new_rate_on_resume_is_refused(photos, tmp_path):
    run_dir = str(tmp_path / "run")
    train_with_scores(resolve_config(plateau_settings(photos, run_dir, epochs=1)), [0.3], [])
    before = sorted(os.listdir(run_dir))
    with pytest.raises(ValueError, match=r"^--lr=0.1: the run in .* follows "
                                         r"--lr_schedule=plateau"):
        resolve_config({"run_dir": run_dir, "lr": 0.1, "epochs": 2})
    assert sorted(os.listdir(run_dir)) == before
    np.testing.assert_allclose(rates(run_dir), [0.01])
