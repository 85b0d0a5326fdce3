"""The exports of evaluation/export.py: the SavedModel served by the session-based loader
(`saved_model_cli run`, as TF Serving loads it), the TFLite models (float32, float16, int8) and the
optional ONNX one against the SavedModel, plus the refusal of bad --export_format /
--tflite_quantization values."""
import io
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_evaluate import train_run

import input_pipeline
from conftest import cpu_devices
from evaluation.evaluate_run import EvalSettings, evaluate_checkpoint, run
from evaluation.export import (
    ONNX_FILE,
    ONNX_INFO_FILE,
    TFLITE_FILE,
    TFLITE_INFO_FILE,
    export_onnx,
    export_saved_model,
    export_tflite,
)
from evaluation.trained import restore_model, trained_augmentation
from inception import build_model
from input_pipeline.preprocessing import cache_size, decode_image, preprocess_for_eval
from rundir.layout import split_dir
from training import devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = dict(print_fn=lambda *a: None)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
# int8 against the SavedModel on the held-out images of the run below, as measured: every top-1
# the same on its 18 held-out images (and its 42 training ones), the largest probability
# difference 0.0035 (0.0040). The run is barely trained (top probabilities 0.28-0.32 of 6
# classes), so close calls are common: the bounds leave room for another CPU's kernels without
# letting a broken calibration (probabilities off by 0.1 or more) pass.
INT8_TOP1_AGREEMENT = 0.8
INT8_MAX_DIFFERENCE = 0.05


