"""Tests for evaluate.py / predict.py and evaluation/evaluate_run.py, scoring.py, export.py."""
import csv
import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import input_pipeline
from conftest import cpu_devices, write_image, write_image_folder
from evaluation.evaluate_run import EvalSettings, evaluate_checkpoint, run, watch
from evaluation.trained import restore_model
from input_pipeline.crops import paper_144_crops, ten_crops
from input_pipeline.preprocessing import decode_image, preprocess_for_eval
from rundir.layout import split_dir
from rundir.recorded import resolve_config
from settings import recipes
from training import devices, heldout
from training.loop import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = dict(print_fn=lambda *a: None)


def train_run(base, towers=1, classes=("ant", "bee", "cat"), per_class=5, **settings):
    """An epoch of a small minigooglenet on a folder of photos, on `towers` CPU towers:
    (run_dir, data_dir)."""
    data_dir = str(base / "photos")
    write_image_folder(data_dir, classes=classes, per_class=per_class, size=(40, 52))
    run_dir = str(base / "run")
    config = resolve_config(dict(dataset="folder", data_dir=data_dir, run_dir=run_dir,
                                 model="minigooglenet", width_multiplier=0.25, batch_size=4,
                                 epochs=1, **settings))
    Trainer(config, towers=cpu_devices(towers), **QUIET).train()
    return run_dir, data_dir


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("eval"),
                     classes=("ant", "bee", "cat", "dog", "eel", "fox"), log_every=1)


def one_tower():
    return devices.make_strategy(cpu_devices(1))


def test_accuracy_matches_an_independent_numpy_computation(trained_run):
    run_dir, _ = trained_run
    report = evaluate_checkpoint(EvalSettings(run_dir, batch_size=4), one_tower(), **QUIET)
    model, config, *_ = restore_model(run_dir)
    test = input_pipeline.load_dataset("folder", split_dir=split_dir(run_dir)).test
    images = np.stack([preprocess_for_eval(decode_image(tf.io.read_file(p)), config.image_size)
                       for p in test.paths])
    probs = tf.nn.softmax(model(images, training=False)["logits"]).numpy()
    ranked = np.argsort(-probs, axis=1)
    top1 = np.mean(ranked[:, 0] == test.labels)
    top5 = np.mean([y in r[:5] for y, r in zip(test.labels, ranked)])
    assert report["count"] == len(test) == 9  # 30 images, 30% held out
    assert report["top1"] == pytest.approx(top1) and report["top5"] == pytest.approx(top5)
    assert report["top5"] >= report["top1"]
    np.testing.assert_allclose(report["probabilities"], probs, atol=1e-5)
    assert report["confusion_matrix"].sum() == 9
    metrics = json.load(open(os.path.join(run_dir, "eval", "metrics.json")))
    assert metrics["top1"] == pytest.approx(top1) and "ant" in metrics["per_class"]
    recalls = [np.mean(ranked[test.labels == c, 0] == c) for c in np.unique(test.labels)]
    assert metrics["balanced"] == pytest.approx(np.mean(recalls))
    csv_rows = open(os.path.join(run_dir, "eval", "confusion_matrix.csv")).read().splitlines()
    assert csv_rows[0].endswith("ant,bee,cat,dog,eel,fox") and len(csv_rows) == 7


def test_a_two_tower_runs_held_out_scores_are_what_evaluate_gives(tmp_path):
    # The towers' batch-norm statistics are kept equal (training/step.py), so the held-out set
    # scored across two towers during training and the checkpoint scored after it on one tower
    # give the same loss; with each tower keeping its own, the checkpoint holds only the first's.
    run_dir, _ = train_run(tmp_path, towers=2, per_class=10, lr=0.05)
    with open(os.path.join(run_dir, "history.csv")) as f:
        row = list(csv.DictReader(f))[-1]
    report = evaluate_checkpoint(EvalSettings(run_dir, batch_size=4), one_tower(), **QUIET)
    assert report["count"] == 9
    assert report["loss"] == pytest.approx(float(row["heldout_loss"]), rel=1e-4)
    assert report["top1"] == pytest.approx(float(row["heldout_top1"]), abs=1e-6)


