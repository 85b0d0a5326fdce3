"""inception.layers.FusedBatchNormalization (TensorFlow's fused kernel) against the batch-norm
formula computed by hand in NumPy and against Keras' own BatchNormalization: the same outputs,
gradients and moving statistics, in training and inference, in float32 and bfloat16."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from inception.layers import ConvBlock, FusedBatchNormalization

EPSILON, MOMENTUM = 1e-3, 0.9


def _pair(channels, shape=(None, 4, 4), **options):
    """A fused layer and Keras' own, built alike for batches of `shape` + (channels,), with the
    same non-trivial weights."""
    layers = [cls(epsilon=EPSILON, momentum=MOMENTUM, **options)
              for cls in (FusedBatchNormalization, keras.layers.BatchNormalization)]
    rng = np.random.default_rng(0)
    weights = None
    for layer in layers:
        layer.build((*shape, channels))
        weights = weights or [rng.uniform(0.5, 2.0, w.shape).astype(np.float32)
                              for w in layer.get_weights()]
        layer.set_weights(weights)
    return layers


def test_training_output_and_moving_statistics_follow_the_formula():
    x = np.random.default_rng(1).normal(3.0, 2.0, (5, 3, 2, 4)).astype(np.float32)
    fused = FusedBatchNormalization(epsilon=EPSILON, momentum=MOMENTUM)
    fused.build(x.shape)
    gamma = np.array([1.0, 2.0, 0.5, 3.0], np.float32)
    beta = np.array([0.0, -1.0, 1.0, 2.0], np.float32)
    fused.gamma.assign(gamma)
    fused.beta.assign(beta)
    y = fused(x, training=True).numpy()
    # By hand: each channel over batch, height and width, with the biased variance.
    mean, variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(y, gamma * (x - mean) / np.sqrt(variance + EPSILON) + beta,
                               rtol=1e-4, atol=1e-4)
    # Moving statistics start at 0 and 1.
    np.testing.assert_allclose(fused.moving_mean.numpy(), (1 - MOMENTUM) * mean, rtol=1e-5)
    np.testing.assert_allclose(fused.moving_variance.numpy(),
                               MOMENTUM + (1 - MOMENTUM) * variance, rtol=1e-5)
    # Inference normalises with the moving statistics and leaves them alone.
    moving = fused.moving_mean.numpy(), fused.moving_variance.numpy()
    y = fused(x, training=False).numpy()
    np.testing.assert_allclose(
        y, gamma * (x - moving[0]) / np.sqrt(moving[1] + EPSILON) + beta, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(fused.moving_mean.numpy(), moving[0])


@pytest.mark.parametrize("dtype,tolerance", [("float32", 1e-4), ("bfloat16", 3e-2)])
@pytest.mark.parametrize("training", [True, False])
def test_matches_keras_batch_norm(dtype, tolerance, training):
    fused, reference = _pair(6, dtype=keras.DTypePolicy(f"mixed_{dtype}")
                             if dtype == "bfloat16" else "float32")
    x = tf.constant(np.random.default_rng(2).normal(1.0, 3.0, (8, 5, 5, 6)), tf.float32)
    results = []
    for layer in (fused, reference):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=training)
            # A loss that weighs each output differently, so the input gradient is not zero.
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.range(6, dtype=tf.float32) * x)
        grads = tape.gradient(loss, [x] + layer.trainable_weights)
        results.append((y, grads, [v.numpy() for v in (layer.moving_mean,
                                                        layer.moving_variance)]))
    (y, grads, moving), (y_ref, grads_ref, moving_ref) = results
    assert y.dtype == y_ref.dtype
    np.testing.assert_allclose(tf.cast(y, tf.float32), tf.cast(y_ref, tf.float32),
                               rtol=tolerance, atol=tolerance)
    for g, g_ref in zip(grads, grads_ref):
        scale = np.abs(g_ref.numpy()).max()
        np.testing.assert_allclose(g / scale, g_ref / scale, atol=tolerance)
    np.testing.assert_allclose(moving, moving_ref, rtol=1e-3)


def test_a_frozen_layer_normalises_with_its_moving_statistics():
    fused, reference = _pair(3)
    for layer in (fused, reference):
        layer.trainable = False
    x = np.random.default_rng(3).normal(size=(4, 2, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused.moving_mean.numpy(), reference.moving_mean.numpy())


def test_other_shapes_go_to_keras():
    """A 2-D batch has no fused kernel: the Keras path gives the same numbers."""
    fused, reference = _pair(3, shape=(None,))
    x = np.random.default_rng(4).normal(size=(6, 3)).astype(np.float32)
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True),
                               rtol=1e-5, atol=1e-5)


def test_conv_blocks_use_it_and_keep_the_variable_names():
    """The checkpoint names a Keras batch norm would have: older checkpoints still load."""
    block = ConvBlock(4, 3, batch_norm=True, name="b")
    block(tf.zeros([1, 8, 8, 3]))
    assert isinstance(block.bn, FusedBatchNormalization)
    assert isinstance(block.bn, keras.layers.BatchNormalization)
    assert sorted(v.path for v in block.bn.weights) == [
        "b/bn/beta", "b/bn/gamma", "b/bn/moving_mean", "b/bn/moving_variance"]


@pytest.mark.parametrize("written_with, read_with", [
    (keras.layers.BatchNormalization, FusedBatchNormalization),
    (FusedBatchNormalization, keras.layers.BatchNormalization)])
def test_checkpoints_of_either_layer_restore_into_the_other(tmp_path, written_with, read_with):
    """Checkpoints written before the models' batch norm was fused load unchanged, and the
    models' checkpoints load into Keras' own layer."""
    def model(norm):
        return keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 3),
                                 norm(epsilon=EPSILON, momentum=MOMENTUM)])
    old, new = model(written_with), model(read_with)
    x = np.random.default_rng(5).normal(size=(3, 4, 4, 3)).astype(np.float32)
    old(x, training=True)  # moving statistics away from their initial values
    path = tf.train.Checkpoint(model=old).save(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=new).restore(path).assert_existing_objects_matched()
    for a, b in zip(old.weights, new.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(new(x, training=False), old(x, training=False), rtol=1e-5,
                               atol=1e-5)
