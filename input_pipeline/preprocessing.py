"""Decoding and augmentation, shared by the training pipeline, evaluation and the exported model.

Two kinds of training crop (docs/design.md, "The two crops"):
- "inception": images are cached as squares of `cache_size(image_size)` pixels, so the
  evaluation's central 87.5% crop of a cached image is exactly `image_size` (224 from 256, as
  "resize 256, crop 224" does); training takes Inception's random area crops of the square.
- "pad": the CIFAR way for images already at the input size: the cache is the whole image at
  `image_size`, training shifts it by up to `pad` pixels each way (zero padding, then a random
  crop of the original size), and evaluation sees the whole image.

--augment_policy (RandAugment or AugMix, input_pipeline/policies.py) follows the crop, flip and
colour; random erasing (--random_erasing) comes after it, on the [-1, 1] training input:
keras.layers.RandomErasing's own transform_images, with boxes drawn statelessly beside the other
parameters. MixUp and CutMix (--mixup, --cutmix) then mix the batch and its labels
(policies.mix), in the pipeline or on the towers alike.
"""
import dataclasses
import functools
import math
from typing import Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from input_pipeline import policies

EVAL_CROP_FRACTION = 0.875
CROP_KINDS = ("inception", "pad")


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training augmentation: TF-slim's inception preprocessing, with the ranges in
    docs/reference.md, "Preprocessing (TF-slim inception preprocessing, torchvision, MindSpore)"."""
    min_area: float = 0.08
    max_area: float = 1.0
    aspect_ratio: tuple = (3 / 4, 4 / 3)
    flip: bool = True
    # Alternating flips (K. Jordan's airbench): each image's own seeded coin decides its first
    # epoch's flip, and every later epoch flips it the other way, so over two epochs every image
    # is seen both ways, where independent coins leave a quarter of them one way only. False
    # in a config.json written before it existed.
    alternate_flips: bool = False
    color_jitter: bool = True
    hue: float = 0.2  # largest hue shift, as a fraction of the colour circle
    crop: str = "inception"  # one of CROP_KINDS
    pad: int = 4  # the largest shift in pixels, for crop="pad"
    # The probability that a training image has a box erased (keras.layers.RandomErasing, after
    # the crop, flip and colour); 0: never. 0 in a config.json written before it existed.
    random_erasing: float = 0.0
    # input_pipeline/policies.py; all off in a config.json written before they existed.
    # MixUp's and CutMix's Beta(alpha, alpha) parameter; 0: off; both: each batch takes one.
    mixup: float = 0.0
    cutmix: float = 0.0
    policy: str = "none"  # one of policies.POLICIES, on each image before random erasing
    magnitude: Optional[float] = None  # the layer's `factor`; None: policies.DEFAULT_MAGNITUDE
    num_ops: int = policies.DEFAULT_NUM_OPS  # RandAugment's ops per image

    def __post_init__(self) -> None:
        if self.crop not in CROP_KINDS:
            raise ValueError(f"Unknown crop {self.crop!r}; valid: {', '.join(CROP_KINDS)}")
        if self.alternate_flips and not self.flip:
            raise ValueError("alternate_flips needs flip: it decides which epochs mirror an "
                             "image")
        if not 0.0 <= self.random_erasing <= 1.0:
            raise ValueError(f"random_erasing is a probability in [0, 1], got "
                             f"{self.random_erasing!r}")
        # The layers' own bounds: CutMix's factor lies in [0, 1], and MixUp's alpha is
        # documented there too; so does both policies' factor.
        for name in ("mixup", "cutmix", "magnitude"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if self.policy not in policies.POLICIES:
            raise ValueError(f"Unknown augment policy {self.policy!r}; valid: "
                             f"{', '.join(policies.POLICIES)}")
        if not (isinstance(self.num_ops, int) and self.num_ops >= 1):
            raise ValueError(f"num_ops must be an integer >= 1, got {self.num_ops!r}")
        if self.magnitude is None and self.policy != "none":
            # Recorded resolved (config.json's augmentation says what the run used); frozen, so
            # set as dataclasses' own __init__ sets fields.
            object.__setattr__(self, "magnitude", policies.DEFAULT_MAGNITUDE[self.policy])

    @property
    def eval_fraction(self) -> float:
        """The share of the cached square that evaluation sees (and so the cache's margin)."""
        return 1.0 if self.crop == "pad" else EVAL_CROP_FRACTION

    @property
    def resizes(self) -> bool:
        """Whether a training crop is resized to the model's input (Inception's area crops) or
        the whole image only shifted (pad): what augmenting on a CPU tower costs depends on it."""
        return self.crop != "pad"


def cache_size(image_size: int, eval_fraction: float = EVAL_CROP_FRACTION) -> int:
    return int(math.ceil(image_size / eval_fraction))


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG / PNG / GIF / BMP bytes -> uint8 [H, W, 3] RGB, whatever the file's extension.

    Grayscale and CMYK JPEGs and RGBA / palette PNGs all come out as 3-channel RGB; a GIF gives
    its first frame. Raises InvalidArgumentError on data that is not a readable image.
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize_for_cache(image: tf.Tensor, image_size: int,
                     eval_fraction: float = EVAL_CROP_FRACTION) -> tf.Tensor:
    """Squashes to a `cache_size` square (all of the image kept; crops fix the aspect later)."""
    size = cache_size(image_size, eval_fraction)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    # Shrinking, the area filter (each output pixel the mean of the input it covers) antialiases
    # like bilinear-with-antialias at about half the cost, the biggest part of the first epoch.
    image = tf.cond((height >= size) & (width >= size),
                    lambda: tf.image.resize(image, [size, size], method="area"),
                    lambda: tf.image.resize(image, [size, size], method="bilinear", antialias=True))
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def scale_to_unit_range(image: tf.Tensor) -> tf.Tensor:
    """uint8 or [0, 255] float -> float32 in [-1, 1], the models' input range."""
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def eval_crop(cached: tf.Tensor, image_size: int,
              eval_fraction: float = EVAL_CROP_FRACTION) -> tf.Tensor:
    """Central crop (`eval_fraction` of each side) of a cached square, resized to `image_size`,
    scaled to [-1, 1]."""
    if eval_fraction < 1.0:
        cached = tf.image.central_crop(cached, eval_fraction)
    image = tf.image.resize(cached, [image_size, image_size], method="bilinear")
    return scale_to_unit_range(image)


def preprocess_for_eval(image: tf.Tensor, image_size: int,
                        eval_fraction: float = EVAL_CROP_FRACTION) -> tf.Tensor:
    """Any uint8 [H, W, 3] image -> the evaluation input: the same path the pipeline takes."""
    return eval_crop(resize_for_cache(image, image_size, eval_fraction), image_size,
                     eval_fraction)


# RGB <-> YIQ: saturation scales the two chroma axes (I, Q) and hue rotates them, so both are one
# 3x3 colour matrix per image instead of a round trip through HSV (several times faster).
# (NumPy, not TF constants: nothing may touch TensorFlow's runtime at import, see devices.py.)
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114],
                        [0.596, -0.274, -0.322],
                        [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)
