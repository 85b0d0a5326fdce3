"""Building blocks shared by the model family: a conv block and GoogLeNet's inception module.

Every inception module of every GoogLeNet variant is built by `InceptionModule` from one row of the
paper's Table 1 (`InceptionWidths`), so no module is hand-copied and no branch can drift.
"""
from typing import NamedTuple

import keras
import tensorflow as tf


class InceptionWidths(NamedTuple):
    """One row of Table 1: the output channels of each branch of an inception module."""
    branch1x1: int
    branch3x3_reduce: int
    branch3x3: int
    branch5x5_reduce: int
    branch5x5: int
    branch_pool_proj: int

    @property
    def out_channels(self):
        return self.branch1x1 + self.branch3x3 + self.branch5x5 + self.branch_pool_proj

    def scaled(self, multiplier):
        return InceptionWidths(*(scale_width(w, multiplier) for w in self))


def scale_width(width, multiplier):
    """Channels after a width multiplier; at least one so the graph stays structurally complete."""
    return max(1, int(round(width * multiplier)))


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization, computed by TensorFlow's fused batch-norm kernel.

    Keras 3 computes batch norm from separate passes over the activations in float32 (the
    moments, then the scale and shift); tf.keras 2 called TensorFlow's fused kernel, which
    Keras 3 no longer does. The passes took a quarter of the cifar10 step's op time in bfloat16
    (docs/benchmarks.md, "How close to the machine"). Same variables, same normalisation and the
    same moving-average rule (the batch's biased variance, as Keras keeps it), so the two layers
    and their checkpoints are interchangeable. What the kernel does not take (another axis than
    the last of an NHWC batch, a mask, renorm, another backend) goes to Keras' own.
    """

    def call(self, inputs, training=None, mask=None):
        fused = (keras.backend.backend() == "tensorflow" and mask is None and not self.renorm
                 and len(inputs.shape) == 4 and self.axis in (-1, 3))
        if not fused:
            return super().call(inputs, training=training, mask=mask)
        training = bool(training) and self.trainable
        channels = inputs.shape[-1]
        scale = self.gamma if self.scale else tf.ones([channels])
        offset = self.beta if self.center else tf.zeros([channels])
        empty = tf.constant([], tf.float32)  # the kernel's running statistics, not used here
        y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=tf.cast(inputs, self.compute_dtype), scale=tf.cast(scale, tf.float32),
            offset=tf.cast(offset, tf.float32),
            mean=empty if training else tf.cast(self.moving_mean, tf.float32),
            variance=empty if training else tf.cast(self.moving_variance, tf.float32),
            epsilon=self.epsilon, data_format="NHWC", is_training=training)
        if training:
            # The kernel gives the unbiased variance for the moving average; Keras keeps the
            # biased one (the one it normalises with), and so does this layer.
            n = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32)
            variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moving.assign(moving * self.momentum
                              + tf.cast(batch, moving.dtype) * (1.0 - self.momentum))
        return y


class ConvBlock(keras.layers.Layer):
    """conv -> ReLU (the paper), or conv without bias -> batch norm -> ReLU (the BN variants)."""

    def __init__(self, filters, kernel_size, strides=1, padding="same", batch_norm=False,
                 activation=True, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(
            filters, kernel_size, strides=strides, padding=padding, use_bias=not batch_norm,
            kernel_initializer="he_normal" if activation else "glorot_uniform", name="conv")
        # Moving-average momentum 0.9 (MindSpore, PyTorch): the statistics settle within an epoch
        # even on small datasets, so held-out scores are meaningful from the first epochs.
        self.bn = (FusedBatchNormalization(epsilon=1e-3, momentum=0.9, name="bn")
                   if batch_norm else None)
        self.activation = activation

    def call(self, x, training=False):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x, training=training)
        return keras.ops.relu(x) if self.activation else x

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)


class LocalResponseNormalization(keras.layers.Layer):
    """LRN as in the paper's stem (Caffe's bvlc_googlenet: size 5, alpha 1e-4, beta 0.75).

    Caffe divides alpha by the window size; TensorFlow does not, hence alpha / size here.
    Computed in float32 because the TF kernel has no half-precision CPU implementation.
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, bias=1.0, **kwargs):
        super().__init__(**kwargs)
        self.size, self.alpha, self.beta, self.bias = size, alpha, beta, bias

    def call(self, x):
        y = tf.nn.local_response_normalization(
            tf.cast(x, tf.float32), depth_radius=self.size // 2, bias=self.bias,
            alpha=self.alpha / self.size, beta=self.beta)
        return tf.cast(y, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


class InceptionModule(keras.layers.Layer):
    """The inception module of Figure 2(b): 1x1, 1x1->3x3, 1x1->5x5 and maxpool->1x1,
    concatenated."""

    def __init__(self, widths: InceptionWidths, batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.widths = InceptionWidths(*widths)

        def conv(filters, size, name):
            return ConvBlock(filters, size, batch_norm=batch_norm, name=name)

        self.branch1x1 = conv(self.widths.branch1x1, 1, "branch1x1")
        self.branch3x3_reduce = conv(self.widths.branch3x3_reduce, 1, "branch3x3_reduce")
        self.branch3x3 = conv(self.widths.branch3x3, 3, "branch3x3")
        self.branch5x5_reduce = conv(self.widths.branch5x5_reduce, 1, "branch5x5_reduce")
        # A real 5x5, as in the paper (TF-slim and torchvision use 3x3 here by mistake).
        self.branch5x5 = conv(self.widths.branch5x5, 5, "branch5x5")
        self.branch_pool = keras.layers.MaxPooling2D(3, strides=1, padding="same",
                                                     name="branch_pool")
        self.branch_pool_proj = conv(self.widths.branch_pool_proj, 1, "branch_pool_proj")

    def call(self, x, training=False):
        return keras.ops.concatenate([
            self.branch1x1(x, training=training),
            self.branch3x3(self.branch3x3_reduce(x, training=training), training=training),
            self.branch5x5(self.branch5x5_reduce(x, training=training), training=training),
            self.branch_pool_proj(self.branch_pool(x), training=training),
        ], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.widths.out_channels)


def classifier(x, num_classes, dropout_rate, endpoints):
    """global average pool -> dropout -> linear, the head every model of the family ends with.

    Adds 'pool' and 'logits' to `endpoints`; the logits are float32 even under mixed precision.
    """
    x = endpoints["pool"] = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
    endpoints["logits"] = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return endpoints["logits"]
