"""Scoring for evaluate.py beyond the held-out scores training reports (training/heldout.py):
several crops per image, the per-class report and the confusion matrix's picture."""
from typing import Callable, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from input_pipeline import Examples
from input_pipeline.crops import multi_crop_dataset
from input_pipeline.image_header import MAX_IMAGE_PIXELS
from input_pipeline.preprocessing import EVAL_CROP_FRACTION
from training import devices
from training.heldout import collect, scores
from training.step import make_eval_step


def predict_crops(model: keras.Model, strategy: tf.distribute.Strategy, examples: Examples,
                  image_size: int, crops: int, per_tower_batch: int,
                  progress: Optional[Callable[[int], None]] = None,
                  mirror: bool = True, eval_fraction: float = EVAL_CROP_FRACTION,
                  tta: str = "none", max_image_pixels: int = MAX_IMAGE_PIXELS
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """Softmax averaged over `crops` crops per image: probabilities [N, classes], labels [N];
    with test-time augmentation (`tta`, one crop), [N, views, classes] (make_eval_step). Files
    declaring more than `max_image_pixels` are left out undecoded."""
    batches = devices.distributed_iterator(
        strategy, lambda ctx: multi_crop_dataset(examples, image_size, crops, per_tower_batch,
                                                 mirror, eval_fraction, max_image_pixels))
    return collect(batches, make_eval_step(model, strategy, tta), progress)


def full_report(probs: np.ndarray, labels: np.ndarray, class_names: List[str]) -> dict:
    """scores() plus scikit-learn's per-class precision / recall / F1 and the confusion matrix.
    Probabilities per test-time view [N, views, classes] are reported as their mean, with the
    first view's (the image as it is) `scores` under "without_tta"."""
    from sklearn.metrics import classification_report, confusion_matrix
    if probs.ndim == 3:
        return {**full_report(probs.mean(axis=1), labels, class_names),
                "without_tta": scores(probs[:, 0], labels)}
    predictions = probs.argmax(1)
    everyone = list(range(len(class_names)))
    report = dict(scores(probs, labels))
    report["per_class"] = classification_report(labels, predictions, labels=everyone,
                                                target_names=class_names, output_dict=True,
                                                zero_division=0)
    report["per_class_text"] = classification_report(labels, predictions, labels=everyone,
                                                     target_names=class_names, digits=4,
                                                     zero_division=0)
    report["confusion_matrix"] = confusion_matrix(labels, predictions, labels=everyone)
    return report


def confusion_image(matrix: np.ndarray, cell: int = 8) -> np.ndarray:
    """The confusion matrix as a [1, H, W, 3] float image (row-normalised, darker = more)."""
    rows = matrix.sum(1, keepdims=True)
    share = matrix / np.maximum(rows, 1)
    scale = max(1, min(cell, 512 // max(1, len(matrix))))
    grid = np.kron(share, np.ones((scale, scale)))
    return np.repeat((1.0 - grid)[None, :, :, None], 3, axis=-1).astype(np.float32)
