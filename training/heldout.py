"""Held-out scores of a model on a pipeline across towers: probabilities, then top-k accuracy,
balanced accuracy and loss. The training loop reports them each epoch; evaluate.py
(evaluation/) builds its report on them."""
from typing import Callable, Iterator, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from input_pipeline import InputPipeline
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
    return collect(batches, eval_step or make_eval_step(model, strategy), progress)


def collect(batches: Iterator, eval_step: Callable,
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


def scores_of_views(probs: np.ndarray, labels: np.ndarray) -> dict:
    """`scores` of probabilities [N, classes], or of [N, V, classes] from a step with test-time
    augmentation (make_eval_step's `tta`): then the scores of the first view (the image as it
    is), with those of the views' mean softmax under "tta"."""
    if probs.ndim == 2:
        return scores(probs, labels)
    return {**scores(probs[:, 0], labels), "tta": scores(probs.mean(axis=1), labels)}


def evaluate(model: keras.Model, strategy: tf.distribute.Strategy, pipeline: InputPipeline,
             per_tower_batch: int, eval_step: Callable, average: Optional[object] = None
             ) -> dict:
    """`scores` of `model` on `pipeline`, with those of the averaged weights (--ema_decay's
    `average`, a training.averaging.WeightAverage) under "ema": they are swapped into the model
    for the scoring and back out after it. An `eval_step` with test-time augmentation adds
    each one's scores with it under "tta" (`scores_of_views`)."""
    def score() -> dict:
        return scores_of_views(*predict(model, strategy, pipeline, per_tower_batch, eval_step))
    result = score()
    if average is not None:
        with average.swapped_in():
            result["ema"] = score()
    return result
