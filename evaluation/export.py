"""Export for serving and for phones.

- SavedModel (--export_format=saved_model): takes encoded image bytes, runs the evaluation
  preprocessing inside, applies the run's test-time augmentation (--tta): the served
  probabilities are those evaluate.py scores. Written with Keras' ExportArchive, which the
  session-based loader (`saved_model_cli run`, TF Serving) reads as well as tf.saved_model.load
  does; a Keras 3 model inside a tf.Module saved with tf.saved_model.save is not (its batch-norm
  variables are not found).
- TFLite (--export_format=tflite): TensorFlow's converter on the model alone, preprocessed float
  pixels in, softmax probabilities out, optionally quantized (float16, or int8 calibrated on the
  run's training images); beside it a JSON stating the preprocessing the caller has to do.
- ONNX (--export_format=onnx, when tf2onnx is installed): the same model as the float32 TFLite
  one, converted by tf2onnx, with the same JSON beside it.

Both are written to a staging directory beside the target and renamed into place, so a failed or
stopped export never leaves a half-written one.
"""
import json
import os
import shutil
import tempfile
from typing import Callable, Dict, Iterable, List, Optional

import keras
import numpy as np
import tensorflow as tf

from input_pipeline.crops import tta_views
from input_pipeline.preprocessing import (
    EVAL_CROP_FRACTION,
    cache_size,
    decode_image,
    preprocess_for_eval,
)
from settings.choices import EXPORT_FORMATS, TFLITE_QUANTIZATIONS
from training.step import softmax_of_views

TFLITE_FILE = "model.tflite"
TFLITE_INFO_FILE = TFLITE_FILE + ".json"
ONNX_FILE = "model.onnx"
ONNX_INFO_FILE = ONNX_FILE + ".json"
# The ONNX operator set written: 17 is read by onnxruntime releases since 1.13 (2022).
ONNX_OPSET = 17
# Calibration images for int8: a few hundred cover the activation ranges; more only cost time.
REPRESENTATIVE_IMAGES = 200


def check_export_target(export_dir: str) -> str:
    """`export_dir` as an absolute path; ValueError if it holds anything (an export never writes
    over another)."""
    export_dir = os.path.abspath(export_dir)
    if os.path.exists(export_dir) and (not os.path.isdir(export_dir) or os.listdir(export_dir)):
        raise ValueError(f"--export_dir={export_dir!r} is not empty; choose a new directory")
    return export_dir


def _write_atomically(export_dir: str, write: Callable[[str], None]) -> str:
    """Calls write(staging_dir), then renames the staging directory to `export_dir`."""
    export_dir = check_export_target(export_dir)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        write(staging)
        if os.path.exists(export_dir):
            os.rmdir(export_dir)  # empty, checked above
        os.rename(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return export_dir


def probabilities_of_views(model: keras.Model, images: tf.Tensor, tta: str = "none") -> tf.Tensor:
    """Softmax [N, classes] of model inputs [N, S, S, 3], averaged over the test-time views
    (one view, the image itself, with tta="none"): evaluate.py's scores."""
    return tf.reduce_mean(softmax_of_views(model, tta_views(images, tta)), axis=1)


def serving_function(model: keras.Model, class_names: List[str], image_size: int,
                     eval_fraction: float = EVAL_CROP_FRACTION,
                     tta: str = "none") -> Callable[[tf.Tensor], Dict[str, tf.Tensor]]:
    """The tf.function the SavedModel serves: image bytes [N] -> probabilities, class ids and
    class names."""
    names = tf.constant(list(class_names))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(image_bytes: tf.Tensor) -> Dict[str, tf.Tensor]:
        """JPEG / PNG / GIF / BMP bytes [N] -> probabilities [N, classes], top class id and
        name."""
        images = tf.map_fn(
            lambda b: preprocess_for_eval(decode_image(b), image_size, eval_fraction),
            image_bytes, fn_output_signature=tf.TensorSpec([image_size, image_size, 3],
                                                           tf.float32))
        probabilities = probabilities_of_views(model, images, tta)
        top = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"probabilities": probabilities, "class_ids": top,
                "class_names": tf.gather(names, top)}
    return serve


