"""End-to-end tests of train.py as a user runs it (subprocesses): towers, Ctrl+C and resume."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from conftest import ENV, ROOT, profiled_steps, profiles, run, train_args, write_image_folder


def test_two_cpu_towers_end_to_end(data_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    done = run(train_args(data_dir, run_dir, "--num_gpus=2", "--towers_on_cpu", "--epochs=2",
                          "--model=minigooglenet"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 tower(s) [cpu_0, cpu_1]" in done.stdout
    assert "Epoch 2/2: train loss" in done.stdout and "test top-1" in done.stdout
    # Each epoch's bar starts at 0 and counts that epoch's 3 steps; img/s is a whole number.
    bars = [line for line in done.stdout.splitlines() if "/3 [" in line]
    assert [b.split("/")[0] for b in bars] == ["0", "3", "0", "3"], bars
    assert re.search(r"img/s: [\d,]+ - ", bars[1]), bars[1]
    assert os.path.exists(os.path.join(run_dir, "checkpoints", "ckpt-6.index"))
    assert os.path.exists(os.path.join(run_dir, "config.json"))
    assert not os.path.exists(os.path.join(run_dir, "train", "plugins"))  # no --profile_steps


def test_bad_flags_get_clear_errors(data_dir, tmp_path):
    no_gpus = run(train_args(data_dir, str(tmp_path / "a"), "--num_gpus=3"))
    assert no_gpus.returncode == 1
    assert "--num_gpus=3 but 0 GPUs are visible (none)" in no_gpus.stderr
    missing = run(train_args(str(tmp_path / "nowhere"), str(tmp_path / "b")))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert "<class 1>/image001.jpg" in missing.stderr


REFUSED = [  # (flags, the one error line's start); train_args gives --batch_size=4 --image_size=32
    (["--batch_size=0"], "--batch_size=0: must be an integer >= 1"),
    (["--num_gpus=2", "--towers_on_cpu", "--batch_size=5"],
     "--batch_size=5: the global batch is split evenly across the 2 towers"),
    (["--lr=-1"], "--lr=-1: must be a number > 0"),
    (["--epochs=0"], "--epochs=0: must be an integer >= 1"),
    (["--model=googlenet", "--image_size=10"],
     "--image_size=10: --model=googlenet needs images of at least 32 pixels"),
    (["--test_fraction=1.5"], "--test_fraction=1.5: must be a number > 0 and < 1"),
    (["--width_multiplier=0"], "--width_multiplier=0: must be a number > 0 and <= 4"),
    (["--epochs=3", "--lr_schedule=exponential_step", "--lr_decay_epochs=1,5"],
     "--lr_decay_epochs=1,5: every decay epoch must fall within the run"),
    (["--epochs=2", "--warmup_epochs=5"], "--warmup_epochs=5: the warm-up must end within"),
    (["--label_smoothing=1"], "--label_smoothing=1: must be a number >= 0 and < 1"),
    (["--trainable=from:4x"], "--trainable=from:4x: must be all, head or from:<module>, a module "
     "of --model=googlenet_bn: 3a, 3b,"),
    (["--init_from=/nonexistent/run"], "--init_from=/nonexistent/run: there is no run directory, "
     "checkpoint"),
    (["--profile_steps=3,2"], "--profile_steps=3,2: expected A,B: the first and last global "
     "steps to profile"),
    (["--profile_steps=two,3"], "--profile_steps=two,3: expected numbers separated by commas"),
]


# One refusal from each place train.py refuses a command before reading any data: the flags'
# parsing (before the run directory is locked), the settings' checks, and the trainer once it
# knows its towers (--init_from is looked up there). tests/test_training_checks.py,
# test_flags.py, test_training_finetune.py and test_training_loop.py check every message
# in-process; the whole list goes through train.py in the slow twin below.
ONE_OF_EACH_KIND = [(flags, expected) for flags, expected in REFUSED if flags[0] in (
    "--profile_steps=two,3", "--model=googlenet", "--init_from=/nonexistent/run")]


def refused_before_anything_is_written(data_dir, tmp_path, refused):
    # All at once: each is a TensorFlow start-up, refused before any data is read.
    runs = []
    for i, (flags, _) in enumerate(refused):
        run_dir = tmp_path / f"run{i}"
        runs.append((run_dir, subprocess.Popen(
            train_args(data_dir, str(run_dir), *flags), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=ENV)))
    for (flags, expected), (run_dir, process) in zip(refused, runs):
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 1, (flags, stderr[-2000:])
        assert "Traceback" not in stderr, flags
        errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and errors[0].startswith(f"Error: {expected}"), (flags, stderr)
        assert not run_dir.exists(), (flags, os.listdir(run_dir))
        assert "First pass" not in stdout  # no data was read


def test_bad_settings_are_refused_before_anything_is_written(data_dir, tmp_path):
    assert len(ONE_OF_EACH_KIND) == 3
    refused_before_anything_is_written(data_dir, tmp_path, ONE_OF_EACH_KIND)


# About 160 s (14 TensorFlow start-ups); the test above sends one of each kind through train.py.
@pytest.mark.slow
def test_every_bad_setting_is_refused_before_anything_is_written(data_dir, tmp_path):
    refused_before_anything_is_written(data_dir, tmp_path, REFUSED)


def test_a_refused_command_leaves_nothing_that_blocks_the_corrected_one(data_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    # A command refused by the settings' checks leaves no run directory at all
    # (test_bad_settings_are_refused_before_anything_is_written, with --model=googlenet
    # --image_size=10). This one is refused only once the data is known (12 training images),
    # after the run directory was made: the corrected command, with another size too, still
    # starts the run afresh.
    too_big = run(train_args(data_dir, run_dir, "--model=minigooglenet", "--batch_size=64",
                             "--image_size=16"))
    assert too_big.returncode == 1
    assert "--batch_size=64 is larger than the 12 training images" in too_big.stderr
    corrected = run(train_args(data_dir, run_dir, "--model=minigooglenet", "--epochs=1"))
    assert corrected.returncode == 0, corrected.stderr[-3000:]
    assert "Done at step 3" in corrected.stdout
    # A bad setting given to a run with checkpoints changes nothing in it.
    config = os.path.join(run_dir, "config.json")
    saved, checkpoints = open(config).read(), sorted(os.listdir(os.path.join(run_dir,
                                                                             "checkpoints")))
    refused = run(train_args(data_dir, run_dir, "--epochs=2", "--lr=-1"))
    assert refused.returncode == 1 and "Error: --lr=-1: must be a number > 0" in refused.stderr
    assert open(config).read() == saved
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == checkpoints
    resumed = run(train_args(data_dir, run_dir, "--epochs=2"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 3" in resumed.stdout and "Done at step 6" in resumed.stdout


def profile_the_first_epochs_last_two_steps(data_dir, run_dir):
    """Trains one epoch with --profile_steps=2,3, checks its trace; returns the trace's path."""
    # 3 steps per epoch: steps 2 and 3 are the first epoch's last two.
    first = run(train_args(data_dir, run_dir, "--model=minigooglenet", "--epochs=1",
                           "--profile_steps=2,3"))
    assert first.returncode == 0, first.stderr[-3000:]
    where = os.path.join(run_dir, "train", "plugins", "profile")
    assert f"Profiling steps 2 to 3 into {where} (TensorBoard's Profile tab)." in first.stdout
    (trace,) = profiles(run_dir).values()
    assert profiled_steps(trace) == [2, 3]
    return trace