def test_balanced_accuracy_is_the_mean_recall_over_the_classes_present():
    # Class 0: 8 images, 6 right; class 1: 2 images, 1 right; class 2 has none here.
    # top-1 = 7/10; balanced = (6/8 + 1/2) / 2 = 0.625.
    labels = np.array([0] * 8 + [1] * 2)
    predicted = np.array([0] * 6 + [1, 2] + [1, 0])
    probs = np.eye(3)[predicted]
    assert heldout.balanced_accuracy(probs, labels) == pytest.approx(0.625)
    assert heldout.scores(probs, labels)["top1"] == pytest.approx(0.7)


def test_ten_crops_only_average(trained_run):
    run_dir, _ = trained_run
    ten = evaluate_checkpoint(EvalSettings(run_dir, crops=10, batch_size=4), one_tower(), **QUIET)
    model, config, *_ = restore_model(run_dir)
    test = input_pipeline.load_dataset("folder", split_dir=split_dir(run_dir)).test
    image = decode_image(tf.io.read_file(test.paths[0]))
    crops = ten_crops(image, config.image_size)
    # The first of the 10 crops is the single evaluation crop.
    np.testing.assert_allclose(crops[0], preprocess_for_eval(image, config.image_size), atol=1e-5)
    np.testing.assert_allclose(crops[5], crops[0][:, ::-1], atol=1e-6)
    averaged = tf.nn.softmax(model(crops, training=False)["logits"]).numpy().mean(0)
    np.testing.assert_allclose(ten["probabilities"][0], averaged, atol=1e-5)
    assert ten["top5"] >= ten["top1"]


def copy_with_config(run_dir, destination, **changes):
    """A copy of the run at `destination`, its config.json's values changed by `changes`."""
    import shutil
    shutil.copytree(run_dir, destination)
    path = os.path.join(destination, "config.json")
    with open(path) as f:
        config = json.load(f)
    config.update(run_dir=str(destination), **changes)
    for key, value in changes.items():
        if value is None:
            del config[key]
    with open(path, "w") as f:
        json.dump(config, f)
    return str(destination)


def test_a_model_trained_without_flips_is_not_scored_on_mirrored_crops(trained_run, tmp_path):
    trained = json.load(open(os.path.join(trained_run[0], "config.json")))["augmentation"]
    assert trained["flip"] is True and trained["crop"] == "inception"  # as the folder recipe
    # The same weights, recorded as trained without flips (as the digits are trained).
    run_dir = copy_with_config(trained_run[0], tmp_path / "no_flips",
                               augmentation={**trained, "flip": False})
    lines = []
    ten = evaluate_checkpoint(EvalSettings(run_dir, crops=10, batch_size=4), one_tower(),
                              print_fn=lines.append)
    model, config, *_ = restore_model(run_dir)
    test = input_pipeline.load_dataset("folder", split_dir=split_dir(run_dir)).test
    image = decode_image(tf.io.read_file(test.paths[0]))
    unmirrored = ten_crops(image, config.image_size, mirror=False)
    np.testing.assert_allclose(unmirrored, ten_crops(image, config.image_size)[:5], atol=1e-6)
    averaged = tf.nn.softmax(model(unmirrored, training=False)["logits"]).numpy().mean(0)
    np.testing.assert_allclose(ten["probabilities"][0], averaged, atol=1e-5)
    assert "5 crop(s) per image (--crops=10 without the mirrored ones" in lines[0]
    metrics = json.load(open(os.path.join(run_dir, "eval", "metrics_10crops.json")))
    assert metrics["crops"] == 10 and metrics["crops_used"] == 5