def _write_archive(model: keras.Model, function: Callable[[tf.Tensor], Dict[str, tf.Tensor]],
                   directory: str) -> None:
    """A SavedModel of `model`'s variables with `function` as its serving_default signature."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", function)
    archive.write_out(directory, verbose=False)


def export_saved_model(model: keras.Model, class_names: List[str], image_size: int,
                       export_dir: str, eval_fraction: float = EVAL_CROP_FRACTION,
                       tta: str = "none") -> str:
    """Writes the SavedModel to `export_dir` (which must not hold anything yet), atomically;
    returns its absolute path. `tta`: the test-time augmentation the served model applies."""
    serve = serving_function(model, class_names, image_size, eval_fraction, tta)
    return _write_atomically(export_dir, lambda staging: _write_archive(model, serve, staging))


def pixels_function(model: keras.Model,
                    image_size: int) -> Callable[[tf.Tensor], Dict[str, tf.Tensor]]:
    """The tf.function the TFLite model computes: preprocessed pixels [N, S, S, 3] in [-1, 1] ->
    softmax probabilities [N, classes] of the main logits (no test-time views)."""
    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32,
                                                name="pixels")])
    def probabilities(pixels: tf.Tensor) -> Dict[str, tf.Tensor]:
        return {"probabilities": tf.nn.softmax(model(pixels, training=False)["logits"])}
    return probabilities


def tflite_bytes(model: keras.Model, image_size: int, quantization: str = "none",
                 representative: Optional[Callable[[], Iterable[np.ndarray]]] = None) -> bytes:
    """The .tflite flatbuffer of `model` (pixels in, probabilities out). `quantization`: none
    (float32), float16 (weights stored in float16) or int8 (weights and activations in int8,
    their ranges calibrated on `representative()`, which yields preprocessed pixel batches
    [1, S, S, 3]); input and output stay float32 in all three."""
    if quantization not in TFLITE_QUANTIZATIONS:
        raise ValueError(f"--tflite_quantization={quantization}: must be one of "
                         f"{', '.join(TFLITE_QUANTIZATIONS)}")
    if quantization == "int8" and representative is None:
        raise ValueError("--tflite_quantization=int8 needs representative images to calibrate on")
    # Converted from a SavedModel, not from the tf.function: the converter does not find a Keras 3
    # model's variables through a concrete function (it keeps them as READ_VARIABLE ops, which
    # fail or give NaN), but freezes those of a SavedModel ExportArchive wrote.
    with tempfile.TemporaryDirectory(prefix=".tflite-") as scratch:
        _write_archive(model, pixels_function(model, image_size), scratch)
        converter = tf.lite.TFLiteConverter.from_saved_model(scratch)
        if quantization != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            converter.representative_dataset = lambda: ([batch] for batch in representative())
        return converter.convert()


def tflite_info(class_names: List[str], image_size: int, eval_fraction: float, tta: str,
                quantization: str, model_file: str = TFLITE_FILE) -> dict:
    """What a caller of the .tflite (or .onnx) model has to know: the input it takes and how to
    make it from an image (input_pipeline/preprocessing.py's preprocess_for_eval, step by step),
    the output, and the test-time augmentation the SavedModel applies that this model does
    not."""
    square = cache_size(image_size, eval_fraction)
    steps = [
        "decode the image to 8-bit RGB [H, W, 3] (grayscale and CMYK to RGB, RGBA without alpha, "
        "a GIF's first frame)",
        f"resize the whole image, ignoring its aspect ratio, to a {square}x{square} square "
        f"(ceil({image_size} / {eval_fraction})): the area filter when both sides are at least "
        f"{square}, else bilinear with antialiasing; round and clip to 0..255",
    ]
    if eval_fraction < 1.0:
        steps.append(f"crop the central {eval_fraction} of each side (tf.image.central_crop: "
                     f"{square - 2 * int((square - square * eval_fraction) / 2)} pixels square)")
    steps += [f"resize to {image_size}x{image_size}, bilinear (no antialiasing)",
              "map each channel value v in 0..255 to v / 127.5 - 1 (float32 in [-1, 1])"]
    return {
        "model_file": model_file,
        "quantization": quantization,
        "input": {"name": "pixels", "shape": [-1, image_size, image_size, 3],
                  "dtype": "float32", "layout": "NHWC, RGB", "range": [-1.0, 1.0],
                  "pixel_mapping": "v / 127.5 - 1 for 8-bit RGB values v"},
        "output": {"name": "probabilities", "shape": [-1, len(class_names)],
                   "dtype": "float32", "meaning": "softmax of the main logits, one row per image"},
        "image_size": image_size,
        "eval_crop_fraction": eval_fraction,
        "resize_before_crop": square,
        "preprocessing": steps,
        "class_names": list(class_names),
        "test_time_augmentation": {
            "saved_model_applies": tta,
            "this_model_applies": "none",
            "note": ("the SavedModel export of this run averages the softmax over the views of "
                     f"--tta={tta} (input_pipeline/crops.py tta_views); this model scores one "
                     "view: average its outputs over the same views to match"
                     if tta != "none" else "neither applies any"),
        },
    }


def export_tflite(model: keras.Model, class_names: List[str], image_size: int,
                  export_dir: str, eval_fraction: float = EVAL_CROP_FRACTION,
                  tta: str = "none", quantization: str = "none",
                  representative: Optional[Callable[[], Iterable[np.ndarray]]] = None) -> str:
    """Writes `export_dir`/model.tflite and model.tflite.json (the preprocessing it needs) to
    `export_dir` (which must not hold anything yet), atomically; returns its absolute path."""
    check_export_target(export_dir)
    flatbuffer = tflite_bytes(model, image_size, quantization, representative)
    info = tflite_info(class_names, image_size, eval_fraction, tta, quantization)

    def write(staging: str) -> None:
        with open(os.path.join(staging, TFLITE_FILE), "wb") as f:
            f.write(flatbuffer)
        with open(os.path.join(staging, TFLITE_INFO_FILE), "w") as f:
            json.dump(info, f, indent=2)
    return _write_atomically(export_dir, write)


def export_onnx(model: keras.Model, class_names: List[str], image_size: int, export_dir: str,
                eval_fraction: float = EVAL_CROP_FRACTION, tta: str = "none") -> str:
    """Writes `export_dir`/model.onnx (the float32 pixels model of `export_tflite`, by tf2onnx)
    and model.onnx.json, atomically; returns its absolute path. Needs tf2onnx installed."""
    check_export_target(export_dir)
    import tf2onnx  # optional: only this format needs it (settings check it is installed)

    def write(staging: str) -> None:
        function = pixels_function(model, image_size)
        tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                      opset=ONNX_OPSET,
                                      output_path=os.path.join(staging, ONNX_FILE))
        with open(os.path.join(staging, ONNX_INFO_FILE), "w") as f:
            json.dump(tflite_info(class_names, image_size, eval_fraction, tta, "none",
                                  ONNX_FILE), f, indent=2)
    return _write_atomically(export_dir, write)


def export_model(export_format: str, model: keras.Model, class_names: List[str],
                 image_size: int, export_dir: str, eval_fraction: float = EVAL_CROP_FRACTION,
                 tta: str = "none", quantization: str = "none",
                 representative: Optional[Callable[[], Iterable[np.ndarray]]] = None) -> str:
    """`export_saved_model`, `export_tflite` or `export_onnx`, by --export_format."""
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"--export_format={export_format}: must be one of "
                         f"{', '.join(EXPORT_FORMATS)}")
    if export_format == "saved_model":
        return export_saved_model(model, class_names, image_size, export_dir, eval_fraction, tta)
    if export_format == "onnx":
        return export_onnx(model, class_names, image_size, export_dir, eval_fraction, tta)
    return export_tflite(model, class_names, image_size, export_dir, eval_fraction, tta,
                         quantization, representative)
