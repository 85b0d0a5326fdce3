"""--lr_schedule=plateau: the rate is multiplied by --lr_gamma each time the validation top-1 has
gone --plateau_patience evaluations without improving.

The rule is Keras' `ReduceLROnPlateau` (mode "max", min_delta 0, no cool-down): a strictly
higher score is an improvement and resets the count; otherwise the count grows, and when it
reaches the patience the rate is reduced and the count starts again, the best score kept. Keras'
callback cannot serve here: it sets the optimizer's rate from `model.fit`'s logs, while this run's
rate is a schedule of the step (training/optimization.py), and the rule's state must live in the
checkpoint so that a resumed run reduces exactly when an uninterrupted one would. The score is the
one --early_stopping and best/ read (rundir/best.py), from the validation split alone.
"""
import tensorflow as tf


class Plateau:
    """The number of reductions so far (read by the schedule inside the step), the evaluations
    since the last improvement or reduction, and the best score: all three in the checkpoint."""

    def __init__(self, patience: int, gamma: float) -> None:
        self.patience, self.gamma = int(patience), float(gamma)
        self.reductions = tf.Variable(0.0, trainable=False, name="plateau_reductions")
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_wait")
        self.best = tf.Variable(float("-inf"), dtype=tf.float64, trainable=False,
                                name="plateau_best")
        self.checkpoint = tf.train.Checkpoint(reductions=self.reductions, wait=self.wait,
                                              best=self.best)

    def factor(self) -> tf.Tensor:
        """The multiplier the reductions so far put on the rate: gamma ** reductions."""
        return tf.pow(self.gamma, self.reductions)

    def see(self, score: float) -> bool:
        """One evaluation's validation score; returns whether it reduced the rate."""
        if score > float(self.best.numpy()):
            self.best.assign(score)
            self.wait.assign(0)
            return False
        self.wait.assign_add(1)
        if int(self.wait.numpy()) < self.patience:
            return False
        self.reductions.assign_add(1.0)
        self.wait.assign(0)
        return True

    def line(self, rate: float) -> str:
        """What the console says when the rate is reduced."""
        return (f"Plateau: validation top-1 has not improved on {float(self.best.numpy()):.4f} "
                f"for {self.patience} evaluation(s); the learning rate is multiplied by "
                f"{self.gamma:g} (reduction {int(self.reductions.numpy())}), to {rate:.4g}.")
