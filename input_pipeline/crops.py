"""Multi-crop evaluation inputs: 1 centre crop, 10 crops, or the paper's 144 crops per image.

1 and 10 crops start from the same `cache_size` square the training pipeline caches; the centre
one of the 10 is exactly the single evaluation crop, so 10-crop differs from 1-crop only by
averaging. (A model trained with crop="pad" is evaluated on the whole image, `eval_fraction` 1:
its five crops are then all the whole image.) 144 crops follow Section 7 of the paper: the
shorter side resized to 256, 288, 320 and 352 (scaled by image_size / 224); the left, centre
and right (or top, middle, bottom) squares; of each square the 4 corners and the centre at the
input size plus the square resized to it; each also mirrored: 4 x 3 x 6 x 2 = 144.
A model trained without flips (the digits: a mirrored 2 is not a 2) is scored without the mirrored
half: 5 and 72 crops.

Test-time augmentation (--tta) works on the model inputs instead, inside the evaluation step and
the exported model: each image and its mirror ("mirror"), and both shifted by a pixel up-left and
down-right ("mirror_shift"), their softmax averaged.
"""
import tensorflow as tf

from input_pipeline import image_header
from input_pipeline.preprocessing import (
    EVAL_CROP_FRACTION,
    decode_image,
    resize_for_cache,
    scale_to_unit_range,
)

CROP_COUNTS = (1, 10, 144)
PAPER_SCALES = (256, 288, 320, 352)
TTA_POLICIES = ("none", "mirror", "mirror_shift")
# One pixel: the views stay close to the image for models trained with 2-4 px shifts, as in
# the fast CIFAR-10 recipes (docs/reference.md, "Fast CIFAR-10 training").
TTA_SHIFT = 1


def _central_crop_size(size, eval_fraction=EVAL_CROP_FRACTION):
    # tf.image.central_crop's arithmetic, so the centre crop here equals `eval_crop`'s.
    return size - 2 * int((size - size * eval_fraction) / 2)


def _five_crops(square, crop, out_size):
    """4 corners + centre of a square image, each `crop` pixels, resized to `out_size`."""
    size = square.shape[0]
    far, mid = size - crop, (size - crop) // 2
    boxes = [(mid, mid), (0, 0), (0, far), (far, 0), (far, far)]
    crops = [square[y:y + crop, x:x + crop] for y, x in boxes]
    return [tf.image.resize(c, [out_size, out_size], method="bilinear") for c in crops]


def _with_mirrors(crops, mirror):
    return crops + [tf.image.flip_left_right(c) for c in crops] if mirror else crops


def ten_crops(image, image_size, mirror=True, eval_fraction=EVAL_CROP_FRACTION):
    """[10, S, S, 3] in [-1, 1]: centre + 4 corners, then the same mirrored. First = 1-crop."""
    square = resize_for_cache(image, image_size, eval_fraction)
    crops = _five_crops(square, _central_crop_size(square.shape[0], eval_fraction), image_size)
    return scale_to_unit_range(tf.stack(_with_mirrors(crops, mirror)))


def one_crop(image, image_size, mirror=True, eval_fraction=EVAL_CROP_FRACTION):
    return ten_crops(image, image_size, mirror=False, eval_fraction=eval_fraction)[:1]


