"""--random_erasing: keras.layers.RandomErasing on the training input, host or device alike,
drawn from the seed like the rest of the augmentation, never on held-out images."""
import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import towers_and_host_batches, write_image
from input_pipeline import preprocessing
from input_pipeline.builder import InputPipeline
from input_pipeline.examples import Examples
from input_pipeline.preprocessing import Augmentation, apply_augmentation, sample_augmentation
from settings.checks import check_config
from settings.config import TrainConfig, with_defaults
from settings.recipes import get_recipe

SIZE = 32
CIFAR = Augmentation(crop="pad", pad=4, color_jitter=False)
PARAMS = ("box", "flip", "brightness", "saturation", "hue", "contrast")


def cached_squares(batch=8, seed=0):
    rng = np.random.default_rng(seed)
    side = preprocessing.cache_size(SIZE)
    # 1..255: no pixel of the crops is exactly the fill by chance.
    return tf.constant(rng.integers(1, 256, (batch, side, side, 3), dtype=np.uint8))


def augmented(augmentation, seed=(3, 4), batch=8):
    images = cached_squares(batch)
    params = sample_augmentation(batch, tf.constant(seed, tf.int64), augmentation, SIZE)
    return params, apply_augmentation(images, params, SIZE, augmentation).numpy()


def erased_mask(params, side=SIZE):
    """[B, S, S] where each image's box covers (Keras' own rule: y1 <= y / S < y2)."""
    box = params["erase_box"].numpy() * side
    grid = np.arange(side, dtype=np.float32)
    rows = (grid >= box[:, 0, None]) & (grid < box[:, 2, None])
    columns = (grid >= box[:, 1, None]) & (grid < box[:, 3, None])
    return rows[:, :, None] & columns[:, None, :] & (params["erase"].numpy() > 0.5)[:, None, None]


@pytest.mark.parametrize("base", [Augmentation(), CIFAR], ids=["inception", "pad"])
def test_every_image_gets_a_box_of_mid_grey_and_keeps_the_rest_exactly(base):
    params, erased = augmented(dataclasses.replace(base, random_erasing=1.0))
    _, plain = augmented(base)
    # The crops, flips and colours drawn without erasing, unchanged by it.
    for name in PARAMS:
        np.testing.assert_array_equal(params[name], sample_augmentation(
            8, tf.constant((3, 4), tf.int64), base, SIZE)[name])
    mask = erased_mask(params)
    assert np.all(params["erase"].numpy() == 1.0)
    assert np.all(mask.reshape(8, -1).sum(1) > 0) and np.all(mask.reshape(8, -1).mean(1) < 0.5)
    np.testing.assert_array_equal(erased[mask], 0.0)   # all three channels of the box
    np.testing.assert_array_equal(erased[~mask], plain[~mask])  # bit-equal elsewhere
    assert np.all(plain[mask] != 0.0)  # so the box is what changed, and all of it
    # Each side between sqrt(0.02) and sqrt(0.33) of the image's: Keras' default scale.
    box = params["erase_box"].numpy()
    sides = np.concatenate([box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]])
    assert np.all(sides >= np.sqrt(0.02) - 1e-6) and np.all(sides <= np.sqrt(0.33) + 1e-6)
    assert np.all(box[:, :2] >= 0) and np.all(box[:, 2:] <= 1 + 1e-6)


@pytest.mark.parametrize("base", [Augmentation(), CIFAR, Augmentation(flip=False)])
def test_zero_changes_nothing(base):
    assert Augmentation().random_erasing == 0.0 and TrainConfig().random_erasing == 0.0
    params, images = augmented(dataclasses.replace(base, random_erasing=0.0))
    assert set(params) == set(PARAMS)  # nothing more drawn, nothing more shipped to a tower
    # An erasing probability only adds its own draws: the images it leaves alone are the same.
    half_params, half = augmented(dataclasses.replace(base, random_erasing=0.5))
    kept = half_params["erase"].numpy() == 0
    assert 0 < kept.sum() < 8
    np.testing.assert_array_equal(half[kept], images[kept])


def test_the_probability_is_per_image_and_the_draws_are_reproducible():
    seed = tf.constant((7, 1), tf.int64)
    draws = sample_augmentation(4000, seed, Augmentation(random_erasing=0.3), SIZE)
    assert abs(float(np.mean(draws["erase"])) - 0.3) < 0.03
    again = sample_augmentation(4000, seed, Augmentation(random_erasing=0.3), SIZE)
    for name in draws:
        np.testing.assert_array_equal(draws[name], again[name])
    other = sample_augmentation(4000, tf.constant((7, 2), tf.int64),
                                Augmentation(random_erasing=0.3), SIZE)
    assert not np.array_equal(draws["erase_box"], other["erase_box"])
    # Uniform position: the box's top-left is anywhere its size lets it be.
    box = draws["erase_box"].numpy()
    top = box[:, 0] / (1 - (box[:, 2] - box[:, 0]))
    assert abs(float(np.mean(top)) - 0.5) < 0.03


