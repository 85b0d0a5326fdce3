"""Tests for training/loop.py, in-process: two CPU towers train, log, checkpoint, resume, refuse."""
import csv
import dataclasses
import datetime
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from conftest import (
    cpu_devices,
    profiled_steps,
    profiles,
    scalars,
    tiny_settings,
    write_image_folder,
)
from evaluation.trained import restore_model
from host.signals import StopOnSignal
from rundir.history import History
from rundir.recorded import load_run_config, resolve_config, save_run_config
from settings.recipes import get_recipe
from training.checkpoints import Checkpoints
from training.loop import Trainer, TrainingInterrupted
from training.optimization import schedule_change
from training.profiling import StepProfiler


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop") / "shapes"
    write_image_folder(str(root), classes=("a", "b", "c"), per_class=6, size=(36, 36))
    return str(root)


# MiniGoogLeNet unless a test needs GoogLeNet's aux heads: a tenth of the graph to trace.
settings = tiny_settings


@pytest.fixture(scope="module")
def two_tower_run(data_dir, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("run") / "two_towers")
    config = resolve_config(settings(data_dir, run_dir, model="googlenet", crop_area=(0.3, 0.9),
                                     tta="mirror"))
    trainer = Trainer(config, towers=cpu_devices(2), print_fn=lambda *a: None)
    # A folder of 12 training images is a small collection: its recipe's augmentation, with the
    # crop's area range the run asked for.
    assert trainer.data.train.augmentation == get_recipe("folder").augmentation_for(12, (0.3, 0.9))
    assert trainer.data.train.augmentation.hue == 0.0
    assert trainer.data.train.augmentation.min_area == 0.3
    result = trainer.train()
    return run_dir, result


def test_every_tensorboard_tag_is_written_and_finite(two_tower_run):
    run_dir, result = two_tower_run
    train, events = scalars(os.path.join(run_dir, "train"))
    for tower in ("cpu_0", "cpu_1"):
        for metric in ("main_loss", "aux1_loss", "aux2_loss", "accuracy"):
            assert f"{tower}/{metric}" in train, f"{tower}/{metric}"
    for tag in ("total_loss", "train_top1", "learning_rate", "images_per_second"):
        assert tag in train
    assert all(np.isfinite(v).all() for v in train.values())
    # 12 training images (3 classes x 6, 30% held out), batch 4: 3 steps per epoch, 2 epochs.
    assert len(train["cpu_0/main_loss"]) == 6 and result["step"] == 6
    assert train["learning_rate"][0] == pytest.approx(0.01)
    assert "augmented_inputs" in events.Tags()["tensors"] and events.Graph() is not None
    evals, _ = scalars(os.path.join(run_dir, "eval"))
    assert set(evals) == {"top1", "top5", "loss", "epoch_loss", "epoch_accuracy",
                          "tta_top1", "tta_top5", "tta_loss",  # --tta=mirror
                          "epoch_tta_loss", "epoch_tta_accuracy"}
    assert len(evals["top1"]) == 2 and evals["top5"][-1] >= evals["top1"][-1]


def test_train_and_held_out_share_per_epoch_tags(two_tower_run):
    # Keras' convention: epoch_loss / epoch_accuracy in both train/ and eval/, one point per
    # epoch, so TensorBoard overlays them in one chart.
    run_dir, _ = two_tower_run
    train, _ = scalars(os.path.join(run_dir, "train"))
    evals, events = scalars(os.path.join(run_dir, "eval"))
    assert [e.step for e in events.Tensors("epoch_loss")] == [1, 2]
    assert evals["epoch_loss"] == pytest.approx(evals["loss"], rel=1e-6)
    assert evals["epoch_accuracy"] == pytest.approx(evals["top1"], rel=1e-6)
    rows = read_history(run_dir)
    # The training curve is the main logits' plain cross-entropy; the objective (with label
    # smoothing 0.1, the aux heads and weight decay) is larger.
    assert train["epoch_loss"] == pytest.approx([float(r["train_cross_entropy"]) for r in rows],
                                                rel=1e-5)
    assert train["epoch_accuracy"] == pytest.approx([float(r["train_top1"]) for r in rows],
                                                    rel=1e-5)
    assert all(float(r["train_loss"]) > float(r["train_cross_entropy"]) for r in rows)