_CROP_ATTEMPTS = 10
# Random erasing's boxes: Keras' default `scale`, each side sqrt(U(0.02, 0.33)) of the image's
# (14% to 57%), as RandomErasing.get_random_transformation draws them. The fill is 0, mid-grey in
# [-1, 1] and the data's mean near enough (Cutout's choice), rather than Keras' default of noise:
# a constant needs nothing shipped to a tower, and the host and the device fill alike.
ERASING_SCALE = (0.02, 0.33)
ERASING_FILL = 0.0


def sample_augmentation(batch_size: tf.Tensor, seed: tf.Tensor,
                        augmentation: Augmentation = Augmentation(),
                        image_size: Optional[int] = None) -> Dict[str, tf.Tensor]:
    """Random augmentation parameters for a batch of `batch_size` images, from a [2] int `seed`
    (stateless: every epoch's crops are reproducible). float32 [B] tensors, except box [B, 4]:
    the crop as normalised (y1, x1, y2, x2) of the cached square. `image_size` is needed for
    crop="pad" (a pixel's share of the square).

    Crops follow Inception's sampler: area fraction uniform in [min_area, max_area], log aspect
    ratio uniform, the first of 10 tries that fits, else the whole image; position uniform. With
    crop="pad", a whole-image box shifted by a whole number of pixels, uniform in -pad..pad on
    each axis. With `augmentation.random_erasing`, also erase [B] (1: erased) and erase_box
    [B, 4], the erased box as normalised (y1, x1, y2, x2) of the input, from their own seed:
    the other parameters are those drawn without it. With a policy or mixing, also their
    seeds (policies.sample_seeds), from seeds of their own likewise.
    """
    seeds = tf.random.experimental.stateless_split(seed, 10)

    def draw(i: int, low: float, high: float, shape: Optional[list] = None) -> tf.Tensor:
        return tf.random.stateless_uniform(shape or [batch_size], seeds[i], low, high)
    if augmentation.crop == "pad":
        box = _shifted_boxes(batch_size, seeds[9], augmentation.pad, image_size)
        params = _with_flip_and_jitter(dict(box=box), batch_size, draw, augmentation)
        params.update(policies.sample_seeds(batch_size, seed, augmentation))
        return _with_erasing(params, batch_size, seed, augmentation)
    tries = [batch_size, _CROP_ATTEMPTS]
    area = draw(0, augmentation.min_area, augmentation.max_area, tries)
    low, high = augmentation.aspect_ratio
    ratio = tf.exp(draw(1, math.log(low), math.log(high), tries))
    width, height = tf.sqrt(area * ratio), tf.sqrt(area / ratio)
    fits = (width <= 1.0) & (height <= 1.0)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    any_fits = tf.reduce_any(fits, axis=1)
    width = tf.where(any_fits, tf.gather(width, first, batch_dims=1), 1.0)
    height = tf.where(any_fits, tf.gather(height, first, batch_dims=1), 1.0)
    top, left = draw(2, 0.0, 1.0) * (1.0 - height), draw(3, 0.0, 1.0) * (1.0 - width)
    box = tf.stack([top, left, top + height, left + width], axis=1)
    params = _with_flip_and_jitter(dict(box=box), batch_size, draw, augmentation)
    params.update(policies.sample_seeds(batch_size, seed, augmentation))
    return _with_erasing(params, batch_size, seed, augmentation)


