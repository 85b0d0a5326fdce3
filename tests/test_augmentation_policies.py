"""--mixup, --cutmix and --augment_policy: Keras' MixUp, CutMix, RandAugment and AugMix on the
training batch, host or device alike, drawn from the seed; the soft targets in the losses."""
import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import inception
from conftest import cpu_devices, towers_and_host_batches, write_image
from input_pipeline import policies
from input_pipeline.builder import InputPipeline
from input_pipeline.examples import Examples
from input_pipeline.preprocessing import Augmentation
from settings.checks import check_config
from settings.config import TrainConfig, with_defaults
from training import devices
from training.step import StepConfig, example_weights, make_train_step, tower_losses

SIZE = 32
CLASSES = 8


def batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.uniform(-1, 1, (n, SIZE, SIZE, 3)).astype(np.float32))
    return images, tf.constant(np.arange(n) % CLASSES, tf.int32)  # every label its own image


def mixed(augmentation, seed=(3, 4)):
    images, labels = batch()
    params = policies.sample_seeds(8, tf.constant(seed, tf.int64), augmentation)
    policies.make_layers(augmentation)
    out, targets = policies.mix(images, labels, params, augmentation, CLASSES)
    return images.numpy(), labels.numpy(), out.numpy(), targets.numpy()


def partners(labels, targets):
    """Each image's own share and the index of the image mixed into it (itself when none)."""
    own = targets[np.arange(len(labels)), labels]
    others = targets.copy()
    others[np.arange(len(labels)), labels] = 0.0
    return own, np.where(others.max(1) > 0, others.argmax(1), labels)


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_targets_sum_to_one_and_are_the_mix_of_the_two_images_labels(kind):
    alpha = 0.4 if kind == "mixup" else 1.0
    images, labels, out, targets = mixed(Augmentation(**{kind: alpha}))
    np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-6)
    assert np.all(np.count_nonzero(targets > 1e-7, axis=1) <= 2)
    own, other = partners(labels, targets)
    assert np.any(own < 0.99)  # something was mixed
    for i in range(8):
        j = other[i]  # labels are image indices here
        if kind == "mixup":  # the same share of each image as of its label
            np.testing.assert_allclose(out[i], own[i] * images[i] + (1 - own[i]) * images[j],
                                       atol=1e-5)
        else:  # each pixel from one of the two, the other's share about its label's
            from_other = np.all(np.isclose(out[i], images[j]), axis=-1) & ~np.all(
                np.isclose(out[i], images[i]), axis=-1)
            assert np.all(np.isclose(out[i], images[i]).all(-1) | from_other)
            assert abs(from_other.mean() - (1 - own[i])) < 0.1


def test_both_take_one_per_batch_and_the_draws_are_reproducible():
    both = Augmentation(mixup=0.4, cutmix=1.0)
    kinds = set()
    for seed in range(12):
        images, labels, out, targets = mixed(both, (seed, 1))
        again = mixed(both, (seed, 1))
        np.testing.assert_array_equal(out, again[2])
        np.testing.assert_array_equal(targets, again[3])
        own, other = partners(labels, targets)
        blended = [not np.isclose(out[i], images[i]).all(-1).any() for i in range(8)
                   if own[i] < 0.95 and other[i] != i]
        assert len(set(blended)) <= 1  # all blended (MixUp) or all pasted (CutMix)
        kinds.update(blended)
    assert kinds == {True, False}


def model_of(logits):
    def model(images, training):
        return {"logits": tf.constant(logits), "aux1": tf.constant(logits * 0.5),
                "aux2": tf.constant(-logits)}
    return model


def numpy_cross_entropy(logits, targets):
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -(targets * log_softmax).sum(1)


LOGITS = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [1.0, -1.0, 0.3]], np.float32)
SOFT = np.array([[0.7, 0.3, 0.0], [0.0, 1.0, 0.0], [0.0, 0.45, 0.55]], np.float32)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("class_weights", [None, (0.5, 2.0, 1.0)])
def test_soft_targets_in_the_main_and_both_aux_losses(smoothing, class_weights):
    config = StepConfig(global_batch_size=3, num_classes=3, aux_weight=0.3,
                        label_smoothing=smoothing, class_weights=class_weights)
    total, metrics = tower_losses(model_of(LOGITS), None, tf.constant(SOFT), config)
    targets = SOFT * (1 - smoothing) + smoothing / 3  # smoothing on top of the mix
    # A mixed example weighs the same mix of its two classes' weights.
    weights = np.ones(3) if class_weights is None else SOFT @ np.array(class_weights)
    expected = sum(factor * np.sum(weights * numpy_cross_entropy(logits, targets)) / 3
                   for factor, logits in ((1.0, LOGITS), (0.3, LOGITS * 0.5), (0.3, -LOGITS)))
    assert float(total) == pytest.approx(expected, rel=1e-5)
    # Accuracy against each target's larger share: classes 0, 1, 2; the logits say 0, 1, 0.
    assert float(metrics["accuracy"]) == pytest.approx(2 / 3)


