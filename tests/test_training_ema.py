"""Tests for averaged weights (--ema_decay, training/averaging.py): the average a step keeps on
every tower, its checkpoint and resume, the held-out scores of each epoch, and evaluate.py,
predict.py and the export reading it by default."""
import csv
import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import inception
from conftest import ROOT, cpu_devices, run, scalars, tiny_settings, train_args, write_image
from evaluation.evaluate_run import EvalSettings, evaluate_checkpoint
from evaluation.trained import restore_model
from input_pipeline.preprocessing import decode_image, preprocess_for_eval
from rundir.recorded import read_class_names, resolve_config
from training import devices
from training.averaging import WeightAverage
from training.loop import Trainer
from training.step import StepConfig, make_train_step

QUIET = dict(print_fn=lambda *a: None)
CLASSES = 3


def read_history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


# -- the step: a hand-computed average on two towers ------------------------------------------
def sharded(strategy, tensor):
    per = len(tensor) // strategy.num_replicas_in_sync
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tensor[ctx.replica_id_in_sync_group * per:
                           (ctx.replica_id_in_sync_group + 1) * per])


def per_tower(strategy, variables):
    """[[each tower's copy of each variable]], as numpy arrays."""
    return [[np.array(c.numpy()) for c in strategy.experimental_local_results(
        v.value if isinstance(v, keras.Variable) else v)] for v in variables]


def build_and_train(strategy, decay, steps=3):
    """minigooglenet (batch norm, dropout) trained `steps` steps on two towers, with its average
    when `decay`; the weights seen before the first step and after each one."""
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = inception.build_model("minigooglenet", CLASSES, 32, width_multiplier=0.125)
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
        optimizer.build(model.trainable_variables)
        average = WeightAverage(model, decay, strategy) if decay else None
    step = make_train_step(model, optimizer, strategy, StepConfig(8, CLASSES), average=average)
    seen = [per_tower(strategy, model.weights)]
    for t in range(steps):
        images = tf.random.stateless_uniform((8, 32, 32, 3), (t, 1), -1, 1)
        labels = tf.constant(np.arange(t, t + 8) % CLASSES, tf.int32)
        step(sharded(strategy, images), sharded(strategy, labels))
        seen.append(per_tower(strategy, model.weights))
    return model, average, seen


DECAY = 0.6


@pytest.fixture(scope="module")
def two_towers():
    strategy = devices.make_strategy(cpu_devices(2))
    return (strategy, *build_and_train(strategy, DECAY))


def test_the_average_after_three_steps_on_two_towers_is_the_hand_computed_one(two_towers):
    decay = DECAY
    strategy, model, average, seen = two_towers
    # The weights averaged: every trained weight and batch norm's moving statistics, not
    # dropout's random state.
    expected_paths = ({v.path for v in model.trainable_variables}
                      | {v.path for v in model.weights if "moving_" in v.path})
    assert [w.path for w in average.weights] == [w.path for w in model.weights
                                                 if w.path in expected_paths]
    assert any("moving_mean" in w.path for w in average.weights)
    averaged = {id(w) for w in average.weights}
    index = [i for i, w in enumerate(model.weights) if id(w) in averaged]
    # average_0 = the initial weights; average_t = d x average_{t-1} + (1 - d) x weights_t.
    w0, w1, w2, w3 = ([step[i] for i in index] for step in seen)
    got = per_tower(strategy, average.averages)
    for weight, a, b, c, d, towers in zip(average.weights, w0, w1, w2, w3, got):
        for tower in range(2):
            expected = (decay ** 3 * a[tower] + decay ** 2 * (1 - decay) * b[tower]
                        + decay * (1 - decay) * c[tower] + (1 - decay) * d[tower])
            np.testing.assert_allclose(towers[tower], expected, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{weight.path} on tower {tower}")
        if weight.trainable:  # the towers hold the same trained weights, so the same average
            np.testing.assert_array_equal(towers[0], towers[1], err_msg=weight.path)
    # Not a test that cannot fail: the average is neither the first nor the last weights.
    kernel = next(i for i, w in enumerate(average.weights) if w.path.endswith("kernel"))
    assert np.abs(got[kernel][0] - w3[kernel][0]).max() > 1e-4
    assert np.abs(got[kernel][0] - w0[kernel][0]).max() > 1e-4
    # Keeping the average changes nothing in the training itself.
    _, _, plain = build_and_train(strategy, 0.0)
    for with_average, without in zip(seen[-1], plain[-1]):
        np.testing.assert_array_equal(with_average, without)


def test_swapping_the_average_in_and_out_gives_both_back_bit_for_bit(two_towers):
    strategy, _, average, _ = two_towers
    weights = per_tower(strategy, average.weights)
    averages = per_tower(strategy, average.averages)
    with average.swapped_in():
        assert all(np.array_equal(x, y) for a, b in zip(per_tower(strategy, average.weights),
                                                         averages) for x, y in zip(a, b))
    with pytest.raises(RuntimeError):
        with average.swapped_in():
            raise RuntimeError("scoring failed")
    for now, before in ((average.weights, weights), (average.averages, averages)):
        for a, b in zip(per_tower(strategy, now), before):
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y)