def read_history(run_dir):
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_history_has_one_row_per_epoch(two_tower_run):
    run_dir, _ = two_tower_run
    rows = read_history(run_dir)
    assert list(rows[0]) == ["epoch", "step", "train_loss", "train_cross_entropy", "train_top1",
                             "heldout_loss", "heldout_top1", "heldout_top5",
                             "heldout_ema_loss", "heldout_ema_top1", "heldout_ema_top5",
                             "heldout_tta_loss", "heldout_tta_top1", "heldout_tta_top5",
                             "heldout_ema_tta_top1", "val_loss", "val_top1", "val_top5",
                             "val_ema_loss", "val_ema_top1", "val_ema_top5", "val_tta_top1",
                             "val_ema_tta_top1", "lr",
                             "images_per_second", "epoch_seconds", "wall_time"]
    assert [(r["epoch"], r["step"]) for r in rows[:2]] == [("1", "3"), ("2", "6")]
    evals, _ = scalars(os.path.join(run_dir, "eval"))
    assert [float(r["heldout_top1"]) for r in rows[:2]] == pytest.approx(evals["top1"], abs=1e-6)
    assert [float(r["heldout_loss"]) for r in rows[:2]] == pytest.approx(evals["loss"], rel=1e-5)
    assert {r["heldout_ema_top1"] for r in rows} == {""}  # trained without --ema_decay
    # --tta=mirror: each epoch's scores with the mirrors, from the same pass over the images.
    assert [float(r["heldout_tta_loss"]) for r in rows[:2]] == pytest.approx(evals["tta_loss"],
                                                                             rel=1e-5)
    assert all(0 <= float(r["heldout_tta_top1"]) <= 1 for r in rows)
    for row in rows:
        assert float(row["lr"]) == pytest.approx(0.01)
        assert 0 <= float(row["train_top1"]) <= 1 and float(row["images_per_second"]) > 0
        assert float(row["epoch_seconds"]) > 0
        datetime.datetime.fromisoformat(row["wall_time"])


def test_checkpoints_and_resume(two_tower_run, data_dir):
    run_dir, _ = two_tower_run
    model, config, class_names, path, step = restore_model(run_dir)
    assert step == 6 and path.endswith("ckpt-6") and class_names == ["a", "b", "c"]
    assert config.num_classes == 3
    # More epochs on the same run: it resumes at step 6 and continues the same curves.
    resumed = resolve_config({"run_dir": run_dir, "epochs": 3})
    assert resumed.crop_area == (0.3, 0.9)  # the run's own settings, from its config.json
    assert Trainer(resumed, towers=cpu_devices(2), print_fn=lambda *a: None).train()["step"] == 9
    train, _ = scalars(os.path.join(run_dir, "train"))
    assert len(train["cpu_1/main_loss"]) == 9


def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(two_tower_run):
    run_dir, _ = two_tower_run
    latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    exploding = resolve_config({"run_dir": run_dir, "epochs": 6, "lr": 1e30})
    with pytest.raises(FloatingPointError, match=r"at step \d+"):
        Trainer(exploding, towers=cpu_devices(2), print_fn=lambda *a: None).train()
    assert tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")) == latest


def test_batch_must_divide_by_towers(data_dir, tmp_path):
    config = resolve_config(settings(data_dir, str(tmp_path / "r"), batch_size=5))
    with pytest.raises(ValueError, match=r"--batch_size=5: .* across the 2 towers, so it must "
                                         r"divide by 2 \(e.g. 4 or 6\)"):
        Trainer(config, towers=cpu_devices(2))
    assert not os.path.exists(tmp_path / "r")  # refused before anything was written