def test_mixed_examples_weigh_the_mix_of_their_classes_weights():
    weights = example_weights(tf.constant(SOFT), (0.5, 2.0, 1.0)).numpy()
    np.testing.assert_allclose(weights, [0.7 * 0.5 + 0.3 * 2.0, 2.0, 0.45 * 2.0 + 0.55 * 1.0],
                               rtol=1e-6)
    assert example_weights(tf.constant(SOFT), None) is None


def test_integer_labels_give_the_loss_they_always_gave():
    config = StepConfig(global_batch_size=3, num_classes=3, aux_weight=0.3,
                        label_smoothing=0.1, class_weights=(0.5, 2.0, 1.0))
    labels = tf.constant([0, 1, 2], tf.int32)
    total, metrics = tower_losses(model_of(LOGITS), None, labels, config)
    assert float(total) == 1.8409218788146973  # bit for bit what it gave before soft targets
    one_hot = tower_losses(model_of(LOGITS), None, tf.one_hot(labels, 3), config)[0]
    assert float(one_hot) == pytest.approx(float(total), rel=1e-6)
    assert float(metrics["accuracy"]) == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("policies"))
    paths = [write_image(os.path.join(root, f"img_{i}.jpg"), seed=i, fmt="JPEG")
             for i in range(12)]
    return Examples(np.arange(12) % CLASSES, paths=np.array(paths))


EVERYTHING = Augmentation(mixup=0.4, cutmix=1.0, policy="randaugment", random_erasing=0.5)


@pytest.mark.parametrize("augmentation", [
    EVERYTHING, Augmentation(policy="augmix"), Augmentation(cutmix=1.0)],
    ids=["mix_randaugment_erasing", "augmix", "cutmix"])
def test_host_and_device_give_the_same_batch_and_a_resumed_epoch_too(examples, augmentation):
    pipeline = InputPipeline(examples, image_size=SIZE, training=True, cache="memory", seed=5,
                             augmentation=augmentation, num_classes=CLASSES)
    on_host = list(pipeline.dataset(4, epoch=1))
    on_device = list(pipeline.dataset(4, epoch=1, augment_on="device"))
    plain = InputPipeline(examples, image_size=SIZE, training=True, cache="memory", seed=5)
    for (host_images, host_labels), (inputs, labels), (plain_images, _) in zip(
            on_host, on_device, plain.dataset(4, epoch=1)):
        assert labels.dtype == tf.int32
        device_images, targets = pipeline.augment(inputs, labels)
        np.testing.assert_allclose(device_images, host_images, atol=1e-5)
        np.testing.assert_allclose(targets, host_labels, atol=1e-6)
        assert targets.shape == ((4, CLASSES) if pipeline.mixes else (4,))
        assert not np.allclose(host_images, plain_images, atol=1e-3)  # something was done
    again = InputPipeline(examples, image_size=SIZE, training=True, cache="memory", seed=5,
                          augmentation=augmentation, num_classes=CLASSES)
    (images, labels), = list(again.dataset(4, epoch=1, skip_batches=1).take(1))
    np.testing.assert_array_equal(images, on_host[1][0])
    np.testing.assert_array_equal(labels, on_host[1][1])


def test_two_towers_apply_the_policy_to_their_share_as_the_host_does(examples):
    # Each image has its own policy seed, so how the batch is split does not matter (MixUp and
    # CutMix pair images within the batch a tower holds: the host's pairs only with one tower).
    pipeline = InputPipeline(examples, image_size=SIZE, training=True, cache="memory", seed=2,
                             augmentation=Augmentation(policy="augmix"))
    for towers, host_images in towers_and_host_batches(pipeline):
        np.testing.assert_allclose(towers, host_images, atol=1e-5)


def test_a_mixing_pipeline_needs_the_class_count(examples):
    with pytest.raises(ValueError, match="needs num_classes"):
        InputPipeline(examples, image_size=SIZE, training=True, cache="memory",
                      augmentation=Augmentation(mixup=0.2))


