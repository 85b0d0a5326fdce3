"""Imbalanced classes: the balanced loss weights (--class_weight=balanced) and the start line's
warning when the classes differ a lot in size.

Balanced weights are scikit-learn's: n / (k x count_c) for each of the k classes present, so
every class carries the same total weight and the mean weight per training image is 1 (the loss,
and so the learning rate, keeps its scale). A class absent from the training split gets 0.
"""
from typing import List, Optional, Tuple

import numpy as np

# A largest class more than this many times the smallest gets a warning on the start line.
IMBALANCE_RATIO = 5


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, np.int64), minlength=num_classes)


def balanced_class_weights(counts: np.ndarray) -> Tuple[float, ...]:
    """One loss weight per class, inverse to its count, with a mean of 1 per image."""
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return tuple(float(w) for w in weights)


def imbalance_warning(counts: np.ndarray, class_names: List[str]) -> Optional[str]:
    """A warning when the largest class is more than IMBALANCE_RATIO x the smallest present."""
    counts = np.asarray(counts)
    present = np.flatnonzero(counts)
    if present.size < 2:
        return None
    big, small = present[np.argmax(counts[present])], present[np.argmin(counts[present])]
    ratio = counts[big] / counts[small]
    if ratio <= IMBALANCE_RATIO:
        return None
    return (f"Warning: the classes are imbalanced: {class_names[big]!r} has {counts[big]} "
            f"training images, {ratio:.1f}x the {counts[small]} of {class_names[small]!r}. "
            f"--class_weight=balanced or --sampling=balanced weighs every class alike; "
            f"evaluate.py's balanced accuracy shows the effect")