def test_another_class_list_is_refused(data_dir, tmp_path):
    run_dir = str(tmp_path / "r")
    config = resolve_config(settings(data_dir, run_dir, epochs=1))
    Trainer(config, towers=cpu_devices(1), print_fn=lambda *a: None).train()
    # As if the run had been made on other data.
    save_run_config(dataclasses.replace(load_run_config(run_dir), num_classes=7))
    with pytest.raises(ValueError, match="trained on 7 classes; the data now has 3"):
        Trainer(resolve_config({"run_dir": run_dir}), towers=cpu_devices(1))


def test_lr_on_resume_is_compared_with_the_scheduled_rate_at_that_step(data_dir, tmp_path):
    # A step schedule takes 0.1 down to 0.03 after epoch 1 (3 steps per epoch).
    run_dir = str(tmp_path / "r")
    quiet = dict(towers=cpu_devices(1), print_fn=lambda *a: None)
    Trainer(resolve_config(settings(data_dir, run_dir, lr=0.1,
                                    lr_schedule="exponential_step", lr_decay_epochs=(1,),
                                    lr_gamma=0.3)), **quiet).train()
    kept = Trainer(resolve_config({"run_dir": run_dir, "epochs": 3}), **quiet)
    assert float(kept.state.schedule(6)) == pytest.approx(0.03)
    # The rate in force given again changes nothing and records nothing.
    same = Trainer(resolve_config({"run_dir": run_dir, "epochs": 3, "lr": 0.03}), **quiet)
    assert float(same.state.schedule(6)) == pytest.approx(0.03)
    assert load_run_config(run_dir).lr_overrides == ()
    # The base value given again is a change: the rate in force at step 6 is 0.03.
    reset = Trainer(resolve_config({"run_dir": run_dir, "epochs": 3, "lr": 0.1}), **quiet)
    assert float(reset.state.schedule(6)) == pytest.approx(0.1)
    assert load_run_config(run_dir).lr_overrides == ((6, 0.1),)
    again = Trainer(resolve_config({"run_dir": run_dir, "epochs": 3, "lr": 0.1}), **quiet)
    assert float(again.state.schedule(6)) == pytest.approx(0.1)
    assert load_run_config(run_dir).lr_overrides == ((6, 0.1),)


def test_a_resume_that_reshapes_the_schedule_says_so(data_dir, tmp_path):
    run_dir = str(tmp_path / "r")
    quiet = dict(towers=cpu_devices(1), print_fn=lambda *a: None)
    # One epoch of 3 steps: the cosine ends at 0 on step 3, where the run finishes.
    Trainer(resolve_config(settings(data_dir, run_dir, epochs=1, lr=0.1, lr_schedule="cosine")),
            **quiet).train()
    lines = []
    Trainer(resolve_config({"run_dir": run_dir, "epochs": 2}), towers=cpu_devices(1),
            print_fn=lines.append).train()
    # Over 6 steps the cosine stands at half the base rate on step 3: 0.1 x (1 + cos(pi/2)) / 2.
    assert ("This command reshapes the run's learning-rate schedule (--epochs=2 (was 1)): at "
            "step 3 the rate is 0.05, where it was 0, and it follows the new schedule from "
            "there.") in lines
    # Resumed with the schedule it has (or given a --lr there, which sets the rate on purpose),
    # nothing is said.
    config = load_run_config(run_dir)
    assert schedule_change(config, config, 3, 6) is None
    given_lr = dataclasses.replace(config, epochs=3, lr_overrides=((6, 0.02),))
    assert schedule_change(config, given_lr, 3, 6) is None
    assert schedule_change(config, dataclasses.replace(config, epochs=3), 3, 6) is not None


def interrupt_at(trainer, call):
    """Sends Ctrl+C to this process during the `call`-th training step."""
    step, calls = trainer.steps.train, []

    def pressing(*args):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signal.SIGINT)
        return step(*args)
    trainer.steps = dataclasses.replace(trainer.steps, train=pressing)


