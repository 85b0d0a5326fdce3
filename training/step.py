"""The training step: a small top-level function run by every tower under tf.distribute.

Per tower: forward in training mode; loss = main cross-entropy + aux_weight x (sum of the aux
cross-entropies), each averaged over the GLOBAL batch (`tf.nn.compute_average_loss`; with class
weights, each example's losses times its class's weight), plus the L2
weight decay divided by the number of towers. A Keras 3 optimizer's `apply_gradients` inside
`strategy.run` sums the towers' gradients (docs/reference.md, "Traps seen in other projects' issue
trackers"), so that sum is exactly the gradient of the global-batch mean: averaged once, weight
decay counted once. Options: --grad_accum_steps runs each tower's batch as micro-batches whose
gradients are summed before that (`accumulated_gradients`); --clip_norm clips the towers' summed
gradient (`clipped_sum_share`).
"""
import dataclasses
from typing import Optional, Tuple

import keras
import tensorflow as tf

from input_pipeline.crops import tta_views


@dataclasses.dataclass(frozen=True)
class StepConfig:
    global_batch_size: int
    num_classes: int
    aux_weight: float = 0.3
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    # One loss weight per class (--class_weight=balanced), or None: every example weighs 1.
    class_weights: Optional[Tuple[float, ...]] = None
    clip_norm: float = 0.0  # the global norm the summed gradient is clipped to; 0: off
    grad_accum_steps: int = 1  # micro-batches per tower and step


def is_soft(labels: tf.Tensor) -> bool:
    """Whether `labels` are soft targets, float [B, classes] (--mixup, --cutmix), rather than
    int class indices [B]."""
    return labels.dtype.is_floating


def cross_entropy(labels: tf.Tensor, logits: tf.Tensor, num_classes: int,
                  label_smoothing: float) -> tf.Tensor:
    """Per-example softmax cross-entropy with optional label smoothing, against int labels [B]
    or soft targets [B, classes] (smoothed the same way, on top of the mix)."""
    targets = labels if is_soft(labels) else tf.one_hot(labels, num_classes)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return tf.nn.softmax_cross_entropy_with_logits(targets, tf.cast(logits, tf.float32))


def is_decayed(variable) -> bool:
    """Whether weight decay applies to `variable`: conv and dense kernels do; biases and
    batch-norm parameters do not (decaying a scale or shift only fights the normalisation)."""
    return variable.path.endswith("kernel")


def decayed_weights(model):
    """The weights that decay (`is_decayed`), without the kernels --trainable freezes (not in
    `trainable_variables`): decay pulls a kernel that is trained towards 0, and a frozen one
    would only add a constant to the loss."""
    return [v for v in model.trainable_variables if is_decayed(v)]


def example_weights(labels: tf.Tensor, class_weights: Optional[Tuple[float, ...]]):
    """Each example's loss weight: its class's, or with soft targets the target-weighted mix of
    the classes' weights (a MixUp of a and b at lam weighs lam w_a + (1 - lam) w_b). None
    without class weights."""
    if class_weights is None:
        return None
    weights = tf.constant(class_weights, tf.float32)
    if is_soft(labels):
        return tf.linalg.matvec(tf.cast(labels, tf.float32), weights)
    return tf.gather(weights, labels)


def tower_losses(model, images, labels, config):
    """Forward one tower: its total loss for the gradient, and per-output mean losses to log.
    `labels`: int [B], or soft targets [B, classes] (mixed images); the training accuracy then
    counts the argmax of each target, the class with the larger share."""
    outputs = model(images, training=True)
    per_example = {name: cross_entropy(labels, logits, config.num_classes, config.label_smoothing)
                   for name, logits in outputs.items()}
    weights = example_weights(labels, config.class_weights)
    total = tf.nn.compute_average_loss(per_example["logits"], sample_weight=weights,
                                       global_batch_size=config.global_batch_size)
    for name, losses in per_example.items():
        if name != "logits":
            total += config.aux_weight * tf.nn.compute_average_loss(
                losses, sample_weight=weights, global_batch_size=config.global_batch_size)
    if config.weight_decay:
        l2 = tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in decayed_weights(model)])
        total += tf.nn.scale_regularization_loss(config.weight_decay * l2)
    hard = tf.argmax(labels, -1, output_type=tf.int32) if is_soft(labels) else labels
    correct = tf.equal(tf.argmax(outputs["logits"], -1, output_type=tf.int32), hard)
    metrics = {("main_loss" if name == "logits" else f"{name}_loss"): tf.reduce_mean(losses)
               for name, losses in per_example.items()}
    metrics["accuracy"] = tf.reduce_mean(tf.cast(correct, tf.float32))
    # The main logits' plain cross-entropy (no label smoothing): the training counterpart of the
    # held-out loss, so the two can share a chart.
    metrics["cross_entropy"] = (
        tf.reduce_mean(cross_entropy(labels, outputs["logits"], config.num_classes, 0.0))
        if config.label_smoothing else metrics["main_loss"])
    return total, metrics


