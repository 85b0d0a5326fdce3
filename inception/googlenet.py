"""GoogLeNet ("Going deeper with convolutions", Szegedy et al. 2014) and its BN and 64-px variants.

`GOOGLENET_TABLE` is the paper's Table 1, declared once; every inception module of every variant
is built from one of its rows by `InceptionModule`.
"""
import keras

from inception.layers import (
    ConvBlock,
    InceptionModule,
    InceptionWidths,
    LocalResponseNormalization,
    scale_width,
)
from inception.model import assemble

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj. None marks the paper's
# max-pool 3x3/2 between stages.
GOOGLENET_TABLE = (
    ("3a", InceptionWidths(64, 96, 128, 16, 32, 32)),
    ("3b", InceptionWidths(128, 128, 192, 32, 96, 64)),
    ("pool3", None),
    ("4a", InceptionWidths(192, 96, 208, 16, 48, 64)),
    ("4b", InceptionWidths(160, 112, 224, 24, 64, 64)),
    ("4c", InceptionWidths(128, 128, 256, 24, 64, 64)),
    ("4d", InceptionWidths(112, 144, 288, 32, 64, 64)),
    ("4e", InceptionWidths(256, 160, 320, 32, 128, 128)),
    ("pool4", None),
    ("5a", InceptionWidths(256, 160, 320, 32, 128, 128)),
    ("5b", InceptionWidths(384, 192, 384, 48, 128, 128)),
)

# The inception modules, in order: the trunk's endpoints between the stem and the classifier.
GOOGLENET_MODULES = tuple(module for module, widths in GOOGLENET_TABLE if widths is not None)

# The auxiliary classifiers sit on the outputs of 4a and 4d (Section 5 of the paper).
AUX_SOURCES = {"aux1": "4a", "aux2": "4d"}


def _stem(x, *, small_input, batch_norm, lrn, multiplier):
    """conv 7x7/2 -> maxpool 3x3/2 -> LRN -> conv 1x1 -> conv 3x3 -> LRN -> maxpool 3x3/2.

    For 64-px inputs (Tiny ImageNet) the first conv is 5x5/1 so the image is not shrunk too fast.
    """
    def conv(filters, size, strides, name):
        return ConvBlock(scale_width(filters, multiplier), size, strides=strides,
                         batch_norm=batch_norm, name=name)(x)

    x = conv(64, 5, 1, "conv1_5x5_s1") if small_input else conv(64, 7, 2, "conv1_7x7_s2")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_3x3_s2")(x)
    if lrn:
        x = LocalResponseNormalization(name="pool1_norm1")(x)
    x = conv(64, 1, 1, "conv2_3x3_reduce")
    x = conv(192, 3, 1, "conv2_3x3")
    if lrn:
        x = LocalResponseNormalization(name="conv2_norm2")(x)
    return keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool2_3x3_s2")(x)


def aux_head(input_shape, num_classes, *, batch_norm, multiplier, dropout_rate=0.7, name):
    """avgpool 5x5/3 -> conv 1x1 128 -> FC 1024 -> dropout 70% -> linear (the paper's aux head).

    At 224 px the 14x14 map pools to 4x4. Smaller inputs give smaller maps: a map narrower than the
    5x5 window is averaged whole instead, so the head works at every supported input size.
    """
    inputs = keras.Input(input_shape)
    if min(input_shape[0], input_shape[1]) >= 5:
        x = keras.layers.AveragePooling2D(5, strides=3, padding="valid",
                                          name="avgpool_5x5_s3")(inputs)
    else:
        x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="avgpool_global")(inputs)
    x = ConvBlock(scale_width(128, multiplier), 1, batch_norm=batch_norm, name="conv_1x1")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(scale_width(1024, multiplier), activation="relu", name="fc")(x)
    x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def build_googlenet(num_classes, image_size, *, small_input=False, batch_norm=False, lrn=True,
                    width_multiplier=1.0, dropout_rate=0.4, aux_dropout_rate=0.7, aux_logits=True,
                    name="googlenet"):
    images = keras.Input((image_size, image_size, 3), name="images")
    x = _stem(images, small_input=small_input, batch_norm=batch_norm, lrn=lrn,
              multiplier=width_multiplier)
    endpoints = {"stem": x}
    for module, widths in GOOGLENET_TABLE:
        if widths is None:
            x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=module + "_3x3_s2")(x)
            continue
        x = InceptionModule(widths.scaled(width_multiplier), batch_norm=batch_norm,
                            name="inception_" + module)(x)
        endpoints[module] = x

    def make_aux_head(input_shape, aux):
        return aux_head(input_shape, num_classes, batch_norm=batch_norm,
                        multiplier=width_multiplier, dropout_rate=aux_dropout_rate,
                        name=f"{aux}_{AUX_SOURCES[aux]}")
    return assemble(images, x, endpoints, num_classes=num_classes, dropout_rate=dropout_rate,
                    name=name, aux_sources=AUX_SOURCES if aux_logits else None,
                    make_aux_head=make_aux_head)
