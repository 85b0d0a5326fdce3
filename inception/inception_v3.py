"""Inception v3 (Szegedy et al. 2015, "Rethinking the Inception Architecture"), with its aux head.

Layer widths follow TF-slim's and Keras applications' definitions, which agree. Every conv is
followed by batch norm; the auxiliary classifier reads `mixed7` (slim's Mixed_6e).
"""
import keras

from inception.layers import ConvBlock, scale_width
from inception.model import assemble

AUX_SOURCES = {"aux": "mixed7"}
# The mixed blocks build_inception_v3 makes, in order (Keras applications' names): the trunk's
# endpoints between the stem and the classifier.
INCEPTION_V3_MODULES = tuple(f"mixed{i}" for i in range(11))


class _Builder:
    """Holds the width multiplier so each block reads like the paper's figures."""

    def __init__(self, multiplier):
        self.multiplier = multiplier
        self.count = 0

    def conv(self, x, filters, kernel, strides=1, padding="same"):
        self.count += 1
        return ConvBlock(scale_width(filters, self.multiplier), kernel, strides=strides,
                         padding=padding, batch_norm=True, name=f"conv{self.count}")(x)

    def avgpool_proj(self, x, filters):
        x = keras.layers.AveragePooling2D(3, strides=1, padding="same")(x)
        return self.conv(x, filters, 1)

    def block_35x35(self, x, pool_proj, name):
        """Figure 5: 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avgpool->1x1."""
        return keras.layers.Concatenate(name=name)([
            self.conv(x, 64, 1),
            self.conv(self.conv(x, 48, 1), 64, 5),
            self.conv(self.conv(self.conv(x, 64, 1), 96, 3), 96, 3),
            self.avgpool_proj(x, pool_proj),
        ])

    def reduce_35_to_17(self, x, name):
        return keras.layers.Concatenate(name=name)([
            self.conv(x, 384, 3, strides=2, padding="valid"),
            self.conv(self.conv(self.conv(x, 64, 1), 96, 3), 96, 3, strides=2, padding="valid"),
            keras.layers.MaxPooling2D(3, strides=2)(x),
        ])

    def block_17x17(self, x, width, name):
        """Figure 6 (n = 7): the factorised 7x7 convolutions."""
        b7 = self.conv(self.conv(self.conv(x, width, 1), width, (1, 7)), 192, (7, 1))
        b7dbl = self.conv(x, width, 1)
        for filters, kernel in ((width, (7, 1)), (width, (1, 7)), (width, (7, 1)), (192, (1, 7))):
            b7dbl = self.conv(b7dbl, filters, kernel)
        return keras.layers.Concatenate(name=name)(
            [self.conv(x, 192, 1), b7, b7dbl, self.avgpool_proj(x, 192)])

    def reduce_17_to_8(self, x, name):
        b3 = self.conv(self.conv(x, 192, 1), 320, 3, strides=2, padding="valid")
        b7x3 = self.conv(x, 192, 1)
        for kernel in ((1, 7), (7, 1)):
            b7x3 = self.conv(b7x3, 192, kernel)
        b7x3 = self.conv(b7x3, 192, 3, strides=2, padding="valid")
        return keras.layers.Concatenate(name=name)(
            [b3, b7x3, keras.layers.MaxPooling2D(3, strides=2)(x)])

    def block_8x8(self, x, name):
        """Figure 7: the expanded filter bank with split 1x3 / 3x1 outputs."""
        b3 = self.conv(x, 384, 1)
        b3 = keras.layers.Concatenate()([self.conv(b3, 384, (1, 3)), self.conv(b3, 384, (3, 1))])
        b3dbl = self.conv(self.conv(x, 448, 1), 384, 3)
        b3dbl = keras.layers.Concatenate()(
            [self.conv(b3dbl, 384, (1, 3)), self.conv(b3dbl, 384, (3, 1))])
        return keras.layers.Concatenate(name=name)(
            [self.conv(x, 320, 1), b3, b3dbl, self.avgpool_proj(x, 192)])


def aux_head(input_shape, num_classes, *, multiplier, name="aux"):
    """avgpool 5x5/3 -> conv 1x1 128 -> conv 5x5 768 valid -> linear, with the kernel shrunk to
    the map for small inputs (as slim's `_reduced_kernel_size_for_small_input` does)."""
    inputs = keras.Input(input_shape)
    if min(input_shape[:2]) >= 5:
        x = keras.layers.AveragePooling2D(5, strides=3, padding="valid")(inputs)
    else:
        x = keras.layers.GlobalAveragePooling2D(keepdims=True)(inputs)
    x = ConvBlock(scale_width(128, multiplier), 1, batch_norm=True, name="conv_1x1")(x)
    x = ConvBlock(scale_width(768, multiplier), tuple(min(5, d) for d in x.shape[1:3]),
                  padding="valid", batch_norm=True, name="conv_5x5")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)


def build_inception_v3(num_classes, image_size, *, width_multiplier=1.0, dropout_rate=0.2,
                       aux_logits=True, name="inception_v3"):
    b = _Builder(width_multiplier)
    images = keras.Input((image_size, image_size, 3), name="images")
    x = b.conv(images, 32, 3, strides=2, padding="valid")
    x = b.conv(x, 32, 3, padding="valid")
    x = b.conv(x, 64, 3)
    x = keras.layers.MaxPooling2D(3, strides=2)(x)
    x = b.conv(x, 80, 1, padding="valid")
    x = b.conv(x, 192, 3, padding="valid")
    x = keras.layers.MaxPooling2D(3, strides=2)(x)
    endpoints = {"stem": x}
    for i, pool_proj in enumerate((32, 64, 64)):
        x = endpoints[f"mixed{i}"] = b.block_35x35(x, pool_proj, name=f"mixed{i}")
    x = endpoints["mixed3"] = b.reduce_35_to_17(x, name="mixed3")
    for i, width in zip(range(4, 8), (128, 160, 160, 192)):
        x = endpoints[f"mixed{i}"] = b.block_17x17(x, width, name=f"mixed{i}")
    x = endpoints["mixed8"] = b.reduce_17_to_8(x, name="mixed8")
    for i in (9, 10):
        x = endpoints[f"mixed{i}"] = b.block_8x8(x, name=f"mixed{i}")

    def make_aux_head(input_shape, aux):
        return aux_head(input_shape, num_classes, multiplier=width_multiplier, name=aux)
    return assemble(images, x, endpoints, num_classes=num_classes, dropout_rate=dropout_rate,
                    name=name, aux_sources=AUX_SOURCES if aux_logits else None,
                    make_aux_head=make_aux_head)
