"""Tests for --init_from and --trainable (training/finetune.py), in-process with tiny GoogLeNets:
a 4-class run started from a 3-class run, part of it frozen, then resumed."""
import os

import numpy as np
import pytest

import inception
from conftest import cpu_devices, tiny_settings, write_image_folder
from evaluation.trained import restore_model
from rundir.recorded import resolve_config
from training import finetune
from training.loop import Trainer
from training.pretrained import variable_names
from training.step import decayed_weights

MODEL = "googlenet_bn"  # aux heads and batch norm: every kind of weight there is to load


def settings(data_dir, run_dir, **extra):
    return tiny_settings(data_dir, run_dir, **{"model": MODEL, "epochs": 1, "lr": 0.05,
                                               "mixed_precision": False, **extra})


def folder(tmp_path_factory, classes):
    root = tmp_path_factory.mktemp("data") / "".join(classes)
    write_image_folder(str(root), classes=classes, per_class=6, size=(36, 36))
    return str(root)


def weights(model):
    """{name: value} of every weight (aux heads' prefixed with the head's name)."""
    names = variable_names(model)
    return {names[id(v)]: v.numpy().copy() for v in model.weights}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 3-class run trained for one epoch (3 steps): its batch-norm statistics have moved."""
    run_dir = str(tmp_path_factory.mktemp("source") / "run")
    config = resolve_config(settings(folder(tmp_path_factory, ("a", "b", "c")), run_dir))
    Trainer(config, towers=cpu_devices(1), print_fn=lambda *a: None).train()
    model, *_ = restore_model(run_dir)
    return run_dir, weights(model)


@pytest.fixture(scope="module")
def fine_tuned(source, tmp_path_factory):
    """A 4-class run (another seed, so its own initial weights differ) from `source`, trained
    for an epoch from module 4e on: its weights as started and as trained, and what it printed."""
    source_dir, _ = source
    data_dir = folder(tmp_path_factory, ("a", "b", "c", "d"))
    run_dir = str(tmp_path_factory.mktemp("target") / "run")
    lines = []
    trainer = Trainer(resolve_config(settings(data_dir, run_dir, seed=1, init_from=source_dir,
                                              trainable="from:4e")),
                      towers=cpu_devices(2), print_fn=lines.append)
    started = weights(trainer.state.model)
    trainer.train()
    return dict(trainer=trainer, started=started, trained=weights(trainer.state.model), lines=lines,
                run_dir=run_dir, data_dir=data_dir)


def is_classifier(name):
    return name.split("/")[-2] == "logits"


def test_weights_are_loaded_by_name_and_shape_and_the_classifiers_start_new(source, fine_tuned):
    source_dir, theirs = source
    started = fine_tuned["started"]
    assert set(started) == set(theirs)
    # Not vacuous: the source trained (moving means away from their initial 0) and the new
    # run's own seed drew other initial kernels than the source's.
    assert any(np.abs(v).max() > 0 for k, v in theirs.items() if k.endswith("moving_mean"))
    for name, value in started.items():
        if is_classifier(name):
            # 4 classes here, 3 in the source: other shapes, so the new run's own.
            assert value.shape[-1] == 4 and theirs[name].shape[-1] == 3, name
        else:
            np.testing.assert_array_equal(value, theirs[name], err_msg=name)
    classifiers = {name for name in started if is_classifier(name)}
    assert classifiers == {f"{part}/{w}" for part in ("logits", "aux1/logits", "aux2/logits")
                           for w in ("kernel", "bias")}
    report = fine_tuned["trainer"].restored.init_report
    assert set(report.mismatched) == classifiers and report.initialised == ()
    assert len(report.loaded) == len(started) - 6 and report.unmatched == ()
    assert report.loaded_values == sum(v.size for k, v in theirs.items() if not is_classifier(k))
    assert fine_tuned["lines"][0] == (
        f"Weights from run {source_dir!r} (ckpt-3): loaded {len(started) - 6} weights "
        f"({report.loaded_values:,} values); new: none; did not match the source (another "
        f"shape or class list), so new too: aux1/logits, aux2/logits, logits; not used from the "
        f"source: none")


def test_frozen_layers_and_their_batch_norm_statistics_stay_as_loaded(fine_tuned):
    started, trained = fine_tuned["started"], fine_tuned["trained"]
    frozen_prefixes = ("conv1", "conv2", *(f"inception_{m}/" for m in ("3a", "3b", "4a", "4b",
                                                                        "4c", "4d")))
    frozen = [name for name in started if name.startswith(frozen_prefixes)]
    # The stem's 3 convs and 6 modules of 6 convs, each a kernel, scale, offset, mean, variance.
    assert len(frozen) == (3 + 6 * 6) * 5
    for name in frozen:
        np.testing.assert_array_equal(trained[name], started[name], err_msg=name)
    # What trains moved, batch-norm statistics included.
    for name in ("inception_4e/branch1x1/conv/kernel", "inception_5b/branch3x3/bn/moving_mean",
                 "inception_4e/branch1x1/bn/moving_variance", "logits/kernel",
                 "aux1/fc/kernel", "aux2/logits/kernel"):
        assert np.abs(trained[name] - started[name]).max() > 0, name
    start_line = fine_tuned["lines"][1]
    assert ", 4 classes, training 4e onwards and the classifier and aux heads (" in start_line
    assert "% of the weights frozen: the stem to 4d), 2 tower(s)" in start_line


@pytest.mark.slow
def test_a_resumed_run_reads_its_own_checkpoint_not_init_from(source, fine_tuned):
    source_dir, theirs = source
    run_dir = fine_tuned["run_dir"]
    # The same command again, with one more epoch: the run's checkpoint wins.
    lines = []
    resumed = Trainer(resolve_config({"run_dir": run_dir, "epochs": 2, "init_from": source_dir}),
                      towers=cpu_devices(1), print_fn=lines.append)
    # 4 classes of 6 images, 30% held out: 16 training images, 4 steps an epoch.
    assert resumed.restored.checkpoint.endswith("ckpt-4")
    assert resumed.restored.init_report is None
    now = weights(resumed.state.model)
    for name, value in fine_tuned["trained"].items():
        np.testing.assert_array_equal(now[name], value, err_msg=name)
    assert np.abs(now["inception_5b/branch1x1/conv/kernel"]
                  - theirs["inception_5b/branch1x1/conv/kernel"]).max() > 0
    # It keeps training what it trained: --trainable is the run's saved setting.
    assert resumed.config.trainable == "from:4e"
    assert not resumed.state.model.trunk.get_layer("inception_4d").trainable
    resumed.announce(4)
    assert lines[0].endswith(f"The run started from --init_from={source_dir}; it goes on from "
                             f"its own checkpoint.")
    # Another source for a run that has trained is another run: refused, nothing changed.
    with pytest.raises(ValueError, match=f"holds a run with init_from={source_dir!r}; this command "
                                         f"asks for init_from='elsewhere'"):
        resolve_config({"run_dir": run_dir, "init_from": "elsewhere"})
    # --trainable may change on resume (the heads first, then all): the optimizer holds state for
    # every weight, frozen or not, so the checkpoint fits, and what was frozen trains now.
    unfrozen = Trainer(resolve_config({"run_dir": run_dir, "epochs": 2, "trainable": "all"}),
                       towers=cpu_devices(1), print_fn=lambda *a: None)
    assert unfrozen.restored.checkpoint.endswith("ckpt-4") and unfrozen.train()["step"] == 8
    after = weights(unfrozen.state.model)
    for name in ("conv1_7x7_s2/conv/kernel", "inception_4d/branch1x1/bn/moving_mean"):
        assert np.abs(after[name] - fine_tuned["trained"][name]).max() > 0, name


def test_the_same_class_count_with_other_classes_keeps_new_classifiers(source, tmp_path_factory):
    source_dir, theirs = source
    same = Trainer(resolve_config(settings(folder(tmp_path_factory, ("a", "b", "c")),
                                           str(tmp_path_factory.mktemp("same") / "run"),
                                           seed=1, init_from=source_dir)),
                   towers=cpu_devices(1), print_fn=lambda *a: None)
    report = same.restored.init_report
    assert report.mismatched == () and len(report.loaded) == len(theirs)
    other = Trainer(resolve_config(settings(folder(tmp_path_factory, ("x", "y", "z")),
                                            str(tmp_path_factory.mktemp("other") / "run"),
                                            seed=1, init_from=source_dir + "/checkpoints")),
                    towers=cpu_devices(1), print_fn=lambda *a: None)
    # A checkpoints/ directory of a run: its latest checkpoint, and the run's class list.
    assert other.restored.init_report.source == f"run {source_dir!r} (ckpt-3)"
    assert {n.rsplit("/", 1)[0] for n in other.restored.init_report.mismatched} == {
        "logits", "aux1/logits", "aux2/logits"}
    got = weights(other.state.model)
    assert not np.array_equal(got["logits/kernel"], theirs["logits/kernel"])


def model():
    return inception.build_model(MODEL, 4, 32, width_multiplier=0.125)


def trainable_names(model):
    names = variable_names(model)
    return {names[id(v)] for v in model.trainable_variables}


def test_head_trains_the_classifier_and_the_aux_heads_only():
    m = model()
    everything = trainable_names(m)
    assert finetune.freeze(m, MODEL, "head").startswith(
        "training the classifier and aux heads only (9")  # 9x% of the weights frozen
    assert trainable_names(m) == {n for n in everything
                                  if n.startswith(("logits/", "aux1/", "aux2/"))}
    # No weight decay on what does not train.
    assert {v.path for v in decayed_weights(m)} == {"logits/kernel", "conv_1x1/conv/kernel",
                                                    "fc/kernel"}
    assert len(decayed_weights(m)) == 7  # the classifier's, and three of each aux head's
    assert all(not layer.trainable for layer in m.trunk.layers if layer.name != "logits")


def test_from_the_first_module_freezes_the_stem_only():
    m = model()
    everything = trainable_names(m)
    assert finetune.freeze(m, MODEL, "from:3a").endswith("% of the weights frozen: the stem)")
    frozen = everything - trainable_names(m)
    assert {n.split("/")[0] for n in frozen} == {"conv1_7x7_s2", "conv2_3x3_reduce", "conv2_3x3"}
    assert finetune.freeze(model(), MODEL, "all") is None


@pytest.mark.parametrize("value, message", [
    ("nowhere", "--init_from=nowhere: there is no run directory, checkpoint"),
    ("nowhere.h5", "--init_from=nowhere.h5: no such Keras weights file"),
])
def test_init_from_what_is_not_there_is_refused_in_one_line(value, message, tmp_path,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"^{message}"):
        finetune.find_init_source(value)


def test_a_run_without_a_checkpoint_or_a_file_of_another_kind_is_refused(tmp_path, source):
    source_dir, _ = source
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    (empty_run / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds no checkpoint yet"):
        finetune.find_init_source(str(empty_run))
    not_a_checkpoint = tmp_path / "ckpt-1"
    (tmp_path / "ckpt-1.index").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=f"^--init_from={not_a_checkpoint}: .* cannot be read"):
        finetune.find_init_source(str(not_a_checkpoint))
    # A checkpoint path inside a run: the run is known, so are its classes.
    found = finetune.find_init_source(os.path.join(source_dir, "checkpoints", "ckpt-3"))
    assert found.run_dir == os.path.abspath(source_dir) and found.checkpoint.endswith("ckpt-3")


def test_keras_means_keras_imagenet_weights_and_offline_is_one_line(monkeypatch):
    calls = []

    def fake(model, source):
        calls.append(source)
        return "the report"
    monkeypatch.setattr(finetune, "init_from_keras_inception_v3", fake)
    assert finetune.initialise("a model", finetune.find_init_source("keras"), []) == "the report"
    assert calls == ["imagenet"]

    def offline(model, source):  # what keras.utils.get_file raises without a network
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno "
                        "-3] Temporary failure in name resolution")
    monkeypatch.setattr(finetune, "init_from_keras_inception_v3", offline)
    with pytest.raises(ValueError, match="^--init_from=keras: Keras' InceptionV3 weights could "
                                         "not be read: URL fetch failure on https://"):
        finetune.initialise("a model", finetune.find_init_source("keras"), [])
