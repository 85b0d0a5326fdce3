"""Tests for training/step.py: the loss is what the paper says, and towers average exactly once."""
import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

import inception
from conftest import cpu_devices
from multi_worker_step import halves as sharded
from training import devices
from training.step import (
    StepConfig,
    decayed_weights,
    make_eval_step,
    make_train_step,
    moving_statistics,
    replica_step,
    tower_losses,
)

NUM_CLASSES = 5


def build(seed=0):
    # No batch norm and no dropout, so 1 and 2 towers compute exactly the same function.
    keras.utils.set_random_seed(seed)
    return inception.build_model("googlenet", NUM_CLASSES, 32, width_multiplier=0.125,
                                 dropout_rate=0.0, aux_dropout_rate=0.0)


def batch(n=8):
    images = tf.random.stateless_uniform((n, 32, 32, 3), (1, 2), -1, 1)
    labels = tf.constant(np.arange(n) % NUM_CLASSES, tf.int32)
    return images, labels


def numpy_cross_entropy(logits, labels, smoothing):
    logits = logits - logits.max(-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = np.eye(NUM_CLASSES)[labels] * (1 - smoothing) + smoothing / NUM_CLASSES
    return -(targets * log_probs).sum(-1)


def test_loss_is_main_plus_weighted_aux_plus_weight_decay():
    model = build()
    images, labels = batch()
    config = StepConfig(global_batch_size=8, num_classes=NUM_CLASSES, aux_weight=0.3,
                        label_smoothing=0.1, weight_decay=1e-3)
    total, metrics = tower_losses(model, images, labels, config)
    outputs = {k: v.numpy() for k, v in model(images, training=True).items()}
    ce = {k: numpy_cross_entropy(v, labels.numpy(), 0.1).mean() for k, v in outputs.items()}
    kernels = [v.numpy() for v in model.trainable_variables if v.path.endswith("kernel")]
    l2 = 0.5 * 1e-3 * sum((k.astype(np.float64) ** 2).sum() for k in kernels)
    expected = ce["logits"] + 0.3 * (ce["aux1"] + ce["aux2"]) + l2
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["main_loss"]) == pytest.approx(ce["logits"], rel=1e-5)
    assert float(metrics["aux2_loss"]) == pytest.approx(ce["aux2"], rel=1e-5)
    # The plain cross-entropy, without the smoothing: what the held-out loss measures.
    plain = numpy_cross_entropy(outputs["logits"], labels.numpy(), 0.0).mean()
    assert float(metrics["cross_entropy"]) == pytest.approx(plain, rel=1e-5)
    assert abs(plain - ce["logits"]) > 1e-3


# The layers with weights, written out from the papers (not read from inception/): every conv and
# every fully connected layer has its kernel decayed; nothing else is.
GOOGLENET_MODULES = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")  # Table 1's rows
MODULE_CONVS = ("branch1x1", "branch3x3_reduce", "branch3x3", "branch5x5_reduce", "branch5x5",
                "branch_pool_proj")  # Table 1's columns: #1x1 .. pool proj
GOOGLENET_AUX = ("conv_1x1/conv/kernel", "fc/kernel", "logits/kernel")  # conv 1x1, FC 1024, linear


def googlenet_kernels():
    """GoogLeNet's 59 convs and 5 FC layers: the stem's 3 convs, 6 per inception module (9 of
    them: 57 in the network of Table 1), then per aux head a conv and 2 FC, and the classifier."""
    stem = ("conv1_7x7_s2", "conv2_3x3_reduce", "conv2_3x3")
    convs = [f"{name}/conv/kernel" for name in stem]
    convs += [f"inception_{m}/{conv}/conv/kernel"
              for m in GOOGLENET_MODULES for conv in MODULE_CONVS]
    return convs + 2 * list(GOOGLENET_AUX) + ["logits/kernel"]


