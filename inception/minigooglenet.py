"""MiniGoogLeNet, the small CIFAR-10 inception network of Zhang et al. 2017 ("Understanding deep
learning requires rethinking generalization"), as docs/reference.md describes it.

conv module = conv -> BN -> ReLU; inception module = concat(conv 1x1 K1, conv 3x3 K3);
downsample module = concat(conv 3x3/2 valid K, maxpool 3x3/2 valid).
"""
import keras

from inception.layers import ConvBlock, scale_width
from inception.model import assemble

# (endpoint name, module kind, widths): ("inception", K1, K3) or ("downsample", K).
MINIGOOGLENET_TABLE = (
    ("1a", "inception", (32, 32)),
    ("1b", "inception", (32, 48)),
    ("down1", "downsample", (80,)),
    ("2a", "inception", (112, 48)),
    ("2b", "inception", (96, 64)),
    ("2c", "inception", (80, 80)),
    ("2d", "inception", (48, 96)),
    ("down2", "downsample", (96,)),
    ("3a", "inception", (176, 160)),
    ("3b", "inception", (176, 160)),
)
# The modules, in order: the trunk's endpoints between the stem and the classifier.
MINIGOOGLENET_MODULES = tuple(module for module, _, _ in MINIGOOGLENET_TABLE)


def _inception(x, k1, k3, name):
    return keras.layers.Concatenate(name=name)([
        ConvBlock(k1, 1, batch_norm=True, name=name + "_branch1x1")(x),
        ConvBlock(k3, 3, batch_norm=True, name=name + "_branch3x3")(x),
    ])


def _downsample(x, k, name):
    return keras.layers.Concatenate(name=name)([
        ConvBlock(k, 3, strides=2, padding="valid", batch_norm=True, name=name + "_branch3x3")(x),
        keras.layers.MaxPooling2D(3, strides=2, padding="valid", name=name + "_branch_pool")(x),
    ])


def build_minigooglenet(num_classes, image_size, *, width_multiplier=1.0, dropout_rate=0.5,
                        name="minigooglenet"):
    images = keras.Input((image_size, image_size, 3), name="images")
    x = ConvBlock(scale_width(96, width_multiplier), 3, batch_norm=True, name="conv1")(images)
    endpoints = {"stem": x}
    for module, kind, widths in MINIGOOGLENET_TABLE:
        widths = [scale_width(w, width_multiplier) for w in widths]
        x = (_inception if kind == "inception" else _downsample)(x, *widths, name=module)
        endpoints[module] = x
    # The paper's 7x7 average pool is the global pool at 32 px; global keeps other sizes working.
    return assemble(images, x, endpoints, num_classes=num_classes, dropout_rate=dropout_rate,
                    name=name)