def tower_gradients(model, optimizer, images, labels, config):
    with tf.GradientTape() as tape:
        total, metrics = tower_losses(model, images, labels, config)
        # Loss scaling for float16 (a LossScaleOptimizer); the identity otherwise.
        scaled = optimizer.scale_loss(total)
    return tape.gradient(scaled, model.trainable_variables), total, metrics


def accumulated_gradients(gradients_fn, model, optimizer, images, labels, config):
    """`gradients_fn` over `config.grad_accum_steps` micro-batches of this tower's batch, one
    after the other, their gradients and losses summed: the whole batch's, as each micro-batch's
    loss is already a share of the global batch's mean. The weight decay, added to every
    micro-batch's loss, is divided among them so it counts once.

    Written by hand: Keras' `gradient_accumulation_steps` accumulates over optimizer steps (one
    batch from the pipeline each), which would change what a step and an epoch are, and sums each
    tower's part before the towers are summed. A tf.while_loop, not a Python loop: its
    iterations run in turn, so only one micro-batch's activations are alive at a time."""
    n = config.grad_accum_steps
    micro_config = dataclasses.replace(config, weight_decay=config.weight_decay / n)
    size = tf.shape(images)[0] // n

    def micro_batch(i):
        part = slice(i * size, (i + 1) * size)
        grads, total, metrics = gradients_fn(model, optimizer, images[part], labels[part],
                                             micro_config)
        return ([tf.zeros_like(v) if g is None else g
                 for g, v in zip(grads, model.trainable_variables)], total, metrics)

    def add(i, grads, total, metrics):
        g, t, m = micro_batch(i)
        return (i + 1, [a + b for a, b in zip(grads, g)], total + t,
                {k: metrics[k] + m[k] for k in metrics})

    first = (tf.constant(1), *micro_batch(0))
    _, grads, total, metrics = tf.while_loop(lambda i, *_: i < n, add, first)
    return grads, total, {k: v / n for k, v in metrics.items()}  # per-micro-batch means


def skip_on_every_tower_if_one_overflowed(grads):
    """Float16 loss scaling across towers: the update must be skipped everywhere when any tower's
    gradients overflowed. Keras 3's LossScaleOptimizer decides from the first tower's gradients
    alone (it assumes they were already summed; here the sum happens later, in apply_gradients),
    so an overflow on another tower would be summed into the weights as inf / NaN
    (tests/test_training_step.py shows it). The towers agree first: if any overflowed, each one's
    first gradient becomes NaN, so every tower skips the update and the scale is halved."""
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
    overflowed = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
    first = next(i for i, g in enumerate(grads) if g is not None)
    poison = tf.where(overflowed > 0.0, float("nan"), 0.0)
    return [g + tf.cast(poison, g.dtype) if i == first else g for i, g in enumerate(grads)]


def clipped_sum_share(grads: list, clip_norm) -> list:
    """This tower's share of the towers' summed gradient clipped to global norm `clip_norm`:
    the sum all-reduced here, clipped, then divided by the number of towers, so that the sum
    apply_gradients takes again gives the clipped sum.

    By hand, because Keras' `global_clipnorm` clips inside apply_gradients before the towers'
    gradients are summed: each tower's part, whose norm depends on how many towers share the
    batch. A float16 run's gradients are still loss-scaled here, so `clip_norm` comes scaled."""
    context = tf.distribute.get_replica_context()
    towers = context.num_replicas_in_sync
    present = [i for i, g in enumerate(grads) if g is not None]
    summed = [grads[i] for i in present]
    if towers > 1:
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, summed)
    clipped, _ = tf.clip_by_global_norm(summed, clip_norm)
    grads = list(grads)
    for i, g in zip(present, clipped):
        grads[i] = g / towers if towers > 1 else g
    return grads


def moving_statistics(model: keras.Model) -> list:
    """The moving mean and variance of every batch norm that trains (a frozen one's stay as they
    were loaded, the same on every tower)."""
    return [v for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
            for v in (layer.moving_mean, layer.moving_variance)]


def sync_moving_statistics(statistics: list) -> None:
    """Sets each tower's batch-norm moving statistics to their mean over the towers.

    Keras 3 creates them as mirrored variables without an aggregation, and each tower's forward
    pass writes its own batch's statistics to its own copy: the towers drift apart, and a
    checkpoint (which keeps the first tower's copy) and the towers' held-out scores disagree.
    tf.keras 2 averaged the copies when read (ON_READ, MEAN); one all-reduce a step gives every
    tower that mean (docs/design.md, "Batch norm across towers").
    """
    context = tf.distribute.get_replica_context()
    if not statistics or context.num_replicas_in_sync == 1:
        return
    # Their values as tensors, as the gradients are: handed a variable, all_reduce takes it as
    # the place to reduce to, and MultiWorkerMirroredStrategy refuses a tower's copy there
    # ("destinations can not be empty").
    values = [tf.identity(v.value) for v in statistics]
    means = context.all_reduce(tf.distribute.ReduceOp.MEAN, values)
    for variable, mean in zip(statistics, means):
        variable.assign(mean)


