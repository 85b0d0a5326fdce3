"""Tests for input_pipeline/preprocessing.py: decoding to RGB, the eval crop, augmentation."""
import numpy as np
import pytest
import tensorflow as tf

from conftest import write_image
from input_pipeline import preprocessing
from input_pipeline.preprocessing import Augmentation

COLOR = (200, 40, 90)


def decode_file(path):
    return preprocessing.decode_image(tf.io.read_file(path)).numpy()


@pytest.mark.parametrize("fmt,mode,tolerance", [
    ("JPEG", "RGB", 6), ("JPEG", "CMYK", 6), ("PNG", "RGB", 0), ("PNG", "RGBA", 0),
    ("GIF", "RGB", 40), ("BMP", "RGB", 0)])
def test_any_format_named_jpg_decodes_to_rgb(tmp_path, fmt, mode, tolerance):
    # Every file is named .jpg, as ImageNet's one PNG is: decoding goes by content, not name.
    path = write_image(tmp_path / "x.jpg", size=(12, 20), color=COLOR, fmt=fmt, mode=mode)
    image = decode_file(path)
    assert image.shape == (12, 20, 3) and image.dtype == np.uint8
    np.testing.assert_allclose(image.reshape(-1, 3).mean(0), COLOR, atol=tolerance)


def test_grayscale_jpeg_becomes_three_equal_channels(tmp_path):
    path = write_image(tmp_path / "g.jpg", size=(10, 10), color=(120, 120, 120), mode="L")
    image = decode_file(path)
    assert image.shape == (10, 10, 3)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_corrupt_data_raises():
    with pytest.raises(tf.errors.InvalidArgumentError):
        preprocessing.decode_image(tf.constant(b"this is a text file"))


def test_eval_is_the_central_87_5_percent():
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert preprocessing.cache_size(224) == 256
    out = preprocessing.preprocess_for_eval(image, 224).numpy()
    expected = image[16:240, 16:240].astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(out, expected, atol=1e-4)


def augment_one(cached, image_size, seed, augmentation=Augmentation()):
    """One cached image through the batch augmentation, as a batch of one."""
    params = preprocessing.sample_augmentation(1, seed, augmentation)
    return preprocessing.apply_augmentation(tf.convert_to_tensor(cached)[None], params,
                                            image_size, augmentation)[0]


def test_augmentation_range_determinism_and_variety():
    cached = tf.constant(np.random.default_rng(1).integers(0, 256, (37, 37, 3), dtype=np.uint8))
    a = augment_one(cached, 32, tf.constant([1, 2])).numpy()
    b = augment_one(cached, 32, tf.constant([1, 2])).numpy()
    c = augment_one(cached, 32, tf.constant([3, 4])).numpy()
    assert a.shape == (32, 32, 3) and a.min() >= -1 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.01


@pytest.mark.parametrize("min_area, max_area", [(0.08, 1.0), (0.19, 0.75)])
def test_crop_areas_stay_in_the_asked_range(min_area, max_area):
    params = preprocessing.sample_augmentation(4000, tf.constant([5, 6]),
                                               Augmentation(min_area=min_area, max_area=max_area))
    y1, x1, y2, x2 = params["box"].numpy().T
    area = (y2 - y1) * (x2 - x1)
    assert area.min() >= min_area - 1e-5 and area.max() <= max_area + 1e-5
    if max_area <= 0.75:
        # Every such crop fits at aspect 3/4-4/3 (its longer side is at most sqrt(0.75 * 4/3)
        # = 1), so none is redrawn and the area is uniform: mean halfway. (Larger crops at a
        # far-from-square aspect overflow and are redrawn, which thins the areas above 0.75.)
        assert abs(area.mean() - (min_area + max_area) / 2) < 0.01


def test_augmentation_without_crop_flip_or_jitter_is_a_plain_resize():
    cached = np.random.default_rng(2).integers(0, 256, (37, 37, 3), dtype=np.uint8)
    identity = Augmentation(min_area=1.0, aspect_ratio=(1.0, 1.0), flip=False, color_jitter=False)
    out = augment_one(tf.constant(cached), 37, tf.constant([5, 6]), identity)
    np.testing.assert_allclose(out.numpy(), cached / 127.5 - 1, atol=1e-5)


def test_flip_happens_about_half_the_time():
    cached = tf.constant(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3))
    flip_only = Augmentation(min_area=1.0, aspect_ratio=(1.0, 1.0), color_jitter=False)
    flipped = 0
    for i in range(40):
        out = augment_one(cached, 8, tf.constant([i, 0]), flip_only).numpy()
        flipped += bool(out[0, 0, 0] > out[0, -1, 0])
    assert 8 <= flipped <= 32


def whole_image_params(batch, **overrides):
    params = dict(box=tf.constant([[0.0, 0.0, 1.0, 1.0]] * batch), flip=tf.zeros([batch]),
                  brightness=tf.zeros([batch]), saturation=tf.ones([batch]),
                  hue=tf.zeros([batch]), contrast=tf.ones([batch]))
    params.update({k: tf.constant(v, tf.float32) for k, v in overrides.items()})
    return params