def test_paper_144_crops(tmp_path):
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    crops = paper_144_crops(image, 32)
    assert crops.shape == (144, 32, 32, 3)
    assert float(tf.reduce_min(crops)) >= -1 and float(tf.reduce_max(crops)) <= 1
    # Mirrors: crops 6..11 are crops 0..5 flipped.
    np.testing.assert_allclose(crops[6], crops[0][:, ::-1], atol=1e-6)
    unmirrored = paper_144_crops(image, 32, mirror=False)
    assert unmirrored.shape == (72, 32, 32, 3)
    np.testing.assert_allclose(unmirrored[6:12], crops[12:18], atol=1e-6)


def test_export_gives_the_same_top1(trained_run, tmp_path):
    run_dir, _ = trained_run
    export_dir = str(tmp_path / "serving")
    evaluate_checkpoint(EvalSettings(run_dir, batch_size=4, export_dir=export_dir), one_tower(),
                        **QUIET)
    model, config, class_names, *_ = restore_model(run_dir)
    test = input_pipeline.load_dataset("folder", split_dir=split_dir(run_dir)).test
    encoded = [open(p, "rb").read() for p in test.paths]
    served = tf.saved_model.load(export_dir).signatures["serving_default"](
        image_bytes=tf.constant(encoded))
    images = np.stack([preprocess_for_eval(decode_image(b), config.image_size) for b in encoded])
    expected = model(images, training=False)["logits"].numpy().argmax(1)
    np.testing.assert_array_equal(served["class_ids"].numpy(), expected)
    assert [n.decode() for n in served["class_names"].numpy()] == [class_names[i] for i in expected]
    with pytest.raises(ValueError, match="is not empty"):
        evaluate_checkpoint(EvalSettings(run_dir, batch_size=4, export_dir=export_dir),
                            one_tower(), **QUIET)


def test_tta_scores_and_exports_the_mean_of_each_image_and_its_mirror(trained_run, tmp_path):
    run_dir, _ = trained_run
    lines, export_dir = [], str(tmp_path / "serving")
    report = evaluate_checkpoint(EvalSettings(run_dir, batch_size=4, tta="mirror",
                                              export_dir=export_dir), one_tower(),
                                 print_fn=lines.append)
    model, config, *_ = restore_model(run_dir)
    test = input_pipeline.load_dataset("folder", split_dir=split_dir(run_dir)).test
    encoded = [open(p, "rb").read() for p in test.paths]
    images = np.stack([preprocess_for_eval(decode_image(b), config.image_size) for b in encoded])
    as_is = tf.nn.softmax(model(images, training=False)["logits"]).numpy()
    mirrored = tf.nn.softmax(model(images[:, :, ::-1], training=False)["logits"]).numpy()
    both = (as_is + mirrored) / 2
    assert report["top1"] == pytest.approx(np.mean(both.argmax(1) == test.labels))
    assert report["without_tta"]["top1"] == pytest.approx(np.mean(as_is.argmax(1) == test.labels))
    assert report["loss"] == pytest.approx(
        np.mean(-np.log(both[np.arange(len(both)), test.labels])), rel=1e-4)
    assert "test-time augmentation mirror" in lines[0] and "without test-time" in lines[2]
    metrics = json.load(open(os.path.join(run_dir, "eval", "metrics_tta-mirror.json")))
    assert metrics["tta"] == "mirror" and "without_tta" in metrics
    served = tf.saved_model.load(export_dir).signatures["serving_default"](
        image_bytes=tf.constant(encoded))["probabilities"].numpy()
    np.testing.assert_allclose(served, both, atol=1e-5)
    with pytest.raises(ValueError, match=r"^--tta=mirror: test-time views are taken of one crop"):
        evaluate_checkpoint(EvalSettings(run_dir, batch_size=4, tta="mirror", crops=10),
                            one_tower(), **QUIET)


def test_watch_stops_after_the_final_checkpoint(trained_run):
    run_dir, _ = trained_run
    reports = watch(EvalSettings(run_dir, batch_size=4, watch=True, watch_timeout=30),
                    one_tower(), poll_seconds=0.1, **QUIET)
    assert len(reports) == 1 and reports[0]["checkpoint"].endswith("ckpt-5")  # 21 images / batch 4


