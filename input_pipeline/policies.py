"""Augmentation policies by Keras' own layers, drawn from the batch's seed like the crops.

- --augment_policy: keras.layers.RandAugment or keras.layers.AugMix on each training image after
  its crop, flip and colour, before random erasing. Each image has its own seed (so its own ops),
  and the layers see it in their default value range, 0..255.
- --mixup / --cutmix: keras.layers.MixUp or keras.layers.CutMix on the batch, last (after random
  erasing, as timm mixes the collated batch); the labels become soft targets [B, classes], the
  mix of the two images' one-hot labels. With both, each batch takes one of them, 50/50.

Keras' layers draw their randomness through a keras.random.SeedGenerator, a variable: stateful,
so neither reproducible per batch (under a parallel map, or on resume) nor creatable in a tf.data
or tower function; their `seed` argument takes only a Python int (one draw traced in for every
batch). `TensorSeeds` is a SeedGenerator without the variable: each draw a layer asks of it is the
batch's seed tensor folded with the draw's number, so the layers' own get_random_transformation
runs statelessly, the same on the host and on a tower, and again on resume.
"""
import functools
from typing import Dict, Tuple

import keras
import tensorflow as tf

POLICIES = ("none", "randaugment", "augmix")
# The strength of each policy when --augment_magnitude is not given: Keras' defaults, RandAugment
# factor=0.5 (the paper's magnitude 9 of timm's 0..10 scale, near enough) and AugMix factor=0.3
# (the paper's severity 3 of 10). RandAugment's ops per image: Keras' and the paper's 2.
DEFAULT_MAGNITUDE = {"randaugment": 0.5, "augmix": 0.3}
DEFAULT_NUM_OPS = 2
# What the policies' layers see: their default value range, the pixels of a uint8 image.
VALUE_RANGE = (0.0, 255.0)


class TensorSeeds(keras.random.SeedGenerator):
    """A SeedGenerator whose n-th draw is `seed` folded with n: a Keras layer handed one draws
    statelessly from a [2] seed tensor. Made per batch (or image) inside the graph, so it cannot
    hold a variable: the parent's __init__, which makes one, is not called."""

    def __init__(self, seed: tf.Tensor) -> None:  # no super().__init__(): see above
        self._seed = tf.cast(seed, tf.int64)
        self._draws = 0

    def next(self, ordered: bool = True) -> tf.Tensor:
        self._draws += 1  # counted while tracing: the same numbers every batch, other seeds
        return tf.random.experimental.stateless_fold_in(self._seed, self._draws)


# -- The layers: made once, eagerly and in float32 (their SeedGenerators are variables that a
# -- tf.data or tower function cannot create; InputPipeline makes them when it is built) ------
@functools.lru_cache(maxsize=None)
def policy_layer(policy: str, magnitude: float, num_ops: int) -> keras.layers.Layer:
    """The keras.layers.RandAugment or AugMix of `policy` at `magnitude` (their `factor`)."""
    with tf.init_scope():
        if policy == "randaugment":
            return keras.layers.RandAugment(value_range=VALUE_RANGE, num_ops=num_ops,
                                            factor=magnitude, dtype="float32")
        if policy == "augmix":
            return keras.layers.AugMix(value_range=VALUE_RANGE, factor=magnitude, dtype="float32")
    raise ValueError(f"Unknown augment policy {policy!r}; valid: {', '.join(POLICIES)}")


@functools.lru_cache(maxsize=None)
def mixup_layer(alpha: float) -> keras.layers.MixUp:
    with tf.init_scope():
        return keras.layers.MixUp(alpha=alpha, dtype="float32")


@functools.lru_cache(maxsize=None)
def cutmix_layer(alpha: float) -> keras.layers.CutMix:
    # factor=(alpha, alpha): CutMix draws its Beta's parameter uniformly from the factor's
    # range, so a range of one point is the paper's and timm's Beta(alpha, alpha).
    with tf.init_scope():
        return keras.layers.CutMix(factor=(alpha, alpha), dtype="float32")