def inception_v3_kernels():
    """Inception v3's 96 convs and 2 FC layers: 94 convs in the network (the stem's 5, three
    35x35 blocks of 7, the 35->17 reduction's 4, four 17x17 blocks of 10, the 17->8 reduction's
    6, two 8x8 blocks of 9: Figures 5-7, as Keras applications' InceptionV3), the aux head's 1x1
    and 5x5 convs, and the two classifiers."""
    network = 5 + 3 * 7 + 4 + 4 * 10 + 6 + 2 * 9
    return ([f"conv{i}/conv/kernel" for i in range(1, network + 1)]
            + ["conv_1x1/conv/kernel", "conv_5x5/conv/kernel", "logits/kernel", "logits/kernel"])


@pytest.mark.parametrize("name, image_size, kernels, batch_norm", [
    ("googlenet", 32, googlenet_kernels(), False),
    ("googlenet_bn", 32, googlenet_kernels(), True),
    ("inception_v3", 75, inception_v3_kernels(), True),
])
def test_weight_decay_takes_every_conv_and_dense_kernel_and_nothing_else(name, image_size,
                                                                         kernels, batch_norm):
    model = inception.build_model(name, NUM_CLASSES, image_size, width_multiplier=0.125)
    decayed = decayed_weights(model)
    assert sorted(v.path for v in decayed) == sorted(kernels)
    assert len(kernels) == (64 if name.startswith("googlenet") else 98)
    # The rest of what trains: a bias per conv and FC layer without batch norm; with it, a
    # gamma and a beta per conv (which then has no bias) and a bias per FC layer.
    convs = sum(k.endswith("/conv/kernel") for k in kernels)
    decayed_ids = {id(v) for v in decayed}
    rest = collections.Counter(v.path.rsplit("/", 1)[1] for v in model.trainable_variables
                               if id(v) not in decayed_ids)
    assert rest == (dict(gamma=convs, beta=convs, bias=len(kernels) - convs) if batch_norm
                    else dict(bias=len(kernels)))
    # Batch norm's moving statistics are not trained, and not decayed either.
    moving = [v for v in model.non_trainable_variables if "moving" in v.path]
    assert len(moving) == (2 * convs if batch_norm else 0)
    assert not {id(v) for v in moving} & decayed_ids


def run_steps(device_names, images, labels, steps=2, policy="float32"):
    strategy = devices.make_strategy(device_names)
    keras.mixed_precision.set_global_policy(policy)  # conftest puts float32 back
    with strategy.scope():
        model = build()
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
        if policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)  # as the Trainer does
    config = StepConfig(global_batch_size=8, num_classes=NUM_CLASSES, weight_decay=1e-3)
    step = make_train_step(model, optimizer, strategy, config)
    results = [step(sharded(strategy, images), sharded(strategy, labels)) for _ in range(steps)]
    return model, results


def test_two_towers_equal_one_tower():
    images, labels = batch()
    one, _ = run_steps(cpu_devices(1), images, labels)
    two, results = run_steps(cpu_devices(2), images, labels)
    initial = build()
    moved = max(np.abs(a.numpy() - b.numpy()).max()
                for a, b in zip(one.trainable_variables, initial.trainable_variables))
    assert moved > 1e-3  # the steps did change the weights
    diff = max(np.abs(a.numpy() - b.numpy()).max()
               for a, b in zip(one.trainable_variables, two.trainable_variables))
    assert diff <= 1e-5
    # Each tower reports the loss of its own half of the batch (the first step, initial weights).
    first = results[0]
    assert first["main_loss"].shape == (2,)
    for tower in range(2):
        half = slice(4 * tower, 4 * tower + 4)
        logits = initial(images[half], training=True)
        for name in ("logits", "aux1", "aux2"):
            expected = numpy_cross_entropy(logits[name].numpy(), labels.numpy()[half], 0).mean()
            key = "main_loss" if name == "logits" else f"{name}_loss"
            assert float(first[key][tower]) == pytest.approx(expected, rel=1e-4)