def alternating_flips(records: tf.Tensor, coins: tf.Tensor, epoch: tf.Tensor) -> tf.Tensor:
    """[B] flips (1: mirrored) of the images numbered `records` in `epoch`: the image's coin
    (`coins`, one uniform draw per record, the same every epoch) in even epochs, its opposite
    in odd ones."""
    heads = tf.gather(coins, records) < 0.5
    odd = tf.math.floormod(tf.cast(epoch, tf.int64), 2) == 1
    return tf.cast(tf.math.logical_xor(heads, odd), tf.float32)


def _shifted_boxes(batch_size: tf.Tensor, seed: tf.Tensor, pad: int, image_size: int):
    """[B, 4] boxes of a whole `image_size` square moved by dy, dx in -pad..pad pixels.

    crop_and_resize samples output pixel i of a box (y1, y2) at y1 * (C - 1) + i * (y2 - y1) *
    (C - 1) / (S - 1); with C = S and y1 = dy / (C - 1), y2 = y1 + 1 that is pixel dy + i
    exactly (no interpolation), and pixels off the square read 0: the zero padding.
    """
    shift = tf.random.stateless_uniform([batch_size, 2], seed, -pad, pad + 1, dtype=tf.int32)
    start = tf.cast(shift, tf.float32) / float(max(image_size - 1, 1))
    return tf.concat([start, start + 1.0], axis=1)


def _with_flip_and_jitter(params: dict, batch_size: tf.Tensor, draw: Callable,
                          augmentation: Augmentation):
    params.update(flip=tf.zeros([batch_size]), brightness=tf.zeros([batch_size]),
                  saturation=tf.ones([batch_size]), hue=tf.zeros([batch_size]),
                  contrast=tf.ones([batch_size]))
    if augmentation.flip:
        params["flip"] = tf.cast(draw(4, 0.0, 1.0) < 0.5, tf.float32)
    if augmentation.color_jitter:
        params.update(brightness=draw(5, -32 / 255, 32 / 255), saturation=draw(6, 0.5, 1.5),
                      hue=draw(7, -augmentation.hue, augmentation.hue),
                      contrast=draw(8, 0.5, 1.5))
    return params


def _with_erasing(params: dict, batch_size: tf.Tensor, seed: tf.Tensor,
                  augmentation: Augmentation):
    """`params` and, with random erasing, each image's erased box and whether it is erased.

    RandomErasing.get_random_transformation draws these itself, but it cannot draw them from a
    seed tensor: keras.random's draw_seed takes only a Python int (one erasing traced into the
    graph for every batch), a SeedGenerator (a variable: stateful, so neither reproducible per
    batch under a parallel map or on resume, nor creatable in a tf.data function) or None (the
    global generator); a [2] tensor is refused (`seed or ...` even fails on it first). And given
    one seed, it would reuse it for every draw of a shape (the box's x and y positions and the
    erase-or-not threshold all the same number). So they are drawn here as it draws them, from
    the batch's seed folded with 10 (the split above keeps its 10 draws unchanged), and
    `apply_augmentation` hands them to its transform_images.
    """
    probability = augmentation.random_erasing
    if probability == 0:
        return params
    seeds = tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(seed, 10), 3)
    low, high = ERASING_SCALE
    size = tf.sqrt(tf.random.stateless_uniform([batch_size, 2], seeds[0], low, high))
    start = tf.random.stateless_uniform([batch_size, 2], seeds[1]) * (1.0 - size)  # (y, x)
    erase = tf.random.stateless_uniform([batch_size], seeds[2]) < probability
    params.update(erase=tf.cast(erase, tf.float32),
                  erase_box=tf.concat([start, start + size], axis=1))
    return params