def paper_144_crops(image, image_size, mirror=True, eval_fraction=EVAL_CROP_FRACTION):
    """[144, S, S, 3] in [-1, 1], the paper's multi-scale crops (see the module docstring)."""
    image = tf.cast(image, tf.float32)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    crops = []
    for scale in PAPER_SCALES:
        short = round(scale * image_size / 224)
        ratio = tf.cast(tf.maximum(height, width), tf.float32) / tf.cast(
            tf.minimum(height, width), tf.float32)
        long = tf.cast(tf.round(short * ratio), tf.int32)
        portrait = height > width
        new_h = tf.where(portrait, long, short)
        new_w = tf.where(portrait, short, long)
        resized = tf.image.resize(image, tf.stack([new_h, new_w]), method="bilinear",
                                  antialias=True)
        for position in (0.0, 0.5, 1.0):  # left / centre / right, or top / middle / bottom
            offset = tf.cast(tf.round(position * tf.cast(long - short, tf.float32)), tf.int32)
            y = tf.where(portrait, offset, 0)
            x = tf.where(portrait, 0, offset)
            square = tf.image.crop_to_bounding_box(resized, y, x, short, short)
            square = tf.ensure_shape(square, [short, short, 3])
            six = _five_crops(square, image_size, image_size)
            six.append(tf.image.resize(square, [image_size, image_size], method="bilinear"))
            crops += _with_mirrors(six, mirror)
    return scale_to_unit_range(tf.clip_by_value(tf.stack(crops), 0, 255))


def crops_fn(count, mirror=True, eval_fraction=EVAL_CROP_FRACTION):
    """The function image -> [count, S, S, 3] for --crops=count ([count / 2, ...] for 10 and 144
    without `mirror`). `eval_fraction` is the training crop's (preprocessing.Augmentation)."""
    functions = {1: one_crop, 10: ten_crops, 144: paper_144_crops}
    if count not in functions:
        raise ValueError(f"--crops must be one of {CROP_COUNTS}, got {count}")
    return lambda image, image_size: functions[count](image, image_size, mirror=mirror,
                                                      eval_fraction=eval_fraction)


def crops_per_image(count, mirror=True):
    return count if mirror or count == 1 else count // 2


def multi_crop_dataset(examples, image_size, crops, batch_size, mirror=True,
                       eval_fraction=EVAL_CROP_FRACTION,
                       max_image_pixels=image_header.MAX_IMAGE_PIXELS):
    """(crops [B, C, S, S, 3], labels [B]) straight from the files (or arrays); unreadable files,
    and those whose header declares more than `max_image_pixels` (never decoded, as in the
    first pass), are dropped with their labels. Without `mirror` the mirrored half of the crops
    is left out."""
    make_crops = crops_fn(crops, mirror, eval_fraction)

    def decoded(path):
        data = tf.io.read_file(path)
        pixels = image_header.declared_size(data)[2]
        fits = (pixels >= image_header.NOT_AN_IMAGE) & (pixels <= max_image_pixels)
        with tf.control_dependencies([tf.debugging.Assert(fits, ["declared size refused"])]):
            return decode_image(tf.identity(data))
    if examples.images is not None:
        ds = tf.data.Dataset.from_tensor_slices((examples.images, examples.labels))
    else:
        ds = tf.data.Dataset.from_tensor_slices((examples.paths, examples.labels)).map(
            lambda path, label: (decoded(path), label))
    ds = ds.map(lambda image, label: (make_crops(image, image_size), label),
                num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def tta_views(images: tf.Tensor, tta: str) -> tf.Tensor:
    """[B, V, S, S, 3] views of model inputs [B, S, S, 3] in [-1, 1] for --tta=`tta` (one of
    TTA_POLICIES): the images first, then their mirrors; "mirror_shift" adds both moved by
    TTA_SHIFT pixels down-right and up-left, the uncovered border black (-1), as the training
    shifts' zero padding is."""
    if tta not in TTA_POLICIES:
        raise ValueError(f"--tta must be one of {TTA_POLICIES}, got {tta!r}")
    views = [images]
    if tta in ("mirror", "mirror_shift"):
        views.append(tf.image.flip_left_right(images))
    if tta == "mirror_shift":
        size, s = tf.shape(images)[1], TTA_SHIFT
        for image in views[:2]:
            padded = tf.pad(image, [[0, 0], [s, s], [s, s], [0, 0]], constant_values=-1.0)
            views.append(padded[:, :size, :size])  # content moved down-right
            views.append(padded[:, 2 * s:2 * s + size, 2 * s:2 * s + size])  # up-left
    return tf.stack(views, axis=1)
