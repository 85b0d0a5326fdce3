"""The allowed values of every setting that names a choice, declared once: the settings check
them at the boundary (settings/checks.py), the flags list them, and the code after the boundary
trusts them."""

from input_pipeline.crops import TTA_POLICIES
from input_pipeline.policies import POLICIES

STRATEGIES = ("auto", "mirrored", "multi_worker")
MIXED_PRECISION_DTYPES = ("auto", "bfloat16", "float16")
AUGMENT_ON = ("auto", "host", "device")
# --augment_policy: each training image's RandAugment or AugMix (input_pipeline/policies.py).
AUGMENT_POLICIES = POLICIES
OPTIMIZERS = ("sgd", "adamw", "lamb")
SCHEDULES = ("exponential_step", "polynomial", "cosine", "constant", "plateau")
CLASS_WEIGHTS = ("none", "balanced")
# What evaluate.py / predict.py can score: the averaged weights or the trained ones.
WEIGHT_CHOICES = ("ema", "raw")
# Test-time augmentation of the held-out scoring, evaluate.py and the export.
TTA = TTA_POLICIES
# What evaluate.py --export_dir writes: a SavedModel (image bytes in, the evaluation preprocessing
# and --tta inside), a TFLite or an ONNX model (preprocessed pixels in; ONNX needs the optional
# tf2onnx), and how the TFLite one is stored.
EXPORT_FORMATS = ("saved_model", "tflite", "onnx")
TFLITE_QUANTIZATIONS = ("none", "float16", "int8")

# --init_from's value for Keras' ImageNet weights, and the one model of the family they fit.
KERAS_IMAGENET = "keras"
KERAS_MODEL = "inception_v3"


def is_keras_weights(source: str) -> bool:
    """Whether --init_from=`source` names Keras InceptionV3 weights: `keras` (Keras downloads its
    ImageNet weights) or a Keras weights file (`.h5`, `.weights.h5`)."""
    return source == KERAS_IMAGENET or source.endswith(".h5")