def test_other_data_with_unknown_classes_and_bad_dirs(trained_run, tmp_path):
    run_dir, data_dir = trained_run
    other = str(tmp_path / "other")
    write_image_folder(other, classes=("ant", "yak"), per_class=2)
    with pytest.raises(ValueError, match=r"classes the model does not know: \['yak'\]"):
        run(EvalSettings(run_dir, data_dir=other, batch_size=4), **QUIET)
    same = str(tmp_path / "same")
    write_image_folder(same, classes=("bee", "fox"), per_class=2)
    report = run(EvalSettings(run_dir, data_dir=same, batch_size=4), **QUIET)[0]
    assert sorted(set(report["labels"])) == [1, 5]  # relabelled to the run's class indices
    with pytest.raises(ValueError, match="has no config.json"):
        run(EvalSettings(str(tmp_path)), **QUIET)


def test_evaluate_and_predict_command_lines(trained_run, tmp_path):
    run_dir, data_dir = trained_run
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"),
                           f"--checkpoint_dir={run_dir}", "--batch_size=4"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "top-1 accuracy" in done.stdout and "precision" in done.stdout
    # Written to a file, not a terminal: the progress is plain lines, its last one 9 of 9.
    assert "\x1b" not in done.stdout and "\r" not in done.stdout
    assert re.search(r"^9/9 \[=+\]", done.stdout, re.M), done.stdout
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    image = write_image(tmp_path / "photo.png", fmt="PNG")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"),
                           f"--checkpoint_dir={run_dir}", str(text), image],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert "notes.jpg: skipped, not a readable image" in lines[0]
    assert lines[1].startswith(image + ": ") and len(lines[1].split(", ")) == 5
    empty = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"),
                            f"--checkpoint_dir={tmp_path}"], capture_output=True, text=True,
                           env=env, timeout=300)
    assert empty.returncode == 1 and "has no config.json" in empty.stderr


def test_checkpoint_of_another_model_is_refused(trained_run, tmp_path):
    import inception
    from training.checkpoints import Checkpoints
    run_dir, _ = trained_run
    other = inception.build_model("googlenet", 6, 32, width_multiplier=0.125)
    path = Checkpoints(str(tmp_path), other).save(1, 0)
    with pytest.raises(ValueError, match="does not hold a minigooglenet model"):
        run(EvalSettings(run_dir, checkpoint=path, batch_size=4), **QUIET)


def predict_in_process(run_dir, image):
    """predict.py's main on `image`, in this process: (its output lines, the Keras policy it set).
    """
    import contextlib
    import io

    import keras
    from absl import flags as absl_flags

    import predict
    flags = absl_flags.FLAGS
    flags.unparse_flags()
    flags(["predict.py", f"--checkpoint_dir={run_dir}"])
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            predict.main(["predict.py", image])
    finally:
        flags.unparse_flags()
    return out.getvalue().splitlines(), keras.mixed_precision.global_policy().name


def test_predict_averages_the_runs_test_time_views_and_skips_an_oversized_image(trained_run,
                                                                                tmp_path):
    from test_input_pipeline_first_pass import declared_png
    run_dir = copy_with_config(trained_run[0], tmp_path / "mirror", tta="mirror")
    model, config, class_names, *_ = restore_model(run_dir)
    test = input_pipeline.load_dataset("folder", split_dir=split_dir(run_dir)).test
    image = preprocess_for_eval(decode_image(tf.io.read_file(test.paths[0])), config.image_size)
    both = np.mean([tf.nn.softmax(model(x[None], training=False)["logits"])[0].numpy()
                    for x in (image, image[:, ::-1])], axis=0)
    lines, _ = predict_in_process(run_dir, test.paths[0])
    best = int(np.argmax(both))
    assert lines[0].split(": ", 1)[1].startswith(f"{class_names[best]} {both[best]:.3f}")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(declared_png(20_000, 20_000))
    with pytest.raises(SystemExit):  # every image given was skipped
        predict_in_process(run_dir, str(bomb))