@functools.lru_cache(maxsize=1)
def erasing_layer() -> keras.layers.RandomErasing:
    """The keras.layers.RandomErasing that erases the training input ([-1, 1], float32 whatever
    the precision policy), made once and outside any graph: its SeedGenerator (unused, see
    `_with_erasing`) is a variable, which a tf.data function or a tower's step cannot create.
    InputPipeline makes it when it is built, before a tower's step could."""
    with tf.init_scope():
        return keras.layers.RandomErasing(scale=ERASING_SCALE, fill_value=ERASING_FILL,
                                          value_range=(-1.0, 1.0), dtype="float32")


def _erased(images: tf.Tensor, params: Dict[str, tf.Tensor], augmentation: Augmentation):
    """[B, S, S, 3] training inputs with random erasing applied by RandomErasing.transform_images:
    the pixels of each erased image's box (those whose row y and column x have y1 <= y / S < y2,
    x1 <= x / S < x2, as Keras' own mask) set to the fill."""
    if augmentation.random_erasing == 0:
        return images
    layer = erasing_layer()
    side = tf.shape(images)[1]
    grid = tf.range(side, dtype=tf.float32)
    box = params["erase_box"] * tf.cast(side, tf.float32)  # in pixels, like Keras' bounds
    rows = (grid >= box[:, 0, None]) & (grid < box[:, 2, None])              # [B, S]
    columns = (grid >= box[:, 1, None]) & (grid < box[:, 3, None])           # [B, S]
    masks = rows[:, :, None, None] & columns[:, None, :, None]               # [B, S, S, 1]
    transformation = dict(apply_erasing=params["erase"] > 0.5, batch_masks=masks,
                          fill_value=tf.constant(layer.fill_value, tf.float32))
    return layer.transform_images(images, transformation, training=True)


def apply_augmentation(images: tf.Tensor, params: Dict[str, tf.Tensor], image_size: int,
                       augmentation: Augmentation = Augmentation()) -> tf.Tensor:
    """Cached uint8 squares [B, C, C, 3] and their parameters -> [B, S, S, 3] in [-1, 1]: each
    image's own crop resized to the input size, flip, colour jitter, all as batch operations,
    then the augmentation's policy (RandAugment, AugMix) and random erasing when it has them.
    MixUp and CutMix are not here: they change the labels too (policies.mix).

    Two tricks keep this at a few ops per batch (benchmarks/pipeline.py measures it): a crop box
    with x1 > x2 is sampled mirrored, so the flip is free; and brightness, the colour matrix,
    contrast about the mean and the scaling to [-1, 1] compose into one affine map per image,
    y = A x + b, applied as one batched matmul.
    """
    batch = tf.shape(images)[0]
    box = params["box"]
    if augmentation.flip:
        mirrored = tf.gather(box, [0, 3, 2, 1], axis=1)
        box = tf.where(params["flip"][:, None] > 0.5, mirrored, box)
    crops = tf.image.crop_and_resize(images, box, tf.range(batch), [image_size, image_size])
    if not augmentation.color_jitter:
        return _erased(policies.apply_policy(crops * (2.0 / 255.0) - 1.0, params, augmentation),
                       params, augmentation)
    angle = params["hue"] * 2.0 * math.pi  # hue delta as a fraction of the colour circle
    cos, sin, s = tf.cos(angle), tf.sin(angle), params["saturation"]
    zero, one = tf.zeros_like(s), tf.ones_like(s)
    chroma = tf.stack([tf.stack([one, zero, zero], -1),
                       tf.stack([zero, s * cos, -s * sin], -1),
                       tf.stack([zero, s * sin, s * cos], -1)], -2)   # [B, 3, 3]
    colour = tf.matmul(tf.matmul(tf.constant(_YIQ_TO_RGB), chroma), tf.constant(_RGB_TO_YIQ))
    # In [0, 1] units: z = M (x + brightness), then contrast k about z's mean, then 2 z - 1:
    # 2 k M x + 2 (1 - k) M mean(x) + 2 brightness M 1 - 1, with x = crop / 255.
    pixels = tf.reshape(crops, [batch, image_size * image_size, 3])
    contrast = params["contrast"][:, None, None]
    mean = tf.reduce_mean(pixels, axis=1, keepdims=True)                     # [B, 1, 3]
    weights = (2.0 / 255.0) * contrast * colour
    bias = (tf.matmul(mean, (2.0 / 255.0) * (1.0 - contrast) * colour, transpose_b=True)
            + 2.0 * params["brightness"][:, None, None] * tf.reduce_sum(colour, -1)[:, None, :]
            - 1.0)
    pixels = tf.clip_by_value(tf.matmul(pixels, weights, transpose_b=True) + bias, -1.0, 1.0)
    pixels = tf.reshape(pixels, [batch, image_size, image_size, 3])
    return _erased(policies.apply_policy(pixels, params, augmentation), params, augmentation)