def test_towers_share_batch_norms_moving_statistics_their_mean():
    """Each tower's forward pass updates its own copy of the moving statistics from its own half
    of the batch; after the step every copy holds the mean of the two updates, which a single
    model computes here by running each half on its own from the same start."""
    images, labels = batch()
    images = tf.concat([images[:4], 3.0 * images[4:] + 1.0], 0)  # two halves, unlike statistics
    strategy = devices.make_strategy(cpu_devices(2))
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = inception.build_model("minigooglenet", NUM_CLASSES, 32, width_multiplier=0.25)
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build(model.trainable_variables)
    keras.utils.set_random_seed(0)
    reference = inception.build_model("minigooglenet", NUM_CLASSES, 32, width_multiplier=0.25)
    start = [v.numpy() for v in moving_statistics(reference)]
    halves = []
    for half in (slice(0, 4), slice(4, 8)):
        for variable, value in zip(moving_statistics(reference), start):
            variable.assign(value)
        reference(images[half], training=True)
        halves.append([v.numpy() for v in moving_statistics(reference)])
    config = StepConfig(global_batch_size=8, num_classes=NUM_CLASSES)
    make_train_step(model, optimizer, strategy, config)(sharded(strategy, images),
                                                        sharded(strategy, labels))
    statistics = moving_statistics(model)
    assert len(statistics) == 2 * 19  # per conv (the stem, 2 per inception, 1 per downsample)
    apart = max(np.abs(a - b).max() for a, b in zip(*halves))
    assert apart > 0.1  # each half alone moves the statistics differently
    for variable, first, second in zip(statistics, *halves):
        copies = [c.numpy() for c in strategy.experimental_local_results(variable.value)]
        np.testing.assert_array_equal(copies[0], copies[1])
        np.testing.assert_allclose(copies[0], (first + second) / 2, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # float16 is the GPUs' precision; the overflow test below stays in the fast suite
def test_float16_with_loss_scaling_on_two_towers_matches_float32():
    images, labels = batch()
    exact, exact_results = run_steps(cpu_devices(2), images, labels, steps=1)
    half, half_results = run_steps(cpu_devices(2), images, labels, steps=1, policy="mixed_float16")
    initial = [v.numpy() for v in build().trainable_variables]
    exact_update = np.concatenate([(v.numpy() - w).ravel()
                                   for v, w in zip(exact.trainable_variables, initial)])
    half_update = np.concatenate([(v.numpy() - w).ravel()
                                  for v, w in zip(half.trainable_variables, initial)])
    # float16 keeps 11 significant bits (rounding 2^-11, 0.05%); the forward and backward
    # passes of a 22-layer net accumulate that to 1.4% of the update (measured; bfloat16, 3 bits
    # fewer, gives 8%). A scale left in the gradients, or one tower's gradient lost, is 50-100%+.
    relative = np.linalg.norm(half_update - exact_update) / np.linalg.norm(exact_update)
    assert np.linalg.norm(exact_update) > 0.1 and relative < 0.03
    for exact_step, half_step in zip(exact_results, half_results):
        for name in ("main_loss", "aux1_loss", "aux2_loss"):
            assert half_step[name].shape == (2,)  # one per tower, as logged
            assert np.isfinite(half_step[name].numpy()).all()
            np.testing.assert_allclose(half_step[name].numpy(), exact_step[name].numpy(),
                                       rtol=1e-2)
        # Keras' initial scale 2^15, unchanged: no step overflowed.
        np.testing.assert_array_equal(half_step["loss_scale"].numpy(), [2.0 ** 15] * 2)


def overflow_on_tower(index):
    """A tower gradient function whose tower `index` (a variable; -1 for none) gets gradients
    beyond float16's range (65,504) in its float16 backward pass, as a large loss on one GPU does;
    its forward pass (and so its loss) stays as it was. Otherwise it is `tower_gradients`."""
    def gradients(model, optimizer, images, labels, config):
        with tf.GradientTape() as tape:
            total, metrics = tower_losses(model, images, labels, config)
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            blow_up = tf.where(tf.equal(replica, index), 1e30, 1.0)
            scaled = optimizer.scale_loss(total * blow_up)
        return tape.gradient(scaled, model.trainable_variables), total, metrics
    return gradients


def test_float16_overflow_on_one_tower_skips_the_update_on_every_tower():
    images, labels = batch()
    strategy = devices.make_strategy(cpu_devices(2))
    keras.mixed_precision.set_global_policy("mixed_float16")  # conftest puts float32 back
    with strategy.scope():
        model = build()
        optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1, momentum=0.9))
        optimizer.build(model.trainable_variables)
    config = StepConfig(global_batch_size=8, num_classes=NUM_CLASSES)
    overflowing = tf.Variable(-1)  # one traced step for every case: tracing is the slow part

    @tf.function
    def step(images, labels):
        per_replica = strategy.run(replica_step, args=(model, optimizer, images, labels, config,
                                                       overflow_on_tower(overflowing)))
        return tf.stack(strategy.experimental_local_results(per_replica["total_loss"]))

    def run_step():
        return step(sharded(strategy, images), sharded(strategy, labels)).numpy()
    for tower, scale in ((0, 2.0 ** 14), (1, 2.0 ** 13)):
        overflowing.assign(tower)
        before = [v.numpy().copy() for v in model.weights]
        run_step()
        # Skipped everywhere: every weight bit for bit as it was (the mirrored copies included),
        # no optimizer step counted, the scale halved. Keras 3.15's LossScaleOptimizer alone
        # looks at tower 0's gradients only: with tower=1 it applied the inf gradients and the
        # weights became NaN (replica_step makes the towers agree first).
        for variable, old in zip(model.weights, before):
            for copy in strategy.experimental_local_results(variable.value):
                np.testing.assert_array_equal(copy.numpy(), old, err_msg=f"tower {tower}")
        assert int(optimizer.iterations.numpy()) == 0
        assert float(optimizer.dynamic_scale.numpy()) == scale
    # Training then goes on at the lower scale, on both towers, and learns.
    overflowing.assign(-1)
    losses = [run_step() for _ in range(15)]
    assert all(np.isfinite(loss).all() for loss in losses)
    assert int(optimizer.iterations.numpy()) == 15
    assert float(optimizer.dynamic_scale.numpy()) == 2.0 ** 13
    assert losses[-1].mean() < 0.75 * losses[0].mean()