def test_profile_steps_writes_a_trace_of_exactly_those_steps(data_dir, tmp_path):
    profile_the_first_epochs_last_two_steps(data_dir, str(tmp_path / "run"))


# About 25 s more (a second start); test_training_loop.py's
# test_a_run_resumed_past_the_profiled_steps_says_so_and_profiles_nothing covers it in-process.
@pytest.mark.slow
def test_a_run_resumed_past_the_profiled_steps_profiles_nothing_through_the_command_line(
        data_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    trace = profile_the_first_epochs_last_two_steps(data_dir, run_dir)
    # Resumed past the range: nothing more is profiled, and the run says so.
    past = run(train_args(data_dir, run_dir, "--epochs=2", "--profile_steps=2,3"))
    assert past.returncode == 0, past.stderr[-3000:]
    assert ("--profile_steps=2,3: none of these steps is left to run (the run is at step 3 of "
            "6); nothing is profiled.") in past.stdout
    assert profiles(run_dir) == {os.path.basename(os.path.dirname(trace)): trace}


def test_a_start_that_failed_on_its_data_does_not_bind_the_corrected_schedule(data_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    imagenet = ["--dataset=imagenet", "--model=minigooglenet"]  # after train_args' --dataset
    # ImageNet pointed at plain class folders: refused once config.json (the recipe's 300
    # epochs, decay epochs 70,140,210,280) is written.
    wrong = run(train_args(data_dir, run_dir, *imagenet))
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "DATA_DIR/train/<wnid>/*.JPEG" in wrong.stderr
    assert os.path.exists(os.path.join(run_dir, "config.json"))
    # The corrected command, a one-epoch trial on the right layout (12 train images: 3 steps).
    layout = tmp_path / "imagenet"
    write_image_folder(str(layout / "train"), classes=("n01", "n02", "n03"), per_class=4,
                       size=(36, 36))
    write_image_folder(str(layout / "val"), classes=("n01", "n02", "n03"), per_class=2,
                       size=(36, 36))
    trial = run(train_args(str(layout), run_dir, *imagenet, "--epochs=1"))
    assert trial.returncode == 0, trial.stderr[-3000:]
    assert "Done at step 3" in trial.stdout
    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    # The recipe's decay epochs at the same fractions of the one epoch: 70/300 of it, ...
    assert saved["epochs"] == 1 and saved["data_dir"] == str(layout)
    assert np.allclose(saved["lr_decay_epochs"], [70 / 300, 140 / 300, 210 / 300, 280 / 300])


def two_epochs_keeping_every_checkpoint(data_dir, run_dir):
    first = run(train_args(data_dir, run_dir, "--model=minigooglenet", "--epochs=2",
                           "--keep_checkpoints=0", "--lr_schedule=constant", "--warmup_epochs=0"))
    assert first.returncode == 0, first.stderr[-3000:]


# About 30 s (a run and a refused start); test_training_restart.py's
# test_keep_checkpoints_zero_keeps_every_one_and_three_keeps_three checks the refusal in-process.
@pytest.mark.slow
def test_a_restart_from_an_epoch_the_run_does_not_keep_is_refused_through_the_command_line(
        data_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    two_epochs_keeping_every_checkpoint(data_dir, run_dir)
    wrong = run(train_args(data_dir, run_dir, "--restart_from=5"))
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "Error: --restart_from=5: no such checkpoint" in wrong.stderr
    assert "it keeps epochs 1, 2 (ckpt-3, ckpt-6)" in wrong.stderr
    assert not os.path.exists(os.path.join(run_dir, "set_aside"))


@pytest.mark.slow  # tests/test_training_restart.py restarts in-process in the fast suite
def test_restart_from_an_older_epoch_through_the_command_line(data_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    two_epochs_keeping_every_checkpoint(data_dir, run_dir)
    again = run(train_args(data_dir, run_dir, "--restart_from=1", "--lr=0.005"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resumed from" in again.stdout and "ckpt-3 at step 3 (epoch 2)" in again.stdout
    assert "moved to " + os.path.join(run_dir, "set_aside", "after-step-3-") in again.stdout
    assert "Done at step 6" in again.stdout
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[1]["lr"] == "0.005"  # the rate given, from the restart on


def test_ctrl_c_saves_and_the_same_command_resumes(data_dir, tmp_path):
    run_dir = str(tmp_path / "run")
    # 12 training images, batch 4: 3 steps per epoch; 20 epochs leave time to press Ctrl+C once
    # the first epoch's checkpoint is there (19 epochs, seconds, to the poll's 0.2 s).
    args = train_args(data_dir, run_dir, "--model=minigooglenet", "--epochs=20",
                      "--eval_every_epochs=1000", "--log_every=1")
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=ENV)
    index = os.path.join(run_dir, "checkpoints", "checkpoint")
    deadline = time.time() + 240
    while not os.path.exists(index) and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "checkpoint saved to" in stdout and "Run the same command again to resume" in stdout
    assert "Traceback" not in stderr
    import tensorflow as tf
    stopped_at = int(tf.train.load_variable(tf.train.latest_checkpoint(os.path.dirname(index)),
                                            "step/.ATTRIBUTES/VARIABLE_VALUE"))
    assert 0 < stopped_at < 60

    resumed = run(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {stopped_at}" in resumed.stdout
    # An uninterrupted run of 20 epochs of 3 steps ends at step 60; so does this one.
    assert "Done at step 60" in resumed.stdout


STOPPED_IN_FIRST_PASS = textwrap.dedent("""
    import os, runpy, signal, sys
    from input_pipeline import first_pass
    batches = first_pass.batches
    def stopped_after_one_batch(*args):
        for i, batch in enumerate(batches(*args)):
            if i == 1:  # a scheduler's stop while the cache is being written
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch
    first_pass.batches = stopped_after_one_batch
    first_pass._FILL_BATCH = 4  # several batches in the 12 training images
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
""")


def test_a_stop_during_the_first_pass_exits_with_one_line_and_the_same_command_starts(
        data_dir, tmp_path):
    script = tmp_path / "stopped.py"
    script.write_text(STOPPED_IN_FIRST_PASS)
    run_dir = str(tmp_path / "run")
    # A disk cache, so the stop lands while its file is half written.
    args = train_args(data_dir, run_dir, "--model=minigooglenet", "--epochs=1", "--cache=disk")
    stopped = run([sys.executable, str(script), *args[1:]])
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "Stopped by SIGTERM. The checkpoints saved so far are kept" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert not os.path.exists(os.path.join(run_dir, "checkpoints", "checkpoint"))
    again = run(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Done at step 3" in again.stdout


DETERMINISTIC_RUN = textwrap.dedent("""
    import os, signal, sys
    from training import checkpoints, loop
    from rundir.recorded import resolve_config
    data_dir, run_dir, stop_after_epoch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    save, pressed = checkpoints.Checkpoints.save, []
    def save_then_stop(self, step, epoch):
        path = save(self, step, epoch)
        if epoch == stop_after_epoch and not pressed:  # Ctrl+C right at the end of this epoch
            pressed.append(step)
            os.kill(os.getpid(), signal.SIGINT)
        return path
    checkpoints.Checkpoints.save = save_then_stop
    config = resolve_config(dict(dataset="folder", data_dir=data_dir, run_dir=run_dir,
                                 model="minigooglenet", image_size=32, width_multiplier=0.25,
                                 batch_size=4, epochs=2, deterministic=True, seed=5))
    try:
        print(loop.Trainer(config, print_fn=lambda *a: None).train()["step"])
    except loop.TrainingInterrupted as stopped:
        print("interrupted", stopped)
""")


# About 80 s; tests/test_crash.py checks resumed weights bit for bit in the fast suite.
@pytest.mark.slow
def test_interrupted_at_an_epoch_boundary_gives_the_same_weights(data_dir, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(DETERMINISTIC_RUN)

    def train(run_dir, stop_after_epoch):
        done = run([sys.executable, str(script), data_dir, run_dir, str(stop_after_epoch)])
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    assert train(straight, -1).strip() == "6"
    assert "interrupted Stopped at step 3 of 6" in train(split, 1)
    assert train(split, -1).strip() == "6"

    from evaluation.trained import restore_model
    a, *_ = restore_model(straight)
    b, *_ = restore_model(split)
    assert len(a.weights) == len(b.weights)
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=x.path)


def train_and_evaluate_a_pre_split_folder_with_bad_files(tmp_path):
    """The pre-split run trained and scored on val/ and test/; the evaluate.py command."""
    # root/train|val|test/<class>/, with an unreadable file among the training images and one
    # among the held-out ones: both are listed, the counts are of readable images, the first
    # pass shows progress, and evaluate.py scores val/ or test/ from the run directory alone.
    root = tmp_path / "flower_data"
    classes = ("daisy", "roses", "tulips")
    write_image_folder(str(root / "train"), classes=classes, per_class=4, size=(36, 36))
    write_image_folder(str(root / "val"), classes=classes, per_class=2, size=(36, 36))
    write_image_folder(str(root / "test"), classes=classes, per_class=1, size=(36, 36))
    (root / "train" / "roses" / "truncated.jpg").write_bytes(
        (root / "train" / "roses" / "img_0.jpg").read_bytes()[:200])
    (root / "val" / "daisy" / "empty.jpg").write_bytes(b"")
    run_dir = str(tmp_path / "run")
    done = run(train_args(str(root), run_dir, "--model=minigooglenet", "--epochs=1",
                          "--test_fraction=0.5"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "First pass over the 13 train images" in done.stdout
    assert "First pass over the 7 val images" in done.stdout
    assert "Cache (memory) holds 12 train images" in done.stdout
    assert "1 unreadable file(s) skipped" in done.stdout
    assert "12 train / 6 val images (readable; pre-split folder: trains on train/, held out " \
           "val/, test/ as given (--test_fraction not used))" in done.stdout
    listed = [line.rsplit("\t", 1)[0]  # the reason after the last tab
              for line in open(os.path.join(run_dir, "skipped_files.txt")).read().splitlines()]
    assert sorted(listed) == sorted([f"train\t{root / 'train' / 'roses' / 'truncated.jpg'}",
                                     f"val\t{root / 'val' / 'daisy' / 'empty.jpg'}"])
    evaluate = [sys.executable, os.path.join(ROOT, "evaluate.py"), f"--checkpoint_dir={run_dir}",
                "--batch_size=4"]
    val = run(evaluate)
    assert val.returncode == 0, val.stderr[-3000:]
    assert "6 images" in val.stdout  # the readable val/ images
    test = run(evaluate + ["--eval_split=test"])
    assert test.returncode == 0, test.stderr[-3000:]
    assert "3 images of the test split" in test.stdout
    assert os.path.exists(os.path.join(run_dir, "eval", "metrics_test.json"))
    return evaluate


@pytest.mark.slow  # the fast suite skips bad files in test_input_pipeline_builder.py
def test_a_pre_split_folder_with_bad_files_through_train_and_evaluate(tmp_path):
    train_and_evaluate_a_pre_split_folder_with_bad_files(tmp_path)


# About 10 s more (a third start of evaluate.py): test_input_pipeline_datasets.py's
# test_a_pre_split_folder_with_val_and_test_scores_val_and_keeps_test checks the refusal in-process.
@pytest.mark.slow
def test_evaluate_refuses_a_split_the_pre_split_run_does_not_have(tmp_path):
    evaluate = train_and_evaluate_a_pre_split_folder_with_bad_files(tmp_path)
    wrong = run(evaluate + ["--eval_split=holdout"])
    assert wrong.returncode == 1 and "this run's held-out splits are val, test" in wrong.stderr


def test_cifar10_image_folders_train_plot_and_evaluate_on_whole_images(tmp_path):
    # The cifar10 recipe (whole 32 px images shifted by up to 4 px) on its folder layout: the run
    # draws history.png, and evaluate.py scores the held-out images exactly as training did (the
    # whole image, not an 87.5% centre crop): the same loss as the run's last history row.
    root = tmp_path / "cifar10"
    classes = "airplane automobile bird cat deer dog frog horse ship truck".split()
    write_image_folder(str(root / "train"), classes=classes, per_class=2, size=(32, 32),
                       ext=".png")
    write_image_folder(str(root / "test"), classes=classes, per_class=1, size=(32, 32),
                       ext=".png")
    run_dir = str(tmp_path / "run")
    done = run([sys.executable, os.path.join(ROOT, "train.py"), "--dataset=cifar10",
                f"--data_dir={root}", f"--run_dir={run_dir}", "--width_multiplier=0.125",
                "--batch_size=4", "--epochs=1"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "20 train / 10 test images" in done.stdout
    assert os.path.getsize(os.path.join(run_dir, "history.png")) > 0
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        row = list(csv.DictReader(f))[-1]
    scored = run([sys.executable, os.path.join(ROOT, "evaluate.py"), f"--checkpoint_dir={run_dir}",
                  "--batch_size=5"])
    assert scored.returncode == 0, scored.stderr[-3000:]
    metrics = json.load(open(os.path.join(run_dir, "eval", "metrics.json")))
    # The recipe scores with the mirrors and shifts too (--tta=mirror_shift): evaluate.py gives
    # both as training did.
    assert metrics["tta"] == "mirror_shift"
    assert abs(metrics["loss"] - float(row["heldout_tta_loss"])) < 1e-4
    assert abs(metrics["without_tta"]["loss"] - float(row["heldout_loss"])) < 1e-4