@pytest.mark.parametrize("trained_native", [False, True])
def test_evaluate_and_predict_use_the_precision_the_run_trained_in(tmp_path, monkeypatch,
                                                                   trained_native):
    """The automatic precision is bfloat16 exactly on CPUs with native bfloat16. A run records the
    one it trained in, and is scored and predicted in it on a machine that would choose the
    other (a run copied there)."""
    import keras
    monkeypatch.setattr(devices, "cpu_has_native_bfloat16", lambda: trained_native)
    run_dir, _ = train_run(tmp_path, per_class=4)
    policy = "mixed_bfloat16" if trained_native else "float32"
    assert json.load(open(os.path.join(run_dir, "config.json")))["precision"] == policy
    monkeypatch.setattr(devices, "cpu_has_native_bfloat16", lambda: not trained_native)
    keras.mixed_precision.set_global_policy("float32")
    [report] = run(EvalSettings(run_dir, batch_size=4), **QUIET)
    test = input_pipeline.load_dataset("folder", split_dir=split_dir(run_dir)).test
    assert keras.mixed_precision.global_policy().name == policy
    assert report["count"] == len(test) > 0
    keras.mixed_precision.set_global_policy("float32")
    lines, predicted_in = predict_in_process(run_dir, test.paths[0])
    assert predicted_in == policy and lines[0].startswith(test.paths[0] + ": ")


def test_a_run_saved_before_precision_and_augmentation_were_recorded(trained_run, tmp_path,
                                                                      capsys):
    """Its config.json lacks both: the precision training would choose here and the dataset's
    recipe as it is now, each said once."""
    import keras
    run_dir = copy_with_config(trained_run[0], tmp_path / "old", precision=None,
                               augmentation=None)
    for _ in range(2):
        [report] = run(EvalSettings(run_dir, batch_size=4), **QUIET)
    assert keras.mixed_precision.global_policy().name == devices.precision_policy(
        None, cpu_devices(1))
    assert report["crops_used"] == 1 and report["count"] == 9
    noted = capsys.readouterr().err
    assert noted.count("records no precision (a run saved by an earlier version)") == 1
    assert noted.count("records no augmentation") == 1


def test_editing_a_recipe_does_not_change_how_a_trained_run_is_scored(trained_run, monkeypatch):
    """The run's own augmentation (flips, whole-image or centre-crop view) decides its
    evaluation, not the recipe as edited since it trained."""
    run_dir, _ = trained_run
    before = evaluate_checkpoint(EvalSettings(run_dir, crops=10, batch_size=4), one_tower(),
                                 **QUIET)
    folder = recipes.get_recipe("folder")
    edited = dataclasses.replace(folder, augmentation=dataclasses.replace(
        folder.augmentation, flip=False, crop="pad"))
    monkeypatch.setattr(recipes, "get_recipe", lambda name: edited)
    after = evaluate_checkpoint(EvalSettings(run_dir, crops=10, batch_size=4), one_tower(),
                                **QUIET)
    assert before["crops_used"] == after["crops_used"] == 10
    np.testing.assert_array_equal(before["probabilities"], after["probabilities"])


def test_export_computes_in_float32_after_a_bfloat16_evaluation(trained_run, tmp_path):
    import keras
    run_dir, _ = trained_run
    export_dir = str(tmp_path / "serving")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # as run() sets it on bfloat16 CPUs
    evaluate_checkpoint(EvalSettings(run_dir, batch_size=4, export_dir=export_dir), one_tower(),
                        **QUIET)
    assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"  # left as it was
    keras.mixed_precision.set_global_policy("float32")
    model, config, *_ = restore_model(run_dir)
    test = input_pipeline.load_dataset("folder", split_dir=split_dir(run_dir)).test
    encoded = [open(p, "rb").read() for p in test.paths]
    served = tf.saved_model.load(export_dir).signatures["serving_default"](
        image_bytes=tf.constant(encoded))
    images = np.stack([preprocess_for_eval(decode_image(b), config.image_size) for b in encoded])
    expected = tf.nn.softmax(model(images, training=False)["logits"]).numpy()
    # bfloat16 keeps 8 bits of mantissa: a bfloat16 export would be off by ~1e-2.
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)