# -- a run from the command line: epochs scored with both, evaluate.py, export ----------------
@pytest.fixture(scope="module")
def ema_run(data_dir, tmp_path_factory):
    """train.py --ema_decay=0.5 for 2 epochs of 3 steps, one tower, a constant rate, in float32
    on every CPU, as the tests below score it (evaluate_checkpoint keeps the policy it is given)."""
    run_dir = str(tmp_path_factory.mktemp("ema") / "run")
    done = run(train_args(data_dir, run_dir, "--model=minigooglenet", "--epochs=2", "--lr=0.05",
                          "--lr_schedule=constant", "--warmup_epochs=0", "--ema_decay=0.5",
                          "--nomixed_precision"))
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir, done.stdout


def test_each_epoch_is_scored_with_both_weights_in_the_log_history_and_tensorboard(ema_run):
    run_dir, stdout = ema_run
    assert "weights averaged (decay 0.5 per step)" in stdout
    epochs = [line for line in stdout.splitlines() if line.startswith("Epoch ")]
    assert len(epochs) == 2 and all("(averaged weights: top-1 " in line for line in epochs)
    assert "; averaged weights: top-1 " in stdout.splitlines()[-1]
    rows = read_history(run_dir)
    evals, events = scalars(os.path.join(run_dir, "eval"))
    for name in ("loss", "top1", "top5"):
        assert [float(r[f"heldout_ema_{name}"]) for r in rows] == pytest.approx(
            evals[f"ema_{name}"], rel=1e-5)
    assert [e.step for e in events.Tensors("epoch_ema_loss")] == [1, 2]
    assert evals["epoch_ema_loss"] == pytest.approx(evals["ema_loss"], rel=1e-6)
    assert evals["epoch_ema_accuracy"] == pytest.approx(evals["ema_top1"], rel=1e-6)
    # The two weights score differently (else the columns could hold one number twice).
    assert all(r["heldout_ema_loss"] != r["heldout_loss"] for r in rows)


def test_evaluate_scores_the_average_by_default_and_the_trained_weights_when_asked(ema_run):
    run_dir, _ = ema_run
    strategy = devices.make_strategy(cpu_devices(1))
    last = read_history(run_dir)[-1]
    default = evaluate_checkpoint(EvalSettings(run_dir, batch_size=4), strategy, **QUIET)
    raw = evaluate_checkpoint(EvalSettings(run_dir, batch_size=4, weights="raw"), strategy,
                              **QUIET)
    # The epoch's two held-out scores, each from its own weights in the checkpoint.
    assert default["weights"] == "ema" and default["loss"] == pytest.approx(
        float(last["heldout_ema_loss"]), abs=1e-4)
    assert raw["weights"] == "raw" and raw["loss"] == pytest.approx(
        float(last["heldout_loss"]), abs=1e-4)
    assert abs(default["loss"] - raw["loss"]) > 1e-3
    with open(os.path.join(run_dir, "eval", "metrics.json")) as f:
        assert json.load(f)["weights"] == "ema"
    with open(os.path.join(run_dir, "eval", "metrics_raw.json")) as f:
        assert json.load(f)["loss"] == pytest.approx(raw["loss"])


def test_predict_and_the_export_use_the_average_by_default(ema_run, tmp_path):
    run_dir, _ = ema_run
    image = write_image(tmp_path / "photo.png", size=(36, 36), fmt="PNG")
    pixels = preprocess_for_eval(decode_image(tf.io.read_file(image)), 32)[None]

    def probabilities(model):
        return tf.nn.softmax(model(pixels, training=False)["logits"])[0].numpy()
    ema = probabilities(restore_model(run_dir, weights="ema")[0])
    raw = probabilities(restore_model(run_dir, weights="raw")[0])
    assert np.abs(ema - raw).max() > 2e-3  # apart by more than predict.py's 3 decimals
    np.testing.assert_allclose(probabilities(restore_model(run_dir)[0]), ema, atol=1e-6)
    export_dir = str(tmp_path / "serving")
    evaluate_checkpoint(EvalSettings(run_dir, batch_size=4, export_dir=export_dir),
                        devices.make_strategy(cpu_devices(1)), **QUIET)
    served = tf.saved_model.load(export_dir).signatures["serving_default"]
    out = served(image_bytes=tf.constant([open(image, "rb").read()]))
    np.testing.assert_allclose(out["probabilities"].numpy()[0], ema, atol=1e-5)
    done = run([sys.executable, os.path.join(ROOT, "predict.py"), f"--checkpoint_dir={run_dir}",
                "--top_k=3", image])
    assert done.returncode == 0, done.stderr[-2000:]
    parts = done.stdout.strip().splitlines()[-1].split(": ", 1)[1].split(", ")
    printed = {name: float(p) for name, p in (part.rsplit(" ", 1) for part in parts)}
    assert printed == pytest.approx(dict(zip(read_class_names(run_dir), ema.tolist())), abs=6e-4)