def make_layers(augmentation) -> None:
    """Makes the layers `augmentation` uses now, eagerly (not in a tf.data or tower graph)."""
    if augmentation.policy != "none":
        policy_layer(augmentation.policy, policy_magnitude(augmentation), augmentation.num_ops)
    if augmentation.mixup:
        mixup_layer(augmentation.mixup)
    if augmentation.cutmix:
        cutmix_layer(augmentation.cutmix)


def policy_magnitude(augmentation) -> float:
    """The magnitude the policy runs at: the augmentation's (Augmentation fills in the policy's
    default), or the default of an object that left it None."""
    if augmentation.magnitude is not None:
        return augmentation.magnitude
    return DEFAULT_MAGNITUDE.get(augmentation.policy, 0.0)


# -- Parameters: what sample_augmentation adds for the policies and the mixing ---------------
def sample_seeds(batch_size: tf.Tensor, seed: tf.Tensor, augmentation) -> Dict[str, tf.Tensor]:
    """int64 [B, 2] seeds: policy_seed, each image's own for its policy, and mix_seed, whose
    first row seeds the mixing of whatever batch holds it (a tower's share of the batch with
    augment_on=device). Only what the augmentation uses is drawn, from `seed` folded with 11 and
    12 (the crops, flips, colours and erasing keep their own draws)."""
    params = {}
    if augmentation.policy != "none":
        params["policy_seed"] = tf.random.stateless_uniform(
            [batch_size, 2], tf.random.experimental.stateless_fold_in(seed, 11),
            minval=None, maxval=None, dtype=tf.int64)
    if augmentation.mixup or augmentation.cutmix:
        params["mix_seed"] = tf.random.stateless_uniform(
            [batch_size, 2], tf.random.experimental.stateless_fold_in(seed, 12),
            minval=None, maxval=None, dtype=tf.int64)
    return params


def mixes(augmentation) -> bool:
    """Whether `augmentation` mixes images, so its labels become soft targets."""
    return bool(augmentation.mixup or augmentation.cutmix)


