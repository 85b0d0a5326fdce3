"""TensorBoard logs: `train/` (per-tower losses, totals, learning rate, speed) and `eval/`
(held-out scores, those of the averaged weights under `ema_` tags), and per-epoch curves under
tags the two share; with --val_fraction, `validation/` holds the validation split's scores under
eval/'s tags, so TensorBoard overlays validation and test in one chart."""

import numpy as np
import tensorflow as tf

from rundir.layout import EVAL_LOG_DIR, TRAIN_LOG_DIR, VAL_LOG_DIR, log_dir
from training.devices import tower_name

TOWER_METRICS = ("main_loss", "aux1_loss", "aux2_loss", "aux_loss", "accuracy")


class Summaries:
    def __init__(self, run_dir, towers):
        self.train_dir = log_dir(run_dir, TRAIN_LOG_DIR)  # a --profile_steps trace goes here too
        self.train = tf.summary.create_file_writer(self.train_dir)
        self.eval = tf.summary.create_file_writer(log_dir(run_dir, EVAL_LOG_DIR))
        self.run_dir = run_dir
        self.validation = None  # made at the first validation scores: none without a split
        self.towers = [tower_name(d) for d in towers]

    def write_train(self, step, tower_means, learning_rate, images_per_second):
        """`tower_means`: {metric: array of per-tower means over the logging window}."""
        with self.train.as_default(step=step):
            for metric, values in tower_means.items():
                if metric in TOWER_METRICS:
                    for tower, value in zip(self.towers, values):
                        tf.summary.scalar(f"{tower}/{metric}", value)
            tf.summary.scalar("total_loss", np.mean(tower_means["total_loss"]))
            tf.summary.scalar("train_top1", np.mean(tower_means["accuracy"]))
            tf.summary.scalar("learning_rate", learning_rate)
            tf.summary.scalar("images_per_second", images_per_second)
            if "loss_scale" in tower_means:  # float16's dynamic loss scale, alike on every tower
                tf.summary.scalar("loss_scale", np.min(tower_means["loss_scale"]))
        self.train.flush()

    def write_eval(self, step, metrics, writer=None):
        """`metrics`: the held-out scores, with the averaged weights' under "ema" (--ema_decay)
        and each one's with test-time augmentation under "tta" (--tta); into eval/ unless
        another `writer` is given."""
        writer = writer or self.eval
        with writer.as_default(step=step):
            for prefix, scores in _scored_ways(metrics):
                for name in ("top1", "top5", "loss"):
                    tf.summary.scalar(prefix + name, scores[name])
        writer.flush()

    def write_validation(self, step, epoch, metrics):
        """The validation split's scores into validation/, under eval/'s tags: per step, and per
        epoch as epoch_loss / epoch_accuracy."""
        if self.validation is None:
            self.validation = tf.summary.create_file_writer(log_dir(self.run_dir, VAL_LOG_DIR))
        self.write_eval(step, metrics, self.validation)
        with self.validation.as_default(step=epoch):
            tf.summary.scalar("epoch_loss", metrics["loss"])
            tf.summary.scalar("epoch_accuracy", metrics["top1"])
        self.validation.flush()

    def write_epoch(self, epoch, train_loss, train_accuracy, eval_metrics=None):
        """Per epoch, under the same tags in train/ and eval/ (as Keras' TensorBoard callback), so
        one chart overlays them: the main logits' plain cross-entropy and top-1. The x axis is
        the number of epochs done."""
        with self.train.as_default(step=epoch):
            tf.summary.scalar("epoch_loss", train_loss)
            tf.summary.scalar("epoch_accuracy", train_accuracy)
        self.train.flush()
        if eval_metrics:
            with self.eval.as_default(step=epoch):
                tf.summary.scalar("epoch_loss", eval_metrics["loss"])
                tf.summary.scalar("epoch_accuracy", eval_metrics["top1"])
                for prefix, scores in _scored_ways(eval_metrics)[1:]:
                    tf.summary.scalar(f"epoch_{prefix}loss", scores["loss"])
                    tf.summary.scalar(f"epoch_{prefix}accuracy", scores["top1"])
            self.eval.flush()

    def write_model_and_inputs(self, step, model, images, image_size):
        """The inference graph, and a few augmented training inputs as the model sees them."""
        forward = tf.function(lambda x: model(x, training=False))
        graph = forward.get_concrete_function(
            tf.TensorSpec([None, image_size, image_size, 3], tf.float32)).graph
        with self.train.as_default(step=step):
            tf.summary.graph(graph)
            tf.summary.image("augmented_inputs", (images[:6] + 1.0) / 2.0, max_outputs=6)
        self.train.flush()


def _scored_ways(metrics: dict) -> list:
    """(tag prefix, scores) of the held-out `metrics`: as they are (""), with test-time
    augmentation ("tta_"), the averaged weights' ("ema_") and theirs with it ("ema_tta_")."""
    ways = [("", metrics)]
    if "tta" in metrics:
        ways.append(("tta_", metrics["tta"]))
    if "ema" in metrics:
        ways += [("ema_" + prefix, scores) for prefix, scores in _scored_ways(metrics["ema"])]
    return ways
