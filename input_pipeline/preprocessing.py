"""Decoding and augmentation, shared by the training pipeline, evaluation and the exported model.

Images are cached as squares of `cache_size(image_size)` pixels, so the evaluation's central 87.5%
crop of a cached image is exactly `image_size` (224 from 256, as "resize 256, crop 224" does).
"""
import dataclasses
import math

import tensorflow as tf

EVAL_CROP_FRACTION = 0.875


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training augmentation (TF-slim's inception preprocessing, with REFERENCE.md's ranges)."""
    min_area: float = 0.08
    max_area: float = 1.0
    aspect_ratio: tuple = (3 / 4, 4 / 3)
    flip: bool = True
    color_jitter: bool = True


def cache_size(image_size):
    return int(math.ceil(image_size / EVAL_CROP_FRACTION))


def decode_image(encoded):
    """Encoded JPEG / PNG / GIF / BMP bytes -> uint8 [H, W, 3] RGB, whatever the file's extension.

    Grayscale and CMYK JPEGs and RGBA / palette PNGs all come out as 3-channel RGB; a GIF gives
    its first frame. Raises InvalidArgumentError on data that is not a readable image.
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize_for_cache(image, image_size):
    """Squashes to a `cache_size` square (all of the image kept; crops fix the aspect later)."""
    size = cache_size(image_size)
    image = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def scale_to_unit_range(image):
    """uint8 or [0, 255] float -> float32 in [-1, 1], the models' input range."""
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def eval_crop(cached, image_size):
    """Central 87.5% crop of a cached square, resized to `image_size`, scaled to [-1, 1]."""
    image = tf.image.central_crop(cached, EVAL_CROP_FRACTION)
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    return scale_to_unit_range(image)


def preprocess_for_eval(image, image_size):
    """Any uint8 [H, W, 3] image -> the evaluation input: the same path the pipeline takes."""
    return eval_crop(resize_for_cache(image, image_size), image_size)


def augment_for_train(cached, image_size, seed, augmentation=Augmentation()):
    """Random area/aspect crop resized to `image_size`, flip, colour jitter; then [-1, 1].

    `seed` is a [2] int tensor: stateless ops make every epoch's crops reproducible from it.
    """
    seeds = tf.random.experimental.stateless_split(seed, 6)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(cached), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seeds[0],
        min_object_covered=0.0, aspect_ratio_range=augmentation.aspect_ratio,
        area_range=(augmentation.min_area, augmentation.max_area), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    image = tf.slice(cached, begin, size)
    image = tf.image.resize(image, [image_size, image_size], method="bilinear") / 255.0
    if augmentation.flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    if augmentation.color_jitter:
        image = tf.image.stateless_random_brightness(image, 32 / 255, seeds[2])
        image = tf.image.stateless_random_saturation(image, 0.5, 1.5, seeds[3])
        image = tf.image.stateless_random_hue(image, 0.2, seeds[4])
        image = tf.image.stateless_random_contrast(image, 0.5, 1.5, seeds[5])
        image = tf.clip_by_value(image, 0.0, 1.0)
    return image * 2.0 - 1.0