def test_the_keras_layer_is_made_once_outside_any_graph_in_float32():
    preprocessing.erasing_layer.cache_clear()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # reset by conftest

    @tf.function
    def erase(images, params):  # first made inside a graph, as a tower's step would
        return apply_augmentation(images, params, SIZE, Augmentation(random_erasing=1.0))

    images = cached_squares(2)
    params = sample_augmentation(2, tf.constant((1, 1), tf.int64),
                                 Augmentation(random_erasing=1.0), SIZE)
    assert erase(images, params).dtype == tf.float32
    layer = preprocessing.erasing_layer()
    assert isinstance(layer, keras.layers.RandomErasing)
    assert layer.compute_dtype == "float32" and tuple(layer.value_range) == (-1.0, 1.0)
    assert layer.fill_value == 0.0


def unique_label_examples(root, n=12):
    paths = [write_image(os.path.join(root, f"img_{i}.jpg"), seed=i, fmt="JPEG") for i in range(n)]
    return Examples(np.arange(n), paths=np.array(paths))


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    return unique_label_examples(str(tmp_path_factory.mktemp("erasing")))


def test_host_and_device_erase_the_same_boxes_and_a_resumed_epoch_too(examples):
    augmentation = Augmentation(random_erasing=0.5)
    pipeline = InputPipeline(examples, image_size=SIZE, training=True, cache="memory", seed=5,
                             augmentation=augmentation)
    on_host = list(pipeline.dataset(4, epoch=1))
    on_device = list(pipeline.dataset(4, epoch=1, augment_on="device"))
    erased = 0
    for (host_images, host_labels), (inputs, labels) in zip(on_host, on_device):
        assert inputs["erase"].shape == (4,) and inputs["erase_box"].shape == (4, 4)
        np.testing.assert_array_equal(labels, host_labels)
        device_images = pipeline.augment(inputs).numpy()
        np.testing.assert_allclose(device_images, host_images, atol=1e-5)
        mask = erased_mask(inputs)
        np.testing.assert_array_equal(device_images[mask], 0.0)
        np.testing.assert_array_equal(host_images.numpy()[mask], 0.0)
        erased += int(np.sum(inputs["erase"]))
    assert 0 < erased < 12 and np.any(on_device[1][0]["erase"])
    # Made again (a resumed run), the epoch's second batch is erased as before.
    again = InputPipeline(examples, image_size=SIZE, training=True, cache="memory", seed=5,
                          augmentation=augmentation)
    (images, _), = list(again.dataset(4, epoch=1, skip_batches=1).take(1))
    np.testing.assert_array_equal(images, on_host[1][0])


def test_the_towers_erase_their_share_of_the_host_batch(examples):
    pipeline = InputPipeline(examples, image_size=SIZE, training=True, cache="memory", seed=2,
                             augmentation=Augmentation(random_erasing=1.0))
    for towers, host_images in towers_and_host_batches(pipeline):
        np.testing.assert_allclose(towers, host_images, atol=1e-5)
        assert np.all(np.sum(towers == 0.0, axis=(1, 2, 3)) > 0)


@pytest.mark.parametrize("augment_on", ["host", "device"])
def test_held_out_images_are_never_erased(examples, augment_on):
    plain, erasing = (InputPipeline(examples, image_size=SIZE, training=False, cache="memory",
                                    augmentation=Augmentation(random_erasing=p))
                      for p in (0.0, 1.0))
    a, b = (np.concatenate([x for x, _ in p.dataset(4, augment_on=augment_on)])
            for p in (plain, erasing))
    np.testing.assert_array_equal(a, b)


def check(given):
    return check_config(with_defaults(TrainConfig.from_dict(given)), given)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_probability_outside_0_1_is_refused_naming_the_flag(value):
    with pytest.raises(ValueError) as refused:
        check(dict(random_erasing=value))
    assert str(refused.value) == f"--random_erasing={value}: must be a number >= 0 and <= 1"
    with pytest.raises(ValueError, match="random_erasing is a probability in"):
        Augmentation(random_erasing=value)


@pytest.mark.parametrize("value", [0.0, 0.25, 1.0])
def test_valid_probabilities_reach_the_recipes_augmentation(value):
    assert check(dict(random_erasing=value)).random_erasing == value
    for dataset in ("digits", "cifar10", "folder"):
        recipe = get_recipe(dataset)
        got = recipe.augmentation_for(50, None, value)
        assert got == dataclasses.replace(recipe.augmentation_for(50), random_erasing=value)
    got = get_recipe("tiny_imagenet").augmentation_for(50, (0.3, 0.9), value)
    assert (got.min_area, got.max_area, got.random_erasing) == (0.3, 0.9, value)


def test_a_config_json_from_before_loads_without_erasing():
    saved = TrainConfig(augmentation=Augmentation(random_erasing=0.4), random_erasing=0.4)
    assert TrainConfig.from_dict(saved.to_dict()) == saved
    old = saved.to_dict()
    del old["random_erasing"], old["augmentation"]["random_erasing"]
    loaded = TrainConfig.from_dict(old)
    assert loaded.random_erasing == 0.0 and loaded.augmentation == Augmentation()