def test_history_across_an_interrupt_a_lost_checkpoint_and_resumes(data_dir, tmp_path,
                                                                   monkeypatch):
    run_dir = str(tmp_path / "r")
    quiet = dict(towers=cpu_devices(1), print_fn=lambda *a: None)
    trainer = Trainer(resolve_config(settings(data_dir, run_dir, epochs=3, eval_every_epochs=2)),
                      **quiet)
    interrupt_at(trainer, 5)  # Ctrl+C in epoch 2 (3 steps per epoch), after its 2nd step
    with pytest.raises(TrainingInterrupted):
        trainer.train()
    assert [r["epoch"] for r in read_history(run_dir)] == ["1"]
    saved = Checkpoints(run_dir, trainer.state.model)
    assert saved.restore().endswith("ckpt-5")
    assert saved.restored_meter().sums["steps"] == 2  # epoch 2's first two steps
    # The resumed epoch 2 ends; its checkpoint's save fails: the row written before it goes.
    saves = Checkpoints.save

    def crash_at_epoch_2(self, step, epoch, meter=None):
        if epoch == 2:
            raise OSError("disk gone")
        return saves(self, step, epoch, meter)
    monkeypatch.setattr(Checkpoints, "save", crash_at_epoch_2)
    with pytest.raises(OSError):
        Trainer(resolve_config({"run_dir": run_dir}), **quiet).train()
    assert [r["epoch"] for r in read_history(run_dir)] == ["1"]
    monkeypatch.setattr(Checkpoints, "save", saves)
    # A kill between the row and the checkpoint leaves the row (nothing runs to take it back).
    History(run_dir).append(**{**read_history(run_dir)[0], "epoch": 2, "step": 6})
    # The resume restarts from step 5 again: epoch 2's row is replaced, not duplicated.
    assert Trainer(resolve_config({"run_dir": run_dir}), **quiet).train()["step"] == 9
    rows = read_history(run_dir)
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "3"), ("2", "6"), ("3", "9")]
    # Held out every 2nd epoch and at the end: the other rows leave those cells empty.
    assert [bool(r["heldout_top1"]) for r in rows] == [False, True, True]


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs, no handler catches it."""


def test_a_crash_right_after_a_mid_epoch_checkpoint_keeps_the_epochs_whole_row(data_dir,
                                                                               tmp_path,
                                                                               monkeypatch):
    # Once the sums were a file written after the checkpoint: a kill in between left epoch 2's
    # row covering only the steps after the resume.
    quiet = dict(towers=cpu_devices(1), print_fn=lambda *a: None)
    # Not --deterministic: op determinism is process-wide and would reach later tests (XLA has no
    # deterministic max-pool gradient); one CPU tower repeats a run closely enough.
    run = dict(epochs=3, checkpoint_every=2)
    whole_dir = str(tmp_path / "whole")
    Trainer(resolve_config(settings(data_dir, whole_dir, **run)), **quiet).train()
    crashed_dir = str(tmp_path / "crashed")
    saves = Checkpoints.save

    def killed_after_step_4(self, step, epoch, meter=None):
        path = saves(self, step, epoch, meter)
        if step == 4:
            raise Killed
        return path
    monkeypatch.setattr(Checkpoints, "save", killed_after_step_4)
    with pytest.raises(Killed):
        Trainer(resolve_config(settings(data_dir, crashed_dir, **run)), **quiet).train()
    monkeypatch.setattr(Checkpoints, "save", saves)
    assert Trainer(resolve_config({"run_dir": crashed_dir}), **quiet).train()["step"] == 9
    whole, crashed = read_history(whole_dir), read_history(crashed_dir)
    assert [r["epoch"] for r in crashed] == ["1", "2", "3"]
    # Epoch 2 is steps 4-6: one before the crash, two after it, all three in its row.
    for column in ("train_loss", "train_cross_entropy", "train_top1"):
        assert [float(r[column]) for r in crashed] == pytest.approx(
            [float(r[column]) for r in whole], rel=1e-4), column


@pytest.mark.slow  # tests/test_train.py traces a range in the fast suite
def test_a_profile_cut_by_ctrl_c_is_written_and_the_resumed_run_profiles_the_rest(data_dir,
                                                                                   tmp_path):
    run_dir, lines = str(tmp_path / "r"), []
    # Steps 2 to 100 of a run of 6 (3 per epoch); Ctrl+C during step 3.
    trainer = Trainer(resolve_config(settings(data_dir, run_dir, profile_steps=(2.0, 100.0))),
                      towers=cpu_devices(1), print_fn=lines.append)
    interrupt_at(trainer, 3)
    with pytest.raises(TrainingInterrupted, match="Stopped at step 3 of 6"):
        trainer.train()
    assert "Profiling steps 2 to 6 into" in "\n".join(lines)
    (first,) = profiles(run_dir).values()
    assert profiled_steps(first) == [2, 3]
    # The profiler was stopped on the way out: the same process profiles the resumed run, from
    # its checkpoint at step 3 to the end of training.
    resumed = Trainer(resolve_config({"run_dir": run_dir}), towers=cpu_devices(1),
                      print_fn=lines.append)
    assert resumed.train()["step"] == 6
    assert "Profiling steps 4 to 6 into" in "\n".join(lines)
    traces = profiles(run_dir)
    assert len(traces) == 2 and traces[min(traces)] == first
    assert profiled_steps(traces[max(traces)]) == [4, 5, 6]


def test_a_run_resumed_past_the_profiled_steps_says_so_and_profiles_nothing(tmp_path):
    # --profile_steps=2,3 given to a run resumed at step 3 of 6 (as the Trainer plans it at its
    # start, above); tests/test_train.py's slow set does it through train.py.
    profiler = StepProfiler((2.0, 3.0), str(tmp_path))
    assert profiler.plan(4, 6) == ("--profile_steps=2,3: none of these steps is left to run (the "
                                   "run is at step 3 of 6); nothing is profiled.")
    for step in (4, 5, 6):
        with profiler.step(step):
            assert not profiler.running
        profiler.step_done(step, {})
    profiler.stop()
    assert not os.path.exists(profiler.directory)
    # Resumed inside the range, the same profiler would start (the test above traces it).
    assert profiler.plan(3, 6).startswith("Profiling steps 3 to 3 into ")


@pytest.mark.slow  # float16 is the GPUs' precision; test_training_step.py checks its step fast
def test_float16_run_saves_its_loss_scale_and_resumes_with_it(data_dir, tmp_path):
    # float16 with loss scaling, the GPU path, on two CPU towers.
    run_dir = str(tmp_path / "float16")
    config = resolve_config(settings(data_dir, run_dir, epochs=1,
                                     mixed_precision_dtype="float16"))
    trainer = Trainer(config, towers=cpu_devices(2), print_fn=lambda *a: None)
    assert trainer.precision == "mixed_float16"
    assert trainer.train()["step"] == 3
    # A scale the run has come down to after overflows (set here: three steps do not overflow).
    trainer.state.optimizer.dynamic_scale.assign(2.0 ** 9)
    path = trainer.state.checkpoints.save(3, 1)
    assert tf.train.load_variable(path, "loss_scale/scale/.ATTRIBUTES/VARIABLE_VALUE") == 512
    resumed = Trainer(resolve_config({"run_dir": run_dir, "epochs": 2}), towers=cpu_devices(2),
                      print_fn=lambda *a: None)
    assert resumed.precision == "mixed_float16"  # from the run's config.json
    assert float(resumed.state.optimizer.dynamic_scale.numpy()) == 512
    assert resumed.train()["step"] == 6
    train, _ = scalars(os.path.join(run_dir, "train"))
    # Logged per logging window: Keras' initial 2^15 in epoch 1, the restored scale after it.
    assert train["loss_scale"] == [2.0 ** 15] * 3 + [512.0] * 3
    assert all(np.isfinite(train[f"cpu_{t}/main_loss"]).all() for t in (0, 1))


@pytest.mark.slow  # float16 is emulated on CPUs; the loss-scale resume test above covers CI
def test_a_float16_checkpoint_resumes_in_float32_and_back(data_dir, tmp_path):
    # The optimizer's state is saved under the same names with and without loss scaling, so a run
    # trained on GPUs in float16 can go on on a CPU, and the other way round.
    run_dir = str(tmp_path / "mixed")
    Trainer(resolve_config(settings(data_dir, run_dir, epochs=1, mixed_precision_dtype="float16")),
            towers=cpu_devices(2), print_fn=lambda *a: None).train()
    as_float32 = Trainer(resolve_config({"run_dir": run_dir, "epochs": 2,
                                         "mixed_precision": False}),
                         towers=cpu_devices(2), print_fn=lambda *a: None)
    momentum = [v for v in as_float32.state.optimizer.variables if "momentum" in v.path]
    assert as_float32.precision == "float32" and momentum
    assert any(np.abs(v.numpy()).max() > 0 for v in momentum)  # restored, not fresh zeros
    assert as_float32.train()["step"] == 6
    back = Trainer(resolve_config({"run_dir": run_dir, "epochs": 3, "mixed_precision": True,
                                   "mixed_precision_dtype": "float16"}),
                   towers=cpu_devices(2), print_fn=lambda *a: None)
    assert back.restored.checkpoint
    assert float(back.state.optimizer.dynamic_scale.numpy()) == 2.0 ** 15
    assert back.train()["step"] == 9


def test_augmenting_on_the_towers_trains_the_same_model(data_dir, tmp_path):
    # The same seed: the same batches, crops, dropout and initial weights whether the host's
    # pipeline or each tower augments (what GPUs do by default), up to float32 rounding (in
    # bfloat16 the rounding of the few ops that differ grows to 5e-4 of the loss in six steps).
    runs = {}
    for where in ("host", "device"):
        run_dir = str(tmp_path / where)
        trainer = Trainer(resolve_config(settings(data_dir, run_dir, augment_on=where,
                                                  mixed_precision=False)),
                          towers=cpu_devices(2), print_fn=lambda *a: None)
        assert trainer.steps.augment_on == where
        initial = [w.numpy().copy() for w in trainer.state.model.trainable_weights]
        trainer.train()
        runs[where] = (trainer.state.model, scalars(os.path.join(run_dir, "train"))[0], initial)
    (host_model, host_logs, initial), (device_model, device_logs, _) = runs["host"], runs["device"]
    for tower in ("cpu_0", "cpu_1"):
        np.testing.assert_allclose(device_logs[f"{tower}/main_loss"],
                                   host_logs[f"{tower}/main_loss"], rtol=1e-5)
    for a, b in zip(host_model.weights, device_model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-5)
    # Both trained: the weights left their (seeded, shared) initial values.
    assert max(np.abs(a.numpy() - b).max()
               for a, b in zip(host_model.trainable_weights, initial)) > 1e-3
    assert host_logs.keys() == device_logs.keys()


def test_the_seed_sets_the_initial_weights_and_dropout_state(data_dir, tmp_path):
    import keras

    def initial(seed, name):
        keras.utils.set_random_seed(1000 + len(name))  # whatever the process drew before
        model = Trainer(resolve_config(settings(data_dir, str(tmp_path / name), seed=seed)),
                        towers=cpu_devices(1), print_fn=lambda *a: None).state.model
        # (model.weights leaves out the seed-generator states; the variable lists hold them.
        # Their paths get a new suffix per model in one process, so they go by position.)
        return [(v.path.endswith("seed_generator_state"), v.path.endswith("kernel"), v.numpy())
                for v in model.trainable_variables + model.non_trainable_variables]

    first, again, other = initial(3, "a"), initial(3, "bb"), initial(4, "ccc")
    assert len(first) == len(again) == len(other)
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(first, again))
    # Every drawn value differs with the seed: the kernels and dropout's seed-generator state
    # (batch norm's constant initial values do not).
    drawn = [i for i, (state, kernel, _) in enumerate(first) if state or kernel]
    assert any(first[i][0] for i in drawn) and len(drawn) > 10
    assert not any(np.array_equal(first[i][2], other[i][2]) for i in drawn)


def test_out_of_memory_suggests_a_smaller_batch(data_dir, tmp_path, monkeypatch):
    config = resolve_config(settings(data_dir, str(tmp_path / "oom"), batch_size=4))
    trainer = Trainer(config, towers=cpu_devices(2), print_fn=lambda *a: None)

    def out_of_memory(images, labels):
        raise tf.errors.ResourceExhaustedError(
            None, None, "OOM when allocating tensor with shape[2,64,112,112] and type float")
    trainer.steps = dataclasses.replace(trainer.steps, train=out_of_memory)
    with pytest.raises(ValueError) as error:
        trainer.train()
    message = str(error.value)
    assert message.startswith("out of memory with 2 images of 32 px per tower (--batch_size=4 "
                              "over 2 tower(s), --model=minigooglenet): OOM when allocating")
    assert "Try --batch_size=2" in message
    # A run directory with no checkpoint: the smaller batch then starts it afresh.
    assert not os.path.exists(os.path.join(config.run_dir, "checkpoints", "checkpoint"))


def test_the_start_line_gives_the_data_towers_batch_and_learning_rate(data_dir, tmp_path):
    run_dir = str(tmp_path / "start")
    lines = []
    config = resolve_config(settings(data_dir, run_dir, lr=0.1, lr_schedule="exponential_step",
                                     lr_decay_epochs=(1.0, 1.5), mixed_precision=False))
    Trainer(config, towers=cpu_devices(2), print_fn=lines.append).announce(0)
    # 12 train images, 4 a step: 3 steps an epoch, so the decay at epoch 1.5 falls at step
    # int(4.5) = 4, epoch 1.333.
    assert lines == [
        "Training minigooglenet on folder: 12 train / 6 test images (readable; 30% of every "
        "class held out (seed 0)), 3 classes, 2 tower(s) [cpu_0, cpu_1], global batch 4, "
        "3 steps/epoch, lr 0.1 (x0.1 at epochs 1, 1.333), float32, augmented on the host. "
        f"Run dir: {run_dir}"]


def test_a_second_signal_stops_at_once_through_the_handler_outside_the_loop():
    outside = []

    def entry_handler(signum, frame):  # as host/entry.py installs
        outside.append(signum)
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, entry_handler)
    try:
        with StopOnSignal() as stop:
            os.kill(os.getpid(), signal.SIGTERM)  # the first: the loop saves and stops
            assert stop.received == signal.SIGTERM and outside == []
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)  # the second: no waiting for the save
        assert outside == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is entry_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_ctrl_c_at_an_epochs_last_step_still_ends_the_epoch(data_dir, tmp_path):
    run_dir = str(tmp_path / "r")
    quiet = dict(towers=cpu_devices(1), print_fn=lambda *a: None)
    trainer = Trainer(resolve_config(settings(data_dir, run_dir, epochs=2)), **quiet)
    interrupt_at(trainer, 3)  # the 3rd and last step of epoch 1
    with pytest.raises(TrainingInterrupted, match="ckpt-3"):
        trainer.train()
    # Epoch 1 has its row and its checkpoint, once: the resumed run goes on with epoch 2.
    assert [r["epoch"] for r in read_history(run_dir)] == ["1"]
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == [
        "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index"]
    assert Trainer(resolve_config({"run_dir": run_dir}), **quiet).train()["step"] == 6
    assert [r["epoch"] for r in read_history(run_dir)] == ["1", "2"]