# XLA compiles the tower's pass once per tower: one tower takes a third of two towers' time (about
# 20 s against 55 s on 2 cores). The fast suite compiles for one tower under the same
# MirroredStrategy, the slow set for two.
@pytest.mark.parametrize("towers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_jit_and_bfloat16_steps_are_finite(towers):
    images, labels = batch()
    strategy = devices.make_strategy(cpu_devices(towers))
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        with strategy.scope():
            model = inception.build_model("minigooglenet", NUM_CLASSES, 32, width_multiplier=0.25)
            optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
        step = make_train_step(model, optimizer, strategy,
                               StepConfig(global_batch_size=8, num_classes=NUM_CLASSES),
                               jit_compile=True)
        result = step(sharded(strategy, images), sharded(strategy, labels))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert result["total_loss"].shape == (towers,)  # one per tower, each on its share of the 8
    assert np.isfinite(result["total_loss"].numpy()).all()


def test_uneven_evaluation_on_two_towers_scores_every_image_once():
    # 6 images in batches of 2 over 2 towers: the last step leaves the second tower empty.
    images, labels = batch(6)
    strategy = devices.make_strategy(cpu_devices(2))
    with strategy.scope():
        model = build()
    step = make_eval_step(model, strategy)
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: tf.data.Dataset.from_tensor_slices((images, labels)).batch(2))
    probs, seen = [], []
    for step_images, step_labels in dataset:
        tower_probs, tower_labels = step(step_images, step_labels)
        probs += [p.numpy() for p in tower_probs]
        seen += [y.numpy() for y in tower_labels]
    assert [len(p) for p in probs] == [2, 2, 2, 0]
    expected = tf.nn.softmax(model(images, training=False)["logits"]).numpy()
    np.testing.assert_allclose(np.concatenate(probs), expected, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate(seen), labels.numpy())


