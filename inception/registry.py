"""The model registry: one entry per network of the family, and `build_model` to make one."""
import dataclasses
import functools
from typing import Any, Callable, List, Optional

from inception.googlenet import GOOGLENET_MODULES, build_googlenet
from inception.inception_v3 import INCEPTION_V3_MODULES, build_inception_v3
from inception.minigooglenet import MINIGOOGLENET_MODULES, build_minigooglenet
from inception.model import InceptionModel


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    builder: Callable
    default_image_size: int
    # Smallest input the network is meant for: its total stride for the 'same'-padded GoogLeNets
    # (a smaller image would only be padding by the last stage), the smallest size whose
    # valid-padded downsampling still leaves a feature map for the others.
    min_image_size: int
    aux_names: tuple
    description: str
    # The trunk's modules in order, each an endpoint of the trunk (after 'stem', before 'pool'):
    # what --trainable=from:<module> names.
    modules: tuple


MODELS = {
    "googlenet": ModelSpec(
        functools.partial(build_googlenet, name="googlenet"), 224, 32, ("aux1", "aux2"),
        "the paper's network: LRN in the stem, 40% dropout, aux heads after 4a and 4d",
        GOOGLENET_MODULES),
    "googlenet_bn": ModelSpec(
        functools.partial(build_googlenet, batch_norm=True, lrn=False, name="googlenet_bn"),
        224, 32, ("aux1", "aux2"), "the same widths with batch norm after every conv, no LRN",
        GOOGLENET_MODULES),
    "googlenet_64": ModelSpec(
        # Batch norm as in the Tiny ImageNet recipe docs/reference.md cites (DeeperGoogLeNet).
        functools.partial(build_googlenet, small_input=True, batch_norm=True, lrn=False,
                          name="googlenet_64"),
        64, 16, ("aux1", "aux2"), "for 64x64 inputs: a 5x5/1 first conv, batch norm",
        GOOGLENET_MODULES),
    "minigooglenet": ModelSpec(
        functools.partial(build_minigooglenet, name="minigooglenet"), 32, 8, (),
        "the small CIFAR-10 inception network (Zhang et al. 2017)", MINIGOOGLENET_MODULES),
    "inception_v3": ModelSpec(
        functools.partial(build_inception_v3, name="inception_v3"), 299, 75, ("aux",),
        "Inception v3 with its aux head after mixed7", INCEPTION_V3_MODULES),
}


def model_names() -> List[str]:
    return sorted(MODELS)


def get_model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; valid names: {', '.join(model_names())}")
    return MODELS[name]


def default_image_size(name: str) -> int:
    return get_model_spec(name).default_image_size


def min_image_size(name: str) -> int:
    return get_model_spec(name).min_image_size


def module_names(name: str) -> tuple:
    """The modules of model `name`'s trunk, in order (e.g. '3a'..'5b' for GoogLeNet)."""
    return get_model_spec(name).modules


def build_model(name: str, num_classes: int, image_size: Optional[int] = None,
                **options: Any) -> InceptionModel:
    """Builds model `name` for `num_classes` classes and square `image_size` inputs.

    Inputs are float32 NHWC images scaled to [-1, 1]. `model(x, training=True)` returns
    {'logits', aux...}; `model(x, training=False)` returns {'logits'}. Options: `width_multiplier`,
    `dropout_rate`, and `aux_logits` (plus `aux_dropout_rate` for GoogLeNet) for the models
    that have auxiliary heads.
    """
    spec = get_model_spec(name)
    image_size = spec.default_image_size if image_size is None else image_size
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(image_size, int) or image_size < spec.min_image_size:
        raise ValueError(f"Model {name!r} needs image_size >= {spec.min_image_size} "
                         f"(default {spec.default_image_size}), got {image_size!r}")
    if "aux_logits" in options and not spec.aux_names:
        raise ValueError(f"Model {name!r} has no auxiliary classifiers; drop the aux_logits option")
    if options.get("width_multiplier", 1.0) <= 0:
        raise ValueError(f"width_multiplier must be > 0, got {options['width_multiplier']!r}")
    return spec.builder(num_classes, image_size, **options)
