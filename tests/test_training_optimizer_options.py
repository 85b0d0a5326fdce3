"""Tests for --optimizer, --clip_norm and --grad_accum_steps: each update against one worked out
by hand from the full batch's gradient, on one tower and two, with and without batch norm."""
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import inception
from conftest import cpu_devices
from multi_worker_step import halves as sharded
from training import devices
from training.optimization import build_optimizer
from training.step import StepConfig, make_train_step, tower_losses

NUM_CLASSES = 5
BATCH = 8
LR = 0.1


def build(model_name):
    # No dropout, so every run of a model computes the same function of its batch.
    keras.utils.set_random_seed(0)
    aux = {"aux_dropout_rate": 0.0} if model_name == "googlenet" else {}
    return inception.build_model(model_name, NUM_CLASSES, 32, width_multiplier=0.125,
                                 dropout_rate=0.0, **aux)


def batch():
    images = tf.random.stateless_uniform((BATCH, 32, 32, 3), (3, 4), -1, 1)
    labels = tf.constant(np.arange(BATCH) % NUM_CLASSES, tf.int32)
    return images, labels


def one_step(model_name, towers, **options):
    """The trainable weights after one plain SGD step (no momentum) of the training step."""
    strategy = devices.make_strategy(cpu_devices(towers))
    with strategy.scope():
        model = build(model_name)
        optimizer = keras.optimizers.SGD(LR)
        optimizer.build(model.trainable_variables)
    config = StepConfig(BATCH, NUM_CLASSES, weight_decay=1e-3, **options)
    step = make_train_step(model, optimizer, strategy, config)
    images, labels = batch()
    step(sharded(strategy, images), sharded(strategy, labels))
    return [v.numpy() for v in model.trainable_variables]


def gradient(model, images, labels, weight_decay=1e-3):
    """The gradient of the training loss of `images` (a share of a batch of BATCH), by a tape."""
    config = StepConfig(BATCH, NUM_CLASSES, weight_decay=weight_decay)
    with tf.GradientTape() as tape:
        total, _ = tower_losses(model, images, labels, config)
    return [g.numpy().astype(np.float64) for g in tape.gradient(total,
                                                                 model.trainable_variables)]


def assert_weights_close(actual, expected):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize("towers", [1, 2])
def test_clip_norm_clips_the_whole_batchs_gradient_whatever_the_towers(towers):
    model = build("googlenet")
    images, labels = batch()
    grads = gradient(model, images, labels)
    norm = np.sqrt(sum((g ** 2).sum() for g in grads))
    clip = norm / 4  # well below the norm: the update is a quarter of the unclipped one
    expected = [w.numpy() - LR * g * clip / norm for w, g in zip(model.trainable_variables, grads)]
    assert_weights_close(one_step("googlenet", towers, clip_norm=clip), expected)
    # Each tower's half of the gradient has another norm: clipping the parts would differ.
    half = gradient(model, images[:BATCH // 2], labels[:BATCH // 2], 5e-4)
    assert abs(np.sqrt(sum((g ** 2).sum() for g in half)) - norm) > 0.05 * norm


def test_clip_norm_above_the_norm_changes_nothing():
    assert_weights_close(one_step("googlenet", 1, clip_norm=1e6), one_step("googlenet", 1))


@pytest.mark.parametrize("towers", [1, 2])
def test_accumulated_micro_batches_give_the_whole_batchs_update(towers):
    # Without batch norm, a batch's gradient is the sum of its parts' (each a share of the mean).
    model = build("googlenet")
    images, labels = batch()
    grads = gradient(model, images, labels)
    expected = [w.numpy() - LR * g for w, g in zip(model.trainable_variables, grads)]
    assert_weights_close(one_step("googlenet", towers, grad_accum_steps=2), expected)


def test_with_batch_norm_each_micro_batch_is_normalised_by_its_own_statistics():
    model = build("minigooglenet")
    images, labels = batch()
    quarters = [gradient(model, images[i:i + 2], labels[i:i + 2], 1e-3 / 4)
                for i in range(0, BATCH, 2)]
    expected = [w.numpy() - LR * sum(parts)
                for w, *parts in zip(model.trainable_variables, *quarters)]
    assert_weights_close(one_step("minigooglenet", 1, grad_accum_steps=4), expected)
    # The whole batch normalised at once moves the weights elsewhere.
    whole = one_step("minigooglenet", 1)
    assert max(np.abs(a - b).max() for a, b in zip(whole, expected)) > 1e-4


def optimizer_settings(name, weight_decay=0.01):
    return types.SimpleNamespace(
        optimizer=name, lr=LR, lr_schedule="constant", epochs=1, warmup_epochs=0,
        lr_decay_epochs=(), lr_gamma=0.1, lr_overrides=(), momentum=0.9, nesterov=False,
        weight_decay=weight_decay)


@pytest.mark.parametrize("name, kind", [("adamw", keras.optimizers.AdamW),
                                        ("lamb", keras.optimizers.Lamb),
                                        ("sgd", keras.optimizers.SGD)])
@pytest.mark.parametrize("towers", [1, 2])
def test_adamw_and_lamb_decay_the_kernels_once_and_nothing_else(name, kind, towers):
    # Zero gradients: Adam's and LAMB's own step is then zero, and what moves is the decay,
    # a kernel by lr x decay of itself, once however many towers sum their gradients.
    strategy = devices.make_strategy(cpu_devices(towers))
    with strategy.scope():
        model = build("minigooglenet")
        optimizer, _ = build_optimizer(optimizer_settings(name), steps_per_epoch=10, model=model)
        optimizer.build(model.trainable_variables)
    assert type(optimizer) is kind
    before = {v.path: v.numpy() for v in model.trainable_variables}

    @tf.function
    def apply_zeros():
        def replica():
            optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables])
        strategy.run(replica)
    apply_zeros()
    shrink = 1.0 if name == "sgd" else 1.0 - LR * 0.01  # SGD decays through the loss instead
    for v in model.trainable_variables:
        factor = shrink if v.path.endswith("kernel") else 1.0
        np.testing.assert_allclose(v.numpy(), before[v.path] * factor, rtol=1e-6, atol=1e-8,
                                   err_msg=v.path)