# -- checkpoints and resuming -----------------------------------------------------------------
def settings(data_dir, run_dir, **extra):
    return tiny_settings(data_dir, run_dir, **{"lr": 0.05, "seed": 3, **extra})


@pytest.mark.slow  # the fast suite resumes an average in the test below
def test_a_resumed_run_restores_its_average_and_goes_on_as_an_uninterrupted_one(data_dir,
                                                                                  tmp_path):
    one = cpu_devices(1)
    straight = Trainer(resolve_config(settings(data_dir, str(tmp_path / "straight"),
                                               ema_decay=0.5)), towers=one, **QUIET)
    straight.train()
    split_dir = str(tmp_path / "split")
    first = Trainer(resolve_config(settings(data_dir, split_dir, epochs=1, ema_decay=0.5)),
                    towers=one, **QUIET)
    first.train()
    saved = [a.numpy() for a in first.state.average.averages]
    assert any(np.abs(a - w.numpy()).max() > 1e-4
               for a, w in zip(saved, first.state.average.weights))
    resumed = Trainer(resolve_config({"run_dir": split_dir, "epochs": 2}), towers=one, **QUIET)
    assert resumed.state.checkpoints.average_restored
    for a, b in zip(resumed.state.average.averages, saved):
        np.testing.assert_array_equal(a.numpy(), b)
    resumed.train()
    for a, b in zip(resumed.state.average.averages + resumed.state.model.weights,
                    straight.state.average.averages + straight.state.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_run_without_an_average_resumed_with_ema_decay_starts_it_from_its_weights(data_dir,
                                                                                    tmp_path):
    run_dir, one, printed = str(tmp_path / "r"), cpu_devices(1), []
    Trainer(resolve_config(settings(data_dir, run_dir, epochs=1)), towers=one, **QUIET).train()
    older = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    resumed = Trainer(resolve_config({"run_dir": run_dir, "epochs": 2, "ema_decay": 0.5}),
                      towers=one, print_fn=printed.append)
    assert not resumed.state.checkpoints.average_restored
    for a, w in zip(resumed.state.average.averages, resumed.state.average.weights):
        np.testing.assert_array_equal(a.numpy(), w.numpy())
    resumed.train()
    assert any("ckpt-3 holds no averaged weights: the average (--ema_decay=0.5) starts from "
               "its weights" in line for line in printed)
    rows = read_history(run_dir)
    assert [bool(r["heldout_ema_top1"]) for r in rows] == [False, True]
    # The older checkpoint has only its trained weights: those by default, ema refused.
    strategy = devices.make_strategy(one)
    report = evaluate_checkpoint(EvalSettings(run_dir, checkpoint=older, batch_size=4), strategy,
                                 **QUIET)
    assert report["weights"] == "raw"
    with pytest.raises(ValueError, match=r"^--weights=ema: checkpoint .*ckpt-3' holds no "
                                         r"averaged weights"):
        evaluate_checkpoint(EvalSettings(run_dir, checkpoint=older, batch_size=4,
                                         weights="ema"), strategy, **QUIET)


# -- the flag ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan")])
def test_ema_decay_outside_zero_to_one_is_refused_naming_the_flag(value, tmp_path):
    with pytest.raises(ValueError, match=r"^--ema_decay=\S+: must be 0 \(off\) or a decay per "
                                         r"step between 0 and 1"):
        resolve_config(dict(dataset="folder", data_dir=str(tmp_path), run_dir=str(tmp_path / "r"),
                            ema_decay=value))


@pytest.mark.parametrize("value", [0.0, 0.5, 0.9999])
def test_ema_decay_zero_or_between_zero_and_one_is_accepted(value, tmp_path):
    config = resolve_config(dict(dataset="folder", data_dir=str(tmp_path),
                                 run_dir=str(tmp_path / "r"), ema_decay=value))
    assert config.ema_decay == value


def test_the_command_line_refuses_a_bad_decay_with_one_line_and_leaves_nothing(data_dir,
                                                                               tmp_path):
    run_dir = str(tmp_path / "run")
    done = run(train_args(data_dir, run_dir, "--ema_decay=1"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("Error: --ema_decay=1: must be 0 (off)")
    assert not os.path.exists(run_dir)
