"""End to end: is a training epoch input-bound or compute-bound, and where should it augment?

    python benchmarks/epoch.py                          # googlenet, 2000 256-px JPEGs, 64 px
    python benchmarks/epoch.py --model=minigooglenet --image_size=32 --json=epoch.json
    python benchmarks/epoch.py --recipe=cifar10 --model=minigooglenet --image_size=32 \
        --source_size=32 --batch_size=64 --num_images=3200    # the CIFAR-10 recipe's augmentation

On a generated JPEG folder, with the real pipeline (input_pipeline.InputPipeline) and train.py's
training step (built as the trainer builds it, training/builder.py: the recipe's SGD, weight decay
and label smoothing), times one cached epoch three ways: the pipeline alone, the training step
alone on one batch held in memory (pure compute), and the two together as train.py runs them. The
input stall is the share of the end-to-end epoch not explained by compute: near 0 means
compute-bound (the model is the bottleneck, as it should be); large means the GPU or CPU waits
for input. Then the end-to-end epoch with the augmentation on the towers (--augment_on=device: a
second step on the same model and optimizer) and on the host once more: the ratio is what
--augment_on=auto's choice for these towers rests on. Last, the held-out scoring train.py runs
after every epoch (training/heldout.py) over the same images: one view each, and with the
recipe's test-time augmentation (--tta) when it has one; --heldout_per_train (CIFAR-10's 10,000
test images to 50,000 train: 0.2) weighs it into the epoch.
"""
import os
import shutil
import tempfile
import time

from pipeline import write_jpegs  # benchmarks/pipeline.py

from harness import (  # benchmarks/harness.py
    argument_parser,
    step_config,
    towers_and_state,
    write_json,
)