@pytest.mark.parametrize("augment_on", ["host", "device"])
def test_held_out_images_and_labels_are_untouched(examples, augment_on):
    plain, everything = (InputPipeline(examples, image_size=SIZE, training=False,
                                       cache="memory", augmentation=a, num_classes=CLASSES)
                         for a in (Augmentation(), EVERYTHING))
    for (a, a_labels), (b, b_labels) in zip(plain.dataset(4, augment_on=augment_on),
                                            everything.dataset(4, augment_on=augment_on)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a_labels, b_labels)


def check(given):
    return check_config(with_defaults(TrainConfig.from_dict(given)), given)


@pytest.mark.parametrize("given, line", [
    (dict(mixup=1.5), "--mixup=1.5: must be a number >= 0 and <= 1"),
    (dict(cutmix=-1), "--cutmix=-1: must be a number >= 0 and <= 1"),
    (dict(augment_policy="autoaugment"),
     "--augment_policy=autoaugment: must be one of none, randaugment, augmix"),
    (dict(augment_policy="randaugment", augment_magnitude=2.0),
     "--augment_magnitude=2: must be a number >= 0 and <= 1"),
    (dict(augment_policy="randaugment", augment_ops=0),
     "--augment_ops=0: must be an integer >= 1"),
    (dict(augment_magnitude=0.5), "--augment_magnitude=0.5: sets the strength of "
     "--augment_policy, which is none: give --augment_policy too"),
    (dict(augment_policy="augmix", augment_ops=3),
     "--augment_ops=3: is RandAugment's number of ops; this run's --augment_policy is augmix"),
])
def test_bad_values_are_refused_in_one_line(given, line):
    with pytest.raises(ValueError) as refused:
        check(given)
    assert str(refused.value) == line


def test_defaults_are_off_and_a_policy_records_its_magnitude():
    config = TrainConfig()
    assert (config.mixup, config.cutmix, config.augment_policy, config.augment_magnitude,
            config.augment_ops) == (0.0, 0.0, "none", None, 2)
    assert Augmentation().magnitude is None and not policies.mixes(Augmentation())
    assert Augmentation(policy="randaugment").magnitude == 0.5
    assert Augmentation(policy="augmix").magnitude == 0.3
    assert Augmentation(policy="augmix", magnitude=0.6).magnitude == 0.6
    with pytest.raises(ValueError, match="Unknown augment policy"):
        Augmentation(policy="autoaugment")


def test_a_config_json_from_before_loads_with_everything_off():
    augmentation = Augmentation(mixup=0.2, cutmix=1.0, policy="augmix")
    saved = TrainConfig(augmentation=augmentation, mixup=0.2, cutmix=1.0,
                        augment_policy="augmix")
    assert TrainConfig.from_dict(saved.to_dict()) == saved
    old = saved.to_dict()
    for name in ("mixup", "cutmix", "augment_policy", "augment_magnitude", "augment_ops"):
        del old[name]
    for name in ("mixup", "cutmix", "policy", "magnitude", "num_ops"):
        del old["augmentation"][name]
    loaded = TrainConfig.from_dict(old)
    assert loaded.augmentation == Augmentation() and loaded.mixup == 0.0
    assert dataclasses.replace(loaded, augmentation=None) == TrainConfig()


def test_the_towers_step_trains_on_the_targets_augment_gives():
    # augment_on=device: InputPipeline.augment(inputs, labels) returns soft targets, which the
    # step's losses take in place of the integer labels.
    strategy = devices.make_strategy(cpu_devices(1))
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = inception.build_model("googlenet", 5, 32, width_multiplier=0.125,
                                      dropout_rate=0.0, aux_dropout_rate=0.0)
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build(model.trainable_variables)  # as the Trainer does
    images = tf.random.stateless_uniform((4, 32, 32, 3), (1, 2), -1, 1)
    soft = tf.constant([[0.6, 0.4, 0, 0, 0], [0, 1.0, 0, 0, 0], [0, 0, 0.2, 0.8, 0],
                        [0.5, 0, 0, 0, 0.5]], tf.float32)
    logits = {name: value.numpy() for name, value in model(images, training=True).items()}
    step = make_train_step(model, optimizer, strategy, StepConfig(4, 5),
                           augment=lambda inputs, labels: (inputs["images"], soft))
    metrics = step({"images": images}, tf.constant([0, 1, 3, 4], tf.int32))
    for name, key in (("logits", "main_loss"), ("aux1", "aux1_loss"), ("aux2", "aux2_loss")):
        expected = numpy_cross_entropy(logits[name], soft.numpy()).mean()
        assert float(metrics[key][0]) == pytest.approx(expected, rel=1e-4)
