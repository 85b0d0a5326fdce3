"""Two training steps of small models on fixed batches, the same under any tf.distribute strategy,
so that a job of two workers can be compared with two towers on one machine.

    python tests/multi_worker_step.py OUT_PREFIX    # one worker of a job: TF_CONFIG names it

As a worker it trains every case under MultiWorkerMirroredStrategy (one tower a worker) and saves
each case's weights to OUT_PREFIX<case>.npz; tests/test_multi_worker.py runs the same cases on two
logical CPUs in its own process with `train_case` and compares. Tower i (worker i) gets the i-th
half of each global batch either way, so the two runs see the same examples on the same tower.
"""
import sys
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

import inception
from training.step import StepConfig, make_train_step, moving_statistics

NUM_CLASSES = 5
GLOBAL_BATCH = 8
STEPS = 2
# (case name, model, Keras precision policy): one model without batch norm (GoogLeNet, its aux
# heads too) and one with it, in float32 and in mixed bfloat16. Loss-scaled float16 on two
# workers is trained by test_multi_worker.py's slow set (emulated on a CPU, it is slow).
CASES = (("googlenet_float32", "googlenet", "float32"),
         ("minigooglenet_float32", "minigooglenet", "float32"),
         ("minigooglenet_bfloat16", "minigooglenet", "mixed_bfloat16"),
         ("googlenet_clip_accum", "googlenet", "float32"),
         ("minigooglenet_clip_accum", "minigooglenet", "float32"))
# The step's options a case trains with: the summed gradient clipped (to a norm below its own)
# and each tower's half run as two micro-batches.
CASE_OPTIONS = {case: dict(clip_norm=0.05, grad_accum_steps=2)
                for case, _, _ in CASES if case.endswith("_clip_accum")}


def batches():
    """STEPS global batches whose halves have unlike statistics, so each tower's forward pass
    moves its batch norms' moving statistics differently."""
    result = []
    for step in range(STEPS):
        images = tf.random.stateless_uniform((GLOBAL_BATCH, 32, 32, 3), (step, 2), -1, 1)
        images = tf.concat([images[:GLOBAL_BATCH // 2], 3.0 * images[GLOBAL_BATCH // 2:] + 1.0], 0)
        labels = tf.constant((np.arange(GLOBAL_BATCH) + step) % NUM_CLASSES, tf.int32)
        result.append((images, labels))
    return result


def halves(strategy: tf.distribute.Strategy, tensor: tf.Tensor):
    """`tensor`'s batch split evenly across the job's towers in order, wherever they are (one
    machine's or several workers'). tests/test_training_step.py feeds its towers with it too."""
    per = len(tensor) // strategy.num_replicas_in_sync
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tensor[ctx.replica_id_in_sync_group * per:
                           (ctx.replica_id_in_sync_group + 1) * per])


def build(model_name: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    # No dropout: its masks are drawn per tower, and would differ between the two runs.
    aux = {"aux_dropout_rate": 0.0} if model_name.startswith("googlenet") else {}
    return inception.build_model(model_name, NUM_CLASSES, 32, width_multiplier=0.125,
                                 dropout_rate=0.0, **aux)


def train_case(strategy: tf.distribute.Strategy, model_name: str, policy: str,
               options: Optional[dict] = None) -> dict:
    """{"weights": every weight after STEPS steps (moving statistics included), "moving": this
    process's tower copies of each moving statistic, "initial_moving": their values before}."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        with strategy.scope():
            model = build(model_name)
            optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
            optimizer.build(model.trainable_variables)  # as the Trainer does
        initial = [v.numpy() for v in moving_statistics(model)]
        step = make_train_step(model, optimizer, strategy,
                               StepConfig(GLOBAL_BATCH, NUM_CLASSES, weight_decay=1e-3,
                                          **(options or {})))
        for images, labels in batches():
            step(halves(strategy, images), halves(strategy, labels))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return dict(weights=[v.numpy() for v in model.weights],
                moving=[np.stack([c.numpy() for c in strategy.experimental_local_results(v.value)])
                        for v in moving_statistics(model)],
                initial_moving=initial)


def main(out_prefix: str) -> None:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    for case, model_name, policy in CASES:
        result = train_case(strategy, model_name, policy, CASE_OPTIONS.get(case))
        np.savez(f"{out_prefix}{case}.npz", *result["weights"])
        np.savez(f"{out_prefix}{case}_moving.npz", *result["moving"])


if __name__ == "__main__":
    main(sys.argv[1])
