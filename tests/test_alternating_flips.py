"""--alternate_flips (`preprocessing.alternating_flips`, input_pipeline/builder.py): each training
image is mirrored in every other epoch, its first epoch decided by its own seeded
coin, with or without a cache, on the host and on the device alike; refused where the recipe does
not flip."""

import numpy as np
import pytest

from conftest import assert_refused_before_data
from input_pipeline.builder import InputPipeline
from input_pipeline.examples import Examples
from input_pipeline.preprocessing import Augmentation

SIZE, COUNT = 32, 16
# Whole images, no shift and no colour: the only change an image can undergo is the mirror.
ALTERNATE = Augmentation(crop="pad", pad=0, color_jitter=False, alternate_flips=True)


@pytest.fixture(scope="module")
def originals():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (COUNT, SIZE, SIZE, 3)).astype(np.uint8)


def flips_by_image(pipeline, originals, epoch):
    """{label (= the image's number): whether the epoch mirrored it}."""
    seen = {}
    for images, labels in pipeline.dataset(4, epoch=epoch):
        for image, label in zip(images.numpy(), labels.numpy()):
            original = originals[label].astype(np.float32) / 127.5 - 1.0
            as_is = np.abs(image - original).max() < 1e-4
            mirrored = np.abs(image - original[:, ::-1]).max() < 1e-4
            assert as_is != mirrored, "neither the image nor its mirror"
            seen[int(label)] = mirrored
    assert sorted(seen) == list(range(COUNT))  # every image once an epoch
    return seen


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_every_image_is_mirrored_in_every_other_epoch(originals, cache):
    examples = Examples(np.arange(COUNT), images=originals)
    pipeline = InputPipeline(examples, image_size=SIZE, training=True, cache=cache, seed=3,
                             augmentation=ALTERNATE)
    flips = [flips_by_image(pipeline, originals, epoch) for epoch in range(4)]
    # The first epoch's coins are the images' own: some mirrored, some not (all alike with
    # probability 2 / 2^16).
    assert 0 < sum(flips[0].values()) < COUNT
    for image in range(COUNT):
        assert [flips[e][image] for e in range(4)] == [flips[0][image], not flips[0][image]] * 2
    # Seeded: another pipeline with the seed flips alike, whatever epoch it starts at.
    again = InputPipeline(examples, image_size=SIZE, training=True, cache=cache, seed=3,
                          augmentation=ALTERNATE)
    assert flips_by_image(again, originals, 3) == flips[3]


def test_the_device_path_mirrors_the_same_images(originals):
    examples = Examples(np.arange(COUNT), images=originals)
    pipeline = InputPipeline(examples, image_size=SIZE, training=True, cache="memory", seed=3,
                             augmentation=ALTERNATE)
    for epoch in (0, 1):
        for (host, host_labels), (inputs, labels) in zip(
                pipeline.dataset(4, epoch=epoch),
                pipeline.dataset(4, epoch=epoch, augment_on="device")):
            images, _ = pipeline.augment(inputs, labels)
            np.testing.assert_array_equal(labels, host_labels)
            np.testing.assert_allclose(images, host, atol=1e-5)


def test_independent_coins_leave_images_unmirrored_for_two_epochs(originals):
    # What alternating is for: with a new coin per epoch, about a quarter of the images are
    # seen one way only over two epochs; alternating leaves none.
    examples = Examples(np.arange(COUNT), images=originals)
    coins = InputPipeline(examples, image_size=SIZE, training=True, cache="memory", seed=3,
                          augmentation=Augmentation(crop="pad", pad=0, color_jitter=False))
    first, second = (flips_by_image(coins, originals, e) for e in (0, 1))
    assert any(first[i] == second[i] for i in range(COUNT))  # all differ: probability 2^-16


def test_a_recipe_without_flips_refuses_it_in_one_line(tmp_path):
    assert_refused_before_data(dict(dataset="digits", alternate_flips=True),
                               r"--alternate_flips=True: this recipe does not flip its images "
                               r"\(a mirrored digit is another symbol\)", tmp_path)
    with pytest.raises(ValueError, match="alternate_flips needs flip"):
        Augmentation(flip=False, alternate_flips=True)