# About 70 s; the float16 resume test in test_training_loop.py stays in the fast suite.
@pytest.mark.slow
def test_evaluate_predict_and_export_a_float16_run(tmp_path):
    import keras
    run_dir, _ = train_run(tmp_path, towers=2, mixed_precision_dtype="float16")
    export_dir = str(tmp_path / "serving")
    [report] = run(EvalSettings(run_dir, batch_size=4, export_dir=export_dir), **QUIET)
    # Scored as trained, in float16 (on a CPU here); the export computes in float32.
    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    assert report["count"] == 5 and 0 <= report["top1"] <= 1  # 30% of 15, stratified
    keras.mixed_precision.set_global_policy("float32")
    served = tf.saved_model.load(export_dir)
    model, *_ = restore_model(run_dir)
    test = input_pipeline.load_dataset("folder", split_dir=split_dir(run_dir)).test
    encoded = [open(p, "rb").read() for p in test.paths]
    probabilities = served.signatures["serving_default"](
        image_bytes=tf.constant(encoded))["probabilities"].numpy()
    images = np.stack([preprocess_for_eval(decode_image(b), 32) for b in encoded])
    expected = tf.nn.softmax(model(images, training=False)["logits"]).numpy()
    # The same as the float32 model to float32 rounding (float16 compute would differ by ~1e-3).
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    done = subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"),
                           f"--checkpoint_dir={run_dir}", test.paths[0]], capture_output=True,
                          text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    names = ["ant", "bee", "cat"]
    ranked = ", ".join(f"{names[i]} {expected[0][i]:.3f}" for i in np.argsort(-expected[0]))
    assert done.stdout.strip() == f"{test.paths[0]}: {ranked}"


# A run directory train.py wrote before config.json recorded the precision and augmentation a run
# resolved: minigooglenet x0.125 on 3 classes of 5 photos, one epoch of 2 steps in float32, made
# under FIXTURE_ROOT, which its files name in their absolute paths. It printed "Done at step 2:
# test top-1 0.0000, top-5 1.0000, loss 1.1207".
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "run_without_resolved_settings")
FIXTURE_ROOT = "/tmp/googlenet-tf-fixture"


def older_run(tmp_path):
    """The fixture copied to `tmp_path`, the paths its files recorded moved with it."""
    import shutil
    root = tmp_path / "fixture"
    shutil.copytree(FIXTURE, root)
    for name in ("config.json", "data/dataset.json", "data/split.csv", "training_done.json"):
        path = root / "run" / name
        path.write_text(path.read_text().replace(FIXTURE_ROOT, str(root)))
    return str(root / "run")


def test_a_run_written_before_resolved_settings_were_recorded_evaluates_and_resumes(
        tmp_path, monkeypatch, capsys):
    import keras
    monkeypatch.setattr(devices, "cpu_has_native_bfloat16", lambda: False)  # as where it trained
    run_dir = older_run(tmp_path)
    saved = json.load(open(os.path.join(run_dir, "config.json")))
    assert "precision" not in saved and "augmentation" not in saved
    [report] = run(EvalSettings(run_dir, batch_size=4), **QUIET)
    assert (report["count"], report["top1"], report["top5"]) == (5, 0.0, 1.0)
    assert report["loss"] == pytest.approx(1.1207, abs=1e-4) and report["crops_used"] == 1
    assert keras.mixed_precision.global_policy().name == "float32"
    noted = capsys.readouterr().err
    assert "records no precision" in noted and "records no augmentation" in noted
    keras.mixed_precision.set_global_policy("float32")
    lines = []
    result = Trainer(resolve_config({"run_dir": run_dir, "epochs": 2}), towers=cpu_devices(1),
                     print_fn=lines.append).train()
    assert result["step"] == 4 and any(line.startswith("Resumed from ") for line in lines)
    resumed = json.load(open(os.path.join(run_dir, "config.json")))
    assert resumed["precision"] == "float32" and resumed["augmentation"]["crop"] == "inception"
    with open(os.path.join(run_dir, "history.csv")) as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2"]