def jpeg_bytes(rng: np.random.Generator, shape=(40, 52)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_saved_model_cli_serves_what_python_loads(tmp_path):
    # minigooglenet has batch norm: its moving statistics are what the session-based loader
    # could not find in a tf.Module export ("Could not find variable .../moving_variance").
    model = build_model("minigooglenet", 3, 32, width_multiplier=0.25)
    model(np.zeros((1, 32, 32, 3), np.float32), training=False)
    path = export_saved_model(model, ["ant", "bee", "cat"], 32, str(tmp_path / "export"),
                              tta="mirror")
    rng = np.random.default_rng(0)
    encoded = np.array([jpeg_bytes(rng) for _ in range(3)], dtype=object)
    np.save(tmp_path / "x.npy", encoded, allow_pickle=True)
    out = tmp_path / "out"
    done = subprocess.run(
        ["saved_model_cli", "run", "--dir", path, "--tag_set", "serve", "--signature_def",
         "serving_default", "--inputs", f"image_bytes={tmp_path / 'x.npy'}", "--outdir",
         str(out)], capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    served = tf.saved_model.load(path).signatures["serving_default"](
        image_bytes=tf.constant(list(encoded)))
    np.testing.assert_allclose(np.load(out / "probabilities.npy"),
                               served["probabilities"].numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.load(out / "class_ids.npy"), served["class_ids"].numpy())
    np.testing.assert_array_equal(np.load(out / "class_names.npy", allow_pickle=True),
                                  served["class_names"].numpy())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small run (6 classes of 10 photos, 18 held out), its SavedModel and its TFLite models:
    float32 and float16 written from the restored model, int8 through evaluate.py's path (which
    draws the calibration images from the run's training split)."""
    base = tmp_path_factory.mktemp("export")
    run_dir, _ = train_run(base, classes=("ant", "bee", "cat", "dog", "eel", "fox"),
                           per_class=10)
    # Training left Keras' policy at bfloat16 on CPUs that have it: exports compute in float32
    # (evaluate.py restores the model in float32 for them too).
    keras.mixed_precision.set_global_policy("float32")
    model, config, class_names, *_ = restore_model(run_dir)
    fraction = trained_augmentation(config).eval_fraction
    paths = {"saved_model": export_saved_model(model, class_names, config.image_size,
                                               str(base / "saved_model"), fraction)}
    for quantization in ("none", "float16"):
        paths[quantization] = export_tflite(model, class_names, config.image_size,
                                            str(base / f"tflite-{quantization}"), fraction,
                                            quantization=quantization)
    paths["int8"] = str(base / "tflite-int8")
    evaluate_checkpoint(EvalSettings(run_dir, batch_size=4, export_dir=paths["int8"],
                                     export_format="tflite", tflite_quantization="int8"),
                        devices.make_strategy(cpu_devices(1)), **QUIET)
    test = input_pipeline.load_dataset("folder", split_dir=split_dir(run_dir)).test
    encoded = [open(p, "rb").read() for p in test.paths]
    pixels = np.stack([preprocess_for_eval(decode_image(b), config.image_size, fraction).numpy()
                       for b in encoded])
    served = tf.saved_model.load(paths["saved_model"]).signatures["serving_default"](
        image_bytes=tf.constant(encoded))["probabilities"].numpy()
    return dict(paths=paths, pixels=pixels, served=served, config=config, fraction=fraction,
                class_names=class_names, model=model)


def tflite_probabilities(directory: str, pixels: np.ndarray) -> np.ndarray:
    """The .tflite model's probabilities of preprocessed `pixels`, by TensorFlow's interpreter
    (its warning that the interpreter moves to the ai_edge_litert package is silenced in
    pytest's filterwarnings below: that package is not a dependency)."""
    interpreter = tf.lite.Interpreter(model_path=os.path.join(directory, TFLITE_FILE))
    return interpreter.get_signature_runner()(pixels=pixels)["probabilities"]


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tflite_float32_gives_the_saved_models_probabilities(exported):
    pixels, served = exported["pixels"], exported["served"]
    assert len(pixels) == 18
    probabilities = tflite_probabilities(exported["paths"]["none"], pixels)
    np.testing.assert_array_equal(probabilities.argmax(1), served.argmax(1))
    np.testing.assert_allclose(probabilities, served, atol=1e-4)
    # Stored in float16, computed in float32: the same to float16 rounding of the weights
    # (measured: within 1.5e-4).
    half = tflite_probabilities(exported["paths"]["float16"], pixels)
    np.testing.assert_array_equal(half.argmax(1), served.argmax(1))
    np.testing.assert_allclose(half, served, atol=1e-3)


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tflite_int8_agrees_with_the_saved_model(exported):
    pixels, served = exported["pixels"], exported["served"]
    probabilities = tflite_probabilities(exported["paths"]["int8"], pixels)
    agreement = np.mean(probabilities.argmax(1) == served.argmax(1))
    difference = np.abs(probabilities - served).max()
    print(f"int8: top-1 agreement {agreement:.3f}, largest probability difference "
          f"{difference:.4f} over {len(pixels)} images")
    assert agreement >= INT8_TOP1_AGREEMENT and difference <= INT8_MAX_DIFFERENCE
    sizes = {q: os.path.getsize(os.path.join(exported["paths"][q], TFLITE_FILE))
             for q in ("none", "float16", "int8")}
    assert sizes["int8"] < sizes["float16"] < sizes["none"]


def test_tflite_info_states_the_preprocessing(exported):
    config, fraction = exported["config"], exported["fraction"]
    info = json.load(open(os.path.join(exported["paths"]["int8"], TFLITE_INFO_FILE)))
    assert info["quantization"] == "int8" and info["model_file"] == TFLITE_FILE
    assert info["image_size"] == config.image_size and info["eval_crop_fraction"] == fraction
    assert info["resize_before_crop"] == cache_size(config.image_size, fraction)
    assert info["input"]["shape"] == [-1, config.image_size, config.image_size, 3]
    assert info["input"]["range"] == [-1.0, 1.0] and "127.5" in info["input"]["pixel_mapping"]
    assert info["class_names"] == exported["class_names"]
    assert info["test_time_augmentation"]["this_model_applies"] == "none"
    assert info["test_time_augmentation"]["saved_model_applies"] == config.tta
    with pytest.raises(ValueError, match="is not empty"):
        export_tflite(None, [], 32, exported["paths"]["none"])  # refused before converting


def test_onnx_gives_the_saved_models_probabilities(exported, tmp_path):
    # Optional: tf2onnx and onnxruntime are not dependencies of the project.
    pytest.importorskip("tf2onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    config = exported["config"]
    path = export_onnx(exported["model"], exported["class_names"], config.image_size,
                       str(tmp_path / "onnx"), exported["fraction"])
    session = onnxruntime.InferenceSession(os.path.join(path, ONNX_FILE))
    [probabilities] = session.run(None, {session.get_inputs()[0].name: exported["pixels"]})
    np.testing.assert_array_equal(probabilities.argmax(1), exported["served"].argmax(1))
    np.testing.assert_allclose(probabilities, exported["served"], atol=1e-4)
    info = json.load(open(os.path.join(path, ONNX_INFO_FILE)))
    assert info["model_file"] == ONNX_FILE and info["class_names"] == exported["class_names"]


@pytest.mark.parametrize("settings, message", [
    (dict(export_format="coreml", export_dir="x"),
     "--export_format=coreml: must be one of saved_model, tflite, onnx"),
    (dict(export_format="tflite", tflite_quantization="int4", export_dir="x"),
     "--tflite_quantization=int4: must be one of none, float16, int8"),
    (dict(tflite_quantization="int8", export_dir="x"),
     "--tflite_quantization=int8: applies to --export_format=tflite only"),
    (dict(export_format="tflite"), "--export_format=tflite: needs --export_dir"),
])
def test_bad_export_settings_are_refused_before_anything_is_read(tmp_path, settings, message):
    # The run directory does not exist: the settings are refused before it is looked at.
    with pytest.raises(ValueError, match="^" + message):
        run(EvalSettings(str(tmp_path / "no-run"), **settings), **QUIET)


def test_evaluate_py_refuses_bad_export_flags_in_one_line(tmp_path):
    def evaluate(*flags):
        return subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"),
                               f"--checkpoint_dir={tmp_path / 'no-run'}", *flags],
                              capture_output=True, text=True, env=ENV, timeout=300)
    done = evaluate("--export_dir=out", "--tflite_quantization=int8")
    # TensorFlow's own start-up lines (absl, oneDNN) may come first; the error is the last line.
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: --tflite_quantization=int8: applies to --export_format=tflite only "
        "(--export_format=saved_model)")
    assert not os.path.exists(tmp_path / "no-run")
    done = evaluate("--export_dir=out", "--export_format=coreml")
    assert done.returncode != 0 and "--export_format" in done.stderr
    assert "saved_model|tflite|onnx" in done.stderr