# -- RandAugment and AugMix on each image ---------------------------------------------------
def apply_policy(images: tf.Tensor, params: Dict[str, tf.Tensor], augmentation) -> tf.Tensor:
    """[B, S, S, 3] training inputs in [-1, 1] -> the same with `augmentation.policy` applied
    to each image, from its own seed params["policy_seed"]."""
    if augmentation.policy == "none":
        return images
    layer = policy_layer(augmentation.policy, policy_magnitude(augmentation),
                         augmentation.num_ops)
    one = _randaugment_one if augmentation.policy == "randaugment" else _augmix_one

    def each(args: Tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        image, seed = args  # to the layers as a batch of one: some ops return one otherwise
        return tf.reshape(one(layer, image[None], seed), tf.shape(image))
    pixels = (images + 1.0) * 127.5  # [-1, 1] -> the layers' 0..255
    # One image at a time: each image its own ops, as in both papers (the layers, given a
    # batch, apply the same ops to all of it) and whatever share of the batch a tower holds.
    out = tf.map_fn(each, (pixels, params["policy_seed"]),
                    fn_output_signature=tf.TensorSpec(images.shape[1:], tf.float32))
    return tf.clip_by_value(out / 127.5 - 1.0, -1.0, 1.0)


def _randaugment_one(layer: keras.layers.RandAugment, image: tf.Tensor,
                     seed: tf.Tensor) -> tf.Tensor:
    """RandAugment of one image. Its draws by hand, as RandAugment.get_random_transformation
    makes them (the ops' indices, then each op's own transformation), because it ignores its
    `seed` argument and always draws from its own SeedGenerator; the transform is Keras'."""
    seeds = TensorSeeds(seed)
    names = layer._AUGMENT_LAYERS
    indices = keras.random.randint((layer.num_ops,), 0, len(names), seed=seeds)
    transforms = {name: getattr(layer, name).get_random_transformation(image, training=True,
                                                                        seed=seeds)
                  for name in names}
    return layer.transform_images(image, {"transforms": transforms, "layer_idxes": indices},
                                  training=True)


def _augmix_one(layer: keras.layers.AugMix, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """AugMix of one image, written out by hand from AugMix.get_random_transformation and
    transform_images: Keras picks each chain's ops with Python's `random` while tracing, so in
    a graph (a tf.data map, a tower's step) every batch would get the same chains for ever.
    Here each op (or none, as Keras' choice allows) is a stateless draw and tf.switch_case runs
    the chosen one of Keras' own op layers; the chain weights (Dirichlet) and the blend with the
    original (Beta) are drawn as Keras draws them."""
    seeds = TensorSeeds(seed)
    names = list(layer._augment_layers)
    chain_weights = layer._sample_from_dirichlet([layer.num_chains], layer.alpha, seeds)
    blend = keras.random.beta((), layer.alpha, layer.alpha, seed=seeds)
    ops = keras.random.randint((layer.num_chains, layer.chain_depth), 0, len(names) + 1,
                               seed=seeds)
    mixed = tf.zeros_like(image)
    for chain in range(layer.num_chains):
        chained = image
        for depth in range(layer.chain_depth):
            op_seed = seeds.next()

            def op(name: str, x: tf.Tensor = chained, s: tf.Tensor = op_seed) -> tf.Tensor:
                op_layer = getattr(layer, name)
                transformation = op_layer.get_random_transformation(x, training=True,
                                                                    seed=TensorSeeds(s))
                return tf.cast(op_layer.transform_images(x, transformation), tf.float32)
            branches = [functools.partial(op, name) for name in names]
            branches.append(lambda x=chained: x)  # Keras' `None`: no op at this depth
            chained = tf.switch_case(ops[chain, depth], branches)
            chained.set_shape(image.shape)
        mixed += chained * chain_weights[chain]
    out = blend * image + (1.0 - blend) * mixed
    return tf.clip_by_value(out, layer.value_range[0], layer.value_range[1])


# -- MixUp and CutMix on the batch -----------------------------------------------------------
def mix(images: tf.Tensor, labels: tf.Tensor, params: Dict[str, tf.Tensor], augmentation,
        num_classes: int) -> Tuple[tf.Tensor, tf.Tensor]:
    """Training inputs [B, S, S, 3] and int labels [B] -> the mixed inputs and float32 soft
    targets [B, num_classes] (each row sums to 1): MixUp's or CutMix's own transform_images and
    transform_labels, with their own get_random_transformation drawing from the first row of
    params["mix_seed"] (pairs are drawn within the batch at hand)."""
    targets = tf.one_hot(labels, num_classes, dtype=tf.float32)
    if not mixes(augmentation):
        return images, targets
    seed = params["mix_seed"][0]
    data = {"images": images, "labels": targets}

    def by(layer: keras.layers.Layer) -> Tuple[tf.Tensor, tf.Tensor]:
        # Seeds of each layer's own: eagerly, tf.cond runs one branch, in a graph it traces
        # both, so a shared count of draws would differ between the host and a tower.
        seeds = TensorSeeds(tf.random.experimental.stateless_fold_in(
            seed, 1 if isinstance(layer, keras.layers.CutMix) else 2))
        transformation = layer.get_random_transformation(data, training=True, seed=seeds)
        return (tf.cast(layer.transform_images(images, transformation), tf.float32),
                tf.cast(layer.transform_labels(targets, transformation), tf.float32))
    if not augmentation.cutmix:
        return by(mixup_layer(augmentation.mixup))
    if not augmentation.mixup:
        return by(cutmix_layer(augmentation.cutmix))
    # Both: the batch takes one of them, 50/50, as timm's Mixup does.
    take_cutmix = tf.random.stateless_uniform([], seed) < 0.5
    return tf.cond(take_cutmix, lambda: by(cutmix_layer(augmentation.cutmix)),
                   lambda: by(mixup_layer(augmentation.mixup)))
