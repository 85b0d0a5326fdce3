"""Averaged weights (--ema_decay): an exponential moving average of the model's weights, kept on
every tower beside the weights themselves.

    average = WeightAverage(model, decay, strategy)  # in the strategy's scope: a copy per tower
    average.update()                                  # after each step's update (step.py)
    with average.swapped_in():                        # the model holds the averages, then its
        scores = evaluate(model)                      # own weights again

The average starts from the weights it is made or reset with (a new run's initial ones) and after
each step becomes `decay x average + (1 - decay) x weights`. It covers every float weight of the
model: the trained ones and batch norm's moving statistics (docs/design.md, "Averaged weights").
"""
import contextlib
from typing import Iterator, List

import keras
import tensorflow as tf

# Under this name a checkpoint holds the averages (training/checkpoints.py).
CHECKPOINT_KEY = "average"


def averaged_weights(model: keras.Model) -> List[keras.Variable]:
    """The weights the average covers, in `model.weights` order: every float weight, trained or
    frozen, batch norm's moving statistics included; not dropout's integer random state."""
    return [w for w in model.weights if tf.as_dtype(w.dtype).is_floating]


def checkpoint_object(variables: List) -> tf.train.Checkpoint:
    """The averages as a checkpoint stores them: `average/weights/<i>` in `averaged_weights`
    order. Made of the model's own weights, it reads a checkpoint's averages into the model."""
    return tf.train.Checkpoint(weights=list(variables))


class WeightAverage:
    """The exponential moving average of `model`'s weights with `decay` per step; made in
    `strategy`'s scope, it keeps one copy per tower, each updated from its tower's weights."""

    def __init__(self, model: keras.Model, decay: float,
                 strategy: tf.distribute.Strategy) -> None:
        self.decay = float(decay)
        self.strategy = strategy
        self.weights = averaged_weights(model)
        self.averages = [tf.Variable(w.value, trainable=False, name=f"average_{i}")
                         for i, w in enumerate(self.weights)]
        self.checkpoint = checkpoint_object(self.averages)

    def _pairs(self):
        """(average, weight) on each tower: the per-device copies, so no update crosses
        devices."""
        local = self.strategy.experimental_local_results
        for average, weight in zip(self.averages, self.weights):
            yield from zip(local(average), local(weight.value))

    def update(self) -> None:
        """average = decay x average + (1 - decay) x weights, on every tower; called in the
        training step's tf.function after the optimizer's update."""
        keep, take = self.decay, 1.0 - self.decay
        for average, weight in self._pairs():
            with tf.device(average.device):
                average.assign(keep * average + take * weight)

    def reset(self) -> None:
        """The average starts again from the model's current weights."""
        for average, weight in self._pairs():
            with tf.device(average.device):
                average.assign(weight)

    @tf.function
    def _swap(self) -> None:
        # Exchanging the values (not copying them away) needs no memory beyond one weight, and
        # doing it twice gives back both bit for bit.
        for average, weight in self._pairs():
            with tf.device(average.device):
                held = tf.identity(average)
                average.assign(weight)
                weight.assign(held)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own ones again after it
        (also when the block raises)."""
        self._swap()
        try:
            yield
        finally:
            self._swap()
