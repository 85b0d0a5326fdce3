"""Export for serving: a SavedModel taking encoded image bytes, evaluation preprocessing inside,
and the run's test-time augmentation (--tta): the served probabilities are those evaluate.py
scores."""
import os
import shutil
import tempfile
from typing import Dict, List

import keras
import tensorflow as tf

from input_pipeline.crops import tta_views
from input_pipeline.preprocessing import (
    EVAL_CROP_FRACTION,
    decode_image,
    preprocess_for_eval,
)
from training.step import softmax_of_views


class ServingModule(tf.Module):
    def __init__(self, model: keras.Model, class_names: List[str], image_size: int,
                 eval_fraction: float = EVAL_CROP_FRACTION, tta: str = "none") -> None:
        super().__init__()
        self.model = model
        self.class_names = tf.constant(list(class_names))
        self.image_size = image_size
        self.eval_fraction = eval_fraction
        self.tta = tta

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(self, image_bytes: tf.Tensor) -> Dict[str, tf.Tensor]:
        """JPEG / PNG / GIF / BMP bytes [N] -> probabilities [N, classes], top class id and name."""
        size, fraction = self.image_size, self.eval_fraction
        images = tf.map_fn(lambda b: preprocess_for_eval(decode_image(b), size, fraction),
                           image_bytes,
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        probabilities = self.probabilities(images)
        top = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"probabilities": probabilities, "class_ids": top,
                "class_names": tf.gather(self.class_names, top)}


    def probabilities(self, images: tf.Tensor) -> tf.Tensor:
        """Softmax [N, classes] of model inputs [N, S, S, 3], averaged over the test-time views
        (one view, the image itself, without --tta)."""
        views = tta_views(images, self.tta)
        return tf.reduce_mean(softmax_of_views(self.model, views), axis=1)


def export_saved_model(model: keras.Model, class_names: List[str], image_size: int,
                       export_dir: str, eval_fraction: float = EVAL_CROP_FRACTION,
                       tta: str = "none") -> str:
    """Writes the SavedModel to `export_dir` (which must not hold anything yet), atomically;
    returns its absolute path. `tta`: the test-time augmentation the served model applies."""
    export_dir = os.path.abspath(export_dir)
    if os.path.exists(export_dir) and os.listdir(export_dir):
        raise ValueError(f"--export_dir={export_dir!r} is not empty; choose a new directory")
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        module = ServingModule(model, class_names, image_size, eval_fraction, tta)
        tf.saved_model.save(module, staging, signatures={"serving_default": module.serve})
        if os.path.exists(export_dir):
            os.rmdir(export_dir)
        os.rename(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return export_dir