def replica_step(model, optimizer, images, labels, config, gradients_fn=tower_gradients,
                 augment=None):
    if augment is not None:  # the batch's augmentation, on this tower's device
        # (labels too: mixing images makes them soft targets, InputPipeline.augment)
        images, labels = augment(images, labels)
    if config.grad_accum_steps > 1:
        grads, total, metrics = accumulated_gradients(gradients_fn, model, optimizer, images,
                                                      labels, config)
    else:
        grads, total, metrics = gradients_fn(model, optimizer, images, labels, config)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    if scaled:
        metrics["loss_scale"] = tf.identity(optimizer.dynamic_scale)  # the scale of this step
        grads = skip_on_every_tower_if_one_overflowed(grads)
    if config.clip_norm:
        grads = clipped_sum_share(grads, config.clip_norm * (
            tf.cast(optimizer.dynamic_scale, tf.float32) if scaled else 1.0))
    optimizer.apply_gradients(zip(grads, model.trainable_variables))  # sums across towers
    sync_moving_statistics(moving_statistics(model))
    metrics["total_loss"] = total * tf.distribute.get_replica_context().num_replicas_in_sync
    return metrics


def make_train_step(model, optimizer, strategy, config, jit_compile=False, augment=None,
                    average=None):
    """A tf.function taking one distributed batch; returns {metric: [value per tower]}.

    With `jit_compile`, XLA compiles each tower's forward and backward pass; the cross-tower
    gradient sum and the update stay outside it (not XLA-compilable under MirroredStrategy).
    `augment`, when the pipeline leaves the augmentation to the towers, turns each tower's batch
    and labels into model inputs and targets on that tower (InputPipeline.augment). `average`
    (--ema_decay, an averaging.WeightAverage) takes in each step's updated weights, on every
    tower.
    """
    gradients_fn = (tf.function(tower_gradients, jit_compile=True) if jit_compile
                    else tower_gradients)

    @tf.function
    def train_step(images, labels):
        per_replica = strategy.run(replica_step, args=(model, optimizer, images, labels, config,
                                                       gradients_fn, augment))
        if average is not None:  # after the update: the read follows the write to each weight
            average.update()
        return {name: tf.stack(strategy.experimental_local_results(value))
                for name, value in per_replica.items()}
    return train_step


def softmax_of_views(model: keras.Model, views: tf.Tensor) -> tf.Tensor:
    """Probabilities [B, V, classes] of images [B, V, S, S, 3] (crops or test-time views of
    each image): the B x V images in one forward pass."""
    shape = tf.shape(views)
    flat = tf.reshape(views, tf.concat([[-1], shape[2:]], 0))
    probs = tf.nn.softmax(model(flat, training=False)["logits"])
    return tf.reshape(probs, [shape[0], shape[1], -1])


def make_eval_step(model, strategy, tta: str = "none"):
    """A tf.function giving per-tower (probabilities, labels) for one distributed batch.

    Images [B, S, S, 3], or [B, C, S, S, 3] for C crops per image: the softmax is then averaged
    over each image's crops. With `tta` (one of input_pipeline.crops.TTA_POLICIES but "none"),
    the probabilities are [B, V, classes], one row per test-time view, the first the image as it
    is: one forward pass gives the scores both with and without test-time augmentation. A
    batch of one crop per image is taken as [B, S, S, 3] then; several crops and `tta` do not go
    together (settings/eval_settings.py refuses them).
    """
    @tf.function
    def run(images, labels):
        def forward(images, labels):
            # The last step of an evaluation that does not divide evenly gives some towers an
            # empty batch, and TF's oneDNN CPU kernels fail on one ("input depth must be evenly
            # divisible by filter depth"): such a tower runs one blank image and keeps nothing.
            count = tf.shape(images)[0]
            images = tf.cond(count > 0, lambda: images, lambda: tf.zeros(
                tf.concat([[1], tf.shape(images)[1:]], 0), images.dtype))
            return probabilities(images)[:count], labels

        def probabilities(images):
            if tta != "none":
                if images.shape.rank == 5:  # one crop per image
                    images = images[:, 0]
                return softmax_of_views(model, tta_views(images, tta))
            if images.shape.rank == 4:
                return tf.nn.softmax(model(images, training=False)["logits"])
            return tf.reduce_mean(softmax_of_views(model, images), axis=1)
        probs, labels = strategy.run(forward, args=(images, labels))
        return (strategy.experimental_local_results(probs),
                strategy.experimental_local_results(labels))
    return run
