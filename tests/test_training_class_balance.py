"""Tests for training/class_balance.py: balanced class weights and the imbalance warning."""
import numpy as np
import pytest

from training.class_balance import balanced_class_weights, class_counts, imbalance_warning


def test_balanced_weights_match_a_hand_computed_example():
    # 8, 2 and 0 images: n = 10, k = 2 classes present; 10 / (2 x 8), 10 / (2 x 2), absent -> 0.
    counts = class_counts(np.array([0] * 8 + [1] * 2), num_classes=3)
    assert counts.tolist() == [8, 2, 0]
    weights = balanced_class_weights(counts)
    assert weights == pytest.approx((0.625, 2.5, 0.0))
    # The mean weight per training image is 1: (8 x 0.625 + 2 x 2.5) / 10.
    assert np.dot(counts, weights) / counts.sum() == pytest.approx(1.0)


def test_equal_classes_weigh_one_each():
    assert balanced_class_weights([5, 5, 5]) == pytest.approx((1.0, 1.0, 1.0))


def test_the_warning_names_the_largest_and_smallest_classes_beyond_five_to_one():
    assert imbalance_warning([50, 10], ["cat", "dog"]) is None  # exactly 5x: no warning
    warning = imbalance_warning([60, 10, 0], ["cat", "dog", "eel"])
    assert warning.startswith("Warning: the classes are imbalanced: 'cat' has 60 training "
                              "images, 6.0x the 10 of 'dog'.")
