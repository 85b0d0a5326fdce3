"""TensorFlow's fused batch-norm kernel against Keras 3's BatchNormalization, in one process.

    python benchmarks/batch_norm.py                     # the cifar10 recipe's shapes, bfloat16
    python benchmarks/batch_norm.py --precision=float32 --json=bn.json

The models' batch norm is inception.layers.FusedBatchNormalization: Keras' layer computed by
TensorFlow's FusedBatchNormV3 kernel instead of Keras 3's separate float32 passes. Timed two
ways, each side in turn (A B A B ...) so a drift in the machine's speed falls on both:
  layer   one batch norm's training forward and backward on a [batch, size, size, channels]
          activation, as a 3x3 convolution of MiniGoogLeNet's first stage hands it on;
  stack   a training step (SGD) of --blocks conv -> batch norm -> ReLU blocks on --image_size
          inputs: the share of a convolutional step the choice moves.
docs/benchmarks.md gives the figures.
"""
import time

import numpy as np

from harness import argument_parser, write_json  # benchmarks/harness.py


def stack(norm, blocks, channels, image_size):
    """`blocks` conv -> `norm` -> ReLU blocks on [image_size, image_size, 3] images, then a
    10-way classifier: a small convolutional network whose only difference is `norm`."""
    import keras
    inputs = keras.Input((image_size, image_size, 3))
    x = inputs
    for i in range(blocks):
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(x)
        x = norm(epsilon=1e-3, momentum=0.9)(x)
        x = keras.layers.ReLU()(x)
        if i % 2 == 1:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def main():
    parser = argument_parser(__doc__, batch_size=128, image_size=32)
    parser.add_argument("--channels", type=int, default=96,
                        help="channels of the activation (MiniGoogLeNet's first stage: 96)")
    parser.add_argument("--blocks", type=int, default=6, help="conv blocks of the stack")
    parser.add_argument("--precision", default="mixed_bfloat16",
                        help="Keras precision policy: mixed_bfloat16 or float32")
    parser.add_argument("--rounds", type=int, default=5, help="A B rounds of each timing")
    parser.add_argument("--calls", type=int, default=10, help="calls timed in each round")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from inception.layers import FusedBatchNormalization
    keras.mixed_precision.set_global_policy(args.precision)
    norms = {"keras": keras.layers.BatchNormalization, "fused": FusedBatchNormalization}
    size, channels, batch = args.image_size, args.channels, args.batch_size
    activation = tf.random.normal([batch, size, size, channels])
    images = tf.random.normal([batch, size, size, 3])
    labels = tf.random.uniform([batch], 0, 10, tf.int32)

    def layer_step(norm):
        layer = norm(epsilon=1e-3, momentum=0.9)
        layer.build(activation.shape)

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
            return tape.gradient(loss, [x] + layer.trainable_weights)[0]
        return lambda: step(activation)

    def stack_step(norm):
        model = stack(norm, args.blocks, channels, size)
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, tf.cast(model(x, training=True), tf.float32))
            optimizer.apply(tape.gradient(loss, model.trainable_weights),
                            model.trainable_weights)
            return loss
        return lambda: step(images, labels)

    results = dict(precision=args.precision, batch_size=batch, image_size=size,
                   channels=channels, blocks=args.blocks)
    for case, make in (("layer", layer_step), ("stack", stack_step)):
        steps = {name: make(norm) for name, norm in norms.items()}
        seconds = {name: [] for name in steps}
        for step in steps.values():  # trace, and let the thread pools start
            np.asarray(step())
        for _ in range(args.rounds):
            for name, step in steps.items():
                start = time.perf_counter()
                for _ in range(args.calls):
                    out = step()
                np.asarray(out)
                seconds[name].append((time.perf_counter() - start) / args.calls)
        medians = {name: float(np.median(s)) for name, s in seconds.items()}
        results[case] = dict(seconds=medians, fused_speedup=medians["keras"] / medians["fused"])
        print(f"{case}: Keras {1e3 * medians['keras']:.1f} ms, fused {1e3 * medians['fused']:.1f} "
              f"ms a step (median of {args.rounds} rounds): fused "
              f"{results[case]['fused_speedup']:.2f}x as fast")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
