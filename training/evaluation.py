"""Evaluating a model on a pipeline across towers: probabilities, then top-k accuracy and loss."""
from typing import Callable, Iterator, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from input_pipeline import Examples, InputPipeline
from input_pipeline.crops import multi_crop_dataset
from input_pipeline.preprocessing import EVAL_CROP_FRACTION
from training import devices
from training.step import make_eval_step


def predict(model: keras.Model, strategy: tf.distribute.Strategy, pipeline: InputPipeline,
            per_tower_batch: int, eval_step: Optional[Callable] = None,
            progress: Optional[Callable[[int], None]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities [N, classes] and labels [N] over one pass of `pipeline`.

    `eval_step` is make_eval_step's (made here when not given); `progress` is called with the
    number of images of each batch."""
    batches = devices.distributed_iterator(
        strategy, lambda ctx: pipeline.dataset(per_tower_batch, drop_remainder=False))
    return _collect(batches, eval_step or make_eval_step(model, strategy), progress)


def _collect(batches: Iterator, eval_step: Callable,
             progress: Optional[Callable[[int], None]]):
    """Runs `eval_step` over distributed batches; every tower's probabilities and labels."""
    probs, labels = [], []
    for images, batch_labels in batches:
        tower_probs, tower_labels = eval_step(images, batch_labels)
        probs += [p.numpy() for p in tower_probs]
        labels += [y.numpy() for y in tower_labels]
        if progress is not None:
            progress(sum(len(y) for y in tower_labels))
    return np.concatenate(probs), np.concatenate(labels)


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """The share of `labels` among the `k` most probable classes of their row of `probs`."""
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def balanced_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """The mean over the classes present in `labels` of each one's recall (its share of images
    predicted as itself): top-1 with every class weighing the same, whatever its size."""
    predictions = probs.argmax(1)
    classes = np.unique(labels)
    return float(np.mean([np.mean(predictions[labels == c] == c) for c in classes]))


def scores(probs: np.ndarray, labels: np.ndarray) -> dict:
    """top1, top5, balanced accuracy and mean cross-entropy loss of `probs` against `labels`."""
    true_class = probs[np.arange(len(labels)), labels]
    return dict(top1=top_k_accuracy(probs, labels, 1), top5=top_k_accuracy(probs, labels, 5),
                balanced=balanced_accuracy(probs, labels),
                loss=float(np.mean(-np.log(np.maximum(true_class, 1e-12)))), count=len(labels))


def predict_crops(model: keras.Model, strategy: tf.distribute.Strategy, examples: Examples,
                  image_size: int, crops: int, per_tower_batch: int,
                  progress: Optional[Callable[[int], None]] = None,
                  mirror: bool = True, eval_fraction: float = EVAL_CROP_FRACTION
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """Softmax averaged over `crops` crops per image: probabilities [N, classes], labels [N]."""
    batches = devices.distributed_iterator(
        strategy, lambda ctx: multi_crop_dataset(examples, image_size, crops, per_tower_batch,
                                                 mirror, eval_fraction))
    return _collect(batches, make_eval_step(model, strategy), progress)


def full_report(probs: np.ndarray, labels: np.ndarray, class_names: List[str]) -> dict:
    """scores() plus scikit-learn's per-class precision / recall / F1 and the confusion matrix."""
    from sklearn.metrics import classification_report, confusion_matrix
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