def test_the_step_updates_the_weights_exactly_as_model_fit_does():
    """Our hand-written step (under MirroredStrategy, with the 0.3-weighted aux losses, L2 decay,
    Nesterov SGD on a schedule) against Keras' own `model.fit` of the same network, from the same
    weights on the same batches: the reference a user would otherwise train with. Dropout is off,
    so nothing random is left."""
    from training.optimization import EpochSchedule
    rng = np.random.default_rng(3)
    steps, size, batch_size, weight_decay = 3, 32, 8, 2e-4
    images = rng.uniform(-1, 1, (steps * batch_size, size, size, 3)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, steps * batch_size).astype(np.int32)

    def network():
        keras.utils.set_random_seed(0)
        return inception.build_model("googlenet_bn", NUM_CLASSES, size, width_multiplier=0.125,
                                     dropout_rate=0.0, aux_dropout_rate=0.0)

    def optimizer():
        return keras.optimizers.SGD(EpochSchedule(0.05, "cosine", steps, 1), momentum=0.9,
                                    nesterov=True)
    strategy = devices.make_strategy(cpu_devices(1))
    with strategy.scope():
        ours, our_optimizer = network(), optimizer()
        our_optimizer.build(ours.trainable_variables)
    step = make_train_step(ours, our_optimizer, strategy,
                           StepConfig(batch_size, NUM_CLASSES, weight_decay=weight_decay))
    for i in range(steps):
        part = slice(i * batch_size, (i + 1) * batch_size)
        step(tf.constant(images[part]), tf.constant(labels[part]))

    net = network()
    heads = ("logits", "aux1", "aux2")

    class Heads(keras.Model):  # every head an output, and the L2 term in the loss
        def __init__(self):
            super().__init__()
            self.net = net

        def call(self, x, training=False):
            out = self.net(x, training=training)
            if training:
                self.add_loss(weight_decay * tf.add_n(
                    [tf.nn.l2_loss(v) for v in decayed_weights(net)]))
                return tuple(out[h] for h in heads)
            return tuple(out["logits"] for _ in heads)
    reference = Heads()
    reference.compile(optimizer(), loss=[keras.losses.SparseCategoricalCrossentropy(
        from_logits=True)] * 3, loss_weights=[1.0, 0.3, 0.3])
    reference.fit(images, (labels,) * 3, batch_size=batch_size, epochs=1, shuffle=False,
                  verbose=0)
    moved = 0.0
    for a, b, c in zip(ours.trainable_variables, net.trainable_variables,
                       network().trainable_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
        moved = max(moved, float(np.abs(a.numpy() - c.numpy()).max()))
    assert moved > 1e-3  # both trained


def test_class_weights_scale_each_examples_losses_main_and_aux_alike():
    logits = np.array([[2.0, 0.0], [0.5, 1.5], [1.0, -1.0]], np.float32)
    labels = np.array([0, 1, 1], np.int32)

    def model(images, training):
        return {"logits": tf.constant(logits), "aux1": tf.constant(logits)}
    config = StepConfig(global_batch_size=3, num_classes=2, aux_weight=0.3,
                        class_weights=(0.5, 2.0))
    total, _ = tower_losses(model, None, tf.constant(labels), config)
    # Hand-computed: per-example cross-entropy -log softmax[label], weighted 0.5, 2, 2; the
    # global-batch mean of the main loss plus 0.3 x that of the aux loss (the same logits).
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ce = -log_softmax[np.arange(3), labels]
    expected = (1 + 0.3) * np.sum(np.array([0.5, 2.0, 2.0]) * ce) / 3
    assert float(total) == pytest.approx(expected, rel=1e-5)
