"""The allowed values of every setting that names a choice, declared once: the settings check
them at the boundary (settings/checks.py), the flags list them, and the code after the boundary
trusts them."""

from input_pipeline.crops import TTA_POLICIES

STRATEGIES = ("auto", "mirrored", "multi_worker")
MIXED_PRECISION_DTYPES = ("auto", "bfloat16", "float16")
AUGMENT_ON = ("auto", "host", "device")
SCHEDULES = ("exponential_step", "polynomial", "cosine", "constant")
CLASS_WEIGHTS = ("none", "balanced")
# What evaluate.py / predict.py can score: the averaged weights or the trained ones.
WEIGHT_CHOICES = ("ema", "raw")
# Test-time augmentation of the held-out scoring, evaluate.py and the export.
TTA = TTA_POLICIES

# --init_from's value for Keras' ImageNet weights, and the one model of the family they fit.
KERAS_IMAGENET = "keras"
KERAS_MODEL = "inception_v3"


def is_keras_weights(source: str) -> bool:
    """Whether --init_from=`source` names Keras InceptionV3 weights: `keras` (Keras downloads its
    ImageNet weights) or a Keras weights file (`.h5`, `.weights.h5`)."""
    return source == KERAS_IMAGENET or source.endswith(".h5")