def test_colour_jitter_matches_tf_image_brightness_then_contrast():
    image = np.random.default_rng(3).integers(40, 200, (1, 9, 9, 3), dtype=np.uint8)
    params = whole_image_params(1, brightness=[0.1], contrast=[1.3])
    out = preprocessing.apply_augmentation(tf.constant(image), params, 9).numpy()
    expected = tf.image.adjust_contrast(tf.image.adjust_brightness(image / 255.0, 0.1), 1.3)
    np.testing.assert_allclose(out, np.clip(expected.numpy(), 0, 1) * 2 - 1, atol=1e-5)


def test_zero_saturation_gives_rec601_luma_and_a_full_hue_turn_changes_nothing():
    image = np.random.default_rng(4).integers(0, 256, (2, 5, 5, 3), dtype=np.uint8)
    params = whole_image_params(2, saturation=[0.0, 1.0], hue=[0.0, 1.0])
    out = preprocessing.apply_augmentation(tf.constant(image), params, 5).numpy()
    luma = image[0] @ np.array([0.299, 0.587, 0.114]) / 127.5 - 1
    for channel in range(3):
        np.testing.assert_allclose(out[0, ..., channel], luma, atol=1e-4)
    np.testing.assert_allclose(out[1], image[1] / 127.5 - 1, atol=1e-4)


def test_flip_is_an_exact_mirror_of_the_same_crop():
    image = np.random.default_rng(5).integers(0, 256, (1, 20, 20, 3), dtype=np.uint8)
    box = [[0.1, 0.2, 0.8, 0.7]]
    plain = preprocessing.apply_augmentation(tf.constant(image), whole_image_params(
        1, box=box), 12).numpy()
    mirrored = preprocessing.apply_augmentation(tf.constant(image), whole_image_params(
        1, box=box, flip=[1.0]), 12).numpy()
    np.testing.assert_allclose(mirrored, plain[:, :, ::-1], atol=1e-5)


def test_shrinking_for_the_cache_averages_the_pixels_each_output_covers():
    size = preprocessing.cache_size(32)  # 37
    image = np.random.default_rng(6).integers(0, 256, (2 * size, 2 * size, 3), dtype=np.uint8)
    out = preprocessing.resize_for_cache(tf.constant(image), 32).numpy()
    block_means = image.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
    assert out.dtype == np.uint8 and out.shape == (size, size, 3)
    np.testing.assert_allclose(out, np.round(block_means), atol=1)


@pytest.mark.parametrize("hue", [0.0, 0.05, 0.2])
def test_hue_shifts_stay_within_the_recipes_range(hue):
    params = preprocessing.sample_augmentation(
        4096, tf.constant([5, 6]), Augmentation(hue=hue))
    shifts = params["hue"].numpy()
    assert np.abs(shifts).max() <= hue + 1e-7
    if hue:  # uniform over the whole range, both ways
        assert np.abs(shifts).max() > 0.95 * hue and abs(shifts.mean()) < 0.05 * hue
    else:
        assert not shifts.any()


PAD = Augmentation(crop="pad", pad=4, color_jitter=False)


def _find_shift(original, augmented, pad):
    """(flipped, dy, dx) such that `augmented` is `original`, maybe mirrored, moved by (dy, dx)
    with zeros where it moved in from outside; None if no shift within `pad` gives it."""
    size = original.shape[0]
    for flipped in (False, True):
        padded = np.zeros((size + 2 * pad, size + 2 * pad, 3), np.float32)
        padded[pad:pad + size, pad:pad + size] = original
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                view = padded[pad + dy:pad + dy + size, pad + dx:pad + dx + size]
                if flipped:
                    view = view[:, ::-1]
                if np.abs(view - augmented).max() < 1e-3:
                    return flipped, dy, dx
    return None


def test_pad_crop_keeps_the_size_shifts_at_most_4_px_and_covers_every_shift():
    # 400 augmentations of one random 32 px image: each must be the image (maybe mirrored) moved
    # by a whole number of pixels in -4..4 with black coming in; all 81 shifts appear (each has
    # probability 1/81, so missing one in 400 draws has probability < 81 * (80/81)^400 < 1e-4).
    size, draws = 32, 400
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3)).astype(np.float32)
    images = tf.constant(np.repeat(image[None], draws, 0).astype(np.uint8))
    params = preprocessing.sample_augmentation(draws, tf.constant([3, 4], tf.int64), PAD, size)
    out = preprocessing.apply_augmentation(images, params, size, PAD).numpy()
    assert out.shape == (draws, size, size, 3)
    pixels = (out + 1.0) * 127.5
    shifts = [_find_shift(image, pixels[i], 4) for i in range(draws)]
    assert None not in shifts
    assert {(dy, dx) for _, dy, dx in shifts} == {(dy, dx) for dy in range(-4, 5)
                                                  for dx in range(-4, 5)}
    flipped = sum(f for f, _, _ in shifts)
    assert 140 < flipped < 260  # about half mirrored (binomial 400 x 0.5: 6 sd either side)


def test_pad_crop_is_evaluated_on_the_whole_image_at_its_own_size():
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    assert preprocessing.cache_size(32, PAD.eval_fraction) == 32
    evaluated = preprocessing.preprocess_for_eval(tf.constant(image), 32, PAD.eval_fraction)
    np.testing.assert_allclose(evaluated.numpy(), image / 127.5 - 1.0, atol=1e-6)


def test_unknown_crop_kind_is_refused():
    with pytest.raises(ValueError, match="Unknown crop 'random'; valid: inception, pad"):
        Augmentation(crop="random")
