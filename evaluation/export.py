"""Export for serving: a SavedModel taking encoded image bytes, evaluation preprocessing inside."""
import os
import shutil
import tempfile
from typing import Dict, List

import keras
import tensorflow as tf

from input_pipeline.preprocessing import (
    EVAL_CROP_FRACTION,
    decode_image,
    preprocess_for_eval,
)


class ServingModule(tf.Module):
    def __init__(self, model: keras.Model, class_names: List[str], image_size: int,
                 eval_fraction: float = EVAL_CROP_FRACTION) -> None:
        super().__init__()
        self.model = model
        self.class_names = tf.constant(list(class_names))
        self.image_size = image_size
        self.eval_fraction = eval_fraction

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(self, image_bytes: tf.Tensor) -> Dict[str, tf.Tensor]:
        """JPEG / PNG / GIF / BMP bytes [N] -> probabilities [N, classes], top class id and name."""
        size, fraction = self.image_size, self.eval_fraction
        images = tf.map_fn(lambda b: preprocess_for_eval(decode_image(b), size, fraction),
                           image_bytes,
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        probabilities = tf.nn.softmax(self.model(images, training=False)["logits"])
        top = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"probabilities": probabilities, "class_ids": top,
                "class_names": tf.gather(self.class_names, top)}


def export_saved_model(model: keras.Model, class_names: List[str], image_size: int,
                       export_dir: str, eval_fraction: float = EVAL_CROP_FRACTION) -> str:
    """Writes the SavedModel to `export_dir` (which must not hold anything yet), atomically;
    returns its absolute path."""
    export_dir = os.path.abspath(export_dir)
    if os.path.exists(export_dir) and os.listdir(export_dir):
        raise ValueError(f"--export_dir={export_dir!r} is not empty; choose a new directory")
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        module = ServingModule(model, class_names, image_size, eval_fraction)
        tf.saved_model.save(module, staging, signatures={"serving_default": module.serve})
        if os.path.exists(export_dir):
            os.rmdir(export_dir)
        os.rename(staging, export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return export_dir