def main():
    parser = argument_parser(__doc__, num_images=2000, source_size=256, model="googlenet",
                             image_size=64, batch_size=32, classes=10, jit_compile=False)
    parser.add_argument("--recipe", default=None,
                        help="augment and train as this dataset's recipe does "
                             "(settings/recipes.py); default: Inception's crops and colour "
                             "jitter, and the folder recipe's step")
    parser.add_argument("--heldout_per_train", type=float, default=0.2,
                        help="held-out images scored per training image in an epoch")
    args = parser.parse_args()

    from host.runtime import configure_malloc
    configure_malloc()  # as train.py does
    import dataclasses

    import input_pipeline
    from input_pipeline.examples import Examples
    from settings import recipes
    from training import builder, devices, heldout
    from training.step import make_eval_step

    # First, as train.py does: TensorFlow's set-up before any pipeline is made.
    tower_devices = devices.configure_towers()
    root = tempfile.mkdtemp(prefix="epoch-bench-")
    try:
        paths, labels = write_jpegs(root, args.num_images, args.source_size, args.classes)
        augmentation = ({} if args.recipe is None else dict(
            augmentation=recipes.get_recipe(args.recipe).augmentation_for(len(paths))))
        start = time.perf_counter()
        pipeline = input_pipeline.InputPipeline(Examples(labels, paths=paths),
                                                image_size=args.image_size, training=True,
                                                cache="memory", seed=0, **augmentation)
        fill_seconds = time.perf_counter() - start
        scored = input_pipeline.InputPipeline(Examples(labels, paths=paths),
                                              image_size=args.image_size, training=False,
                                              cache="memory", **augmentation)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # from here on only the cache is read
    steps = pipeline.num_examples // args.batch_size  # whole batches, as training takes
    images_per_epoch = steps * args.batch_size

    config = step_config(args.model, args.classes, args.image_size, args.batch_size,
                         dataset=args.recipe or "folder", jit_compile=args.jit_compile)
    # What train.py picks by default.
    precision = devices.precision_policy(config.mixed_precision, tower_devices,
                                         config.mixed_precision_dtype)
    towers, state = towers_and_state(config, tower_devices, precision, steps)
    # One model and optimizer, two steps: augmented on the host, and on each tower.
    steps_by_place = {
        place: builder.build_steps(dataclasses.replace(config, augment_on=place), towers, state,
                                   train=pipeline).train
        for place in ("host", "device")}
    step = steps_by_place["host"]

    def distributed(epoch, augment_on="host"):
        return devices.distributed_iterator(
            towers.strategy, lambda ctx: pipeline.dataset(towers.per_tower_batch, epoch=epoch,
                                                          augment_on=augment_on))

    # Warm up (trace the steps, start the runtime's thread pools) on epoch 0.
    first = next(distributed(0))
    step(*first)["total_loss"].numpy()
    steps_by_place["device"](*next(distributed(0, "device")))["total_loss"].numpy()

    def timed(run):
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    def pipeline_only():
        for _ in distributed(1):
            pass

    def compute_only():
        for _ in range(steps):
            result = step(*first)
        result["total_loss"].numpy()

    def end_to_end(augment_on="host"):
        for batch in distributed(2, augment_on):
            result = steps_by_place[augment_on](*batch)
        result["total_loss"].numpy()

    pipeline_s, compute_s, e2e_s = timed(pipeline_only), timed(compute_only), timed(end_to_end)
    # The same epoch with each tower augmenting its own batch (--augment_on=device); then host
    # once more, so a drift in the machine's speed shows as a difference between the two.
    device_s = timed(lambda: end_to_end("device"))
    host_again_s = timed(end_to_end)
    # Held-out scoring as the loop runs it after an epoch: one view, then the recipe's views.
    views = {"one view": "none", **({f"--tta={config.tta}": config.tta}
                                    if config.tta not in (None, "none") else {})}
    recipe_views = list(views)[-1]  # what the loop scores with

    def scoring(tta):
        eval_step = make_eval_step(state.model, towers.strategy, tta)
        return lambda: heldout.predict(state.model, towers.strategy, scored,
                                       towers.per_tower_batch, eval_step)
    scoring_s = {}
    for name, tta in views.items():
        score = scoring(tta)
        score()  # trace
        scoring_s[name] = timed(score)
    stall = max(0.0, 1.0 - compute_s / e2e_s)
    # An epoch as train.py runs it: its training images end to end, augmented where
    # --augment_on=auto puts them, then the held-out share.
    auto = devices.augment_on("auto", towers.devices, pipeline.augmentation.resizes)
    train_s = device_s if auto == "device" else (e2e_s + host_again_s) / 2
    scoring_per_image = scoring_s[recipe_views] / scored.num_examples
    heldout_s = args.heldout_per_train * images_per_epoch * scoring_per_image
    results = dict(model=args.model, recipe=args.recipe, precision=precision,
                   image_size=args.image_size,
                   batch_size=args.batch_size,
                   images=len(paths), jpeg_size=args.source_size, cpu_count=os.cpu_count(),
                   steps_per_epoch=steps, cache_fill_seconds=fill_seconds,
                   pipeline_img_per_s=images_per_epoch / pipeline_s,
                   compute_img_per_s=images_per_epoch / compute_s,
                   end_to_end_img_per_s=images_per_epoch / e2e_s, input_stall=stall,
                   end_to_end_host_again_img_per_s=images_per_epoch / host_again_s,
                   end_to_end_augment_on_device_img_per_s=images_per_epoch / device_s,
                   augment_on_device_over_host=(e2e_s + host_again_s) / (2 * device_s),
                   bound="input" if stall > 0.1 else "compute",
                   heldout_img_per_s={name: scored.num_examples / seconds
                                      for name, seconds in scoring_s.items()},
                   augment_on_auto=auto,
                   heldout_share_of_epoch=heldout_s / (train_s + heldout_s))
    print(f"{args.model}, {precision}, {args.image_size} px, batch {args.batch_size}, "
          f"{'Inception' if args.recipe is None else args.recipe + ' recipe'} augmentation, "
          f"{steps} steps per epoch "
          f"({len(paths)} {args.source_size}-px JPEGs; cache filled once in {fill_seconds:.1f} s)")
    print(f"{'one cached epoch':<36}{'seconds':>10}{'img/s':>10}")
    for name, seconds in [("input pipeline alone", pipeline_s), ("training step alone", compute_s),
                          ("end to end (as train.py runs)", e2e_s),
                          ("end to end, augmented on the towers", device_s),
                          ("end to end, on the host again", host_again_s)]:
        print(f"{name:<36}{seconds:>10.2f}{images_per_epoch / seconds:>10.1f}")
    for name, seconds in scoring_s.items():
        print(f"{'held-out scoring, ' + name:<36}{seconds:>10.2f}"
              f"{scored.num_examples / seconds:>10.1f}")
    print(f"input stall: {100 * stall:.1f}% of the epoch -> {results['bound']}-bound")
    print(f"augmenting on the towers: {results['augment_on_device_over_host']:.2f}x the speed of "
          f"augmenting on the host (mean of the two host epochs)")
    print(f"held-out scoring ({recipe_views}, {args.heldout_per_train:g} held-out image per "
          f"training image): {100 * results['heldout_share_of_epoch']:.1f}% of an epoch "
          f"augmented on the {auto}, as --augment_on=auto does here")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
