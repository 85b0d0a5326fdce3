"""What an epoch's held-out scoring costs the training loop, with its iterator destroyed in place
or in a thread of its own.

    python benchmarks/iterator_release.py                   # the CIFAR-10 recipe's scoring
    python benchmarks/iterator_release.py --rounds=3 --json=release.json

Destroying a tf.data iterator waits for its autotuning thread, which in TensorFlow 2.21 does not
always wake from its sleep when cancelled; the sleep doubles from 10 ms up to 60 s as the
iterator runs, so after a minute or two of scoring the wait can reach a minute.
training/devices.distributed_iterator hands a finished iterator to a thread of its own
(`ReleasedInBackground`), where the wait overlaps whatever the loop does next. In one process,
on the cifar10 recipe's model (MiniGoogLeNet, 32 px, its test-time views) and `--num_images`
held-out images in memory, rounds alternate between the two: the plain
`iter(strategy.distribute_datasets_from_function(...))` dropped by the loop's thread, and
training/heldout.predict as the loop calls it. Each is timed from making the iterator to the
moment the loop could go on (the drop included).
"""
import time

from harness import argument_parser, step_config, towers_and_state, write_json


def main():
    parser = argument_parser(__doc__, num_images=10000, model="minigooglenet", image_size=32,
                             batch_size=128, classes=10)
    parser.add_argument("--rounds", type=int, default=2, help="scorings timed each way")
    args = parser.parse_args()

    from host.runtime import configure_malloc
    configure_malloc()  # as train.py does
    import numpy as np

    import input_pipeline
    from input_pipeline.examples import Examples
    from settings import recipes
    from training import devices, heldout
    from training.step import make_eval_step

    tower_devices = devices.configure_towers()
    config = step_config(args.model, args.classes, args.image_size, args.batch_size,
                         dataset="cifar10")
    precision = devices.precision_policy(config.mixed_precision, tower_devices,
                                         config.mixed_precision_dtype)
    towers, state = towers_and_state(config, tower_devices, precision, steps_per_epoch=1)
    rng = np.random.default_rng(0)
    examples = Examples(rng.integers(0, args.classes, args.num_images),
                        images=rng.integers(0, 256, (args.num_images, args.image_size,
                                                     args.image_size, 3), dtype=np.uint8))
    scored = input_pipeline.InputPipeline(
        examples, image_size=args.image_size, training=False, cache="memory",
        augmentation=recipes.get_recipe("cifar10").augmentation_for(args.num_images))
    eval_step = make_eval_step(state.model, towers.strategy, config.tta or "none")

    def dataset_fn(ctx):
        return scored.dataset(towers.per_tower_batch, drop_remainder=False)

    def in_place():
        # The iterator's last reference is the argument: dropped here when collect returns.
        return heldout.collect(iter(towers.strategy.distribute_datasets_from_function(dataset_fn)),
                               eval_step, None)

    def released():
        return heldout.predict(state.model, towers.strategy, scored, towers.per_tower_batch,
                               eval_step)

    ways = {"destroyed in place": in_place, "released in a thread (ours)": released}
    released()  # trace the step
    seconds = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, score in ways.items():
            start = time.perf_counter()
            score()
            seconds[name].append(time.perf_counter() - start)
            print(f"{name}: {seconds[name][-1]:.1f} s", flush=True)
    means = {name: float(np.mean(values)) for name, values in seconds.items()}
    baseline, ours = means["destroyed in place"], means["released in a thread (ours)"]
    print(f"\nScoring {args.num_images:,} images with --tta={config.tta}, {precision}: "
          f"{baseline:.1f} s destroyed in place, {ours:.1f} s released in a thread "
          f"({baseline / ours:.2f}x); every round: {seconds}")
    write_json(args.json, dict(images=args.num_images, tta=config.tta, precision=str(precision),
                               seconds=seconds, means=means, ratio=baseline / ours))


if __name__ == "__main__":
    main()
