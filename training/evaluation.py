"""Evaluating a model on a pipeline across towers: probabilities, then top-k accuracy and loss."""
import numpy as np

from training.step import make_eval_step


def predict(model, strategy, pipeline, per_tower_batch, eval_step=None, progress=None):
    """Softmax probabilities [N, classes] and labels [N] over one pass of `pipeline`."""
    eval_step = eval_step or make_eval_step(model, strategy)
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.dataset(per_tower_batch, drop_remainder=False))
    probs, labels = [], []
    for images, batch_labels in dataset:
        tower_probs, tower_labels = eval_step(images, batch_labels)
        probs += [p.numpy() for p in tower_probs]
        labels += [y.numpy() for y in tower_labels]
        if progress is not None:
            progress(sum(len(y) for y in tower_labels))
    return np.concatenate(probs), np.concatenate(labels)


def top_k_accuracy(probs, labels, k):
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def scores(probs, labels):
    """top1, top5 and mean cross-entropy loss of `probs` against `labels`."""
    true_class = probs[np.arange(len(labels)), labels]
    return dict(top1=top_k_accuracy(probs, labels, 1), top5=top_k_accuracy(probs, labels, 5),
                loss=float(np.mean(-np.log(np.maximum(true_class, 1e-12)))), count=len(labels))
