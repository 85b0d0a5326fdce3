"""What the published results' recipes cost here: training-step speed, time per epoch, in all.

    python benchmarks/recipes.py                      # the three recipes below
    python benchmarks/recipes.py --recipes=cifar10 --steps=5

Each published result this project follows is a dataset recipe of settings/recipes.py (read
from there): MiniGoogLeNet on CIFAR-10 (about 90%), GoogLeNet on Tiny
ImageNet at 64 px (57.34% top-1 / 81.25% top-5 after 70 epochs), GoogLeNet-BN on ImageNet with
MindSpore's recipe (71.86% / 90.70% after 300 epochs). For each, the recipe's model, input size,
global batch and class count, our training step (training/step.py) timed on one device in the
precision train.py picks, and from it the time per epoch and for the whole recipe. The input
pipeline is far faster than these steps (docs/benchmarks.md, "Input pipeline speed"), so the
step sets the pace.
"""
from harness import argument_parser, train_and_infer, write_json  # benchmarks/harness.py

# dataset -> (training images per epoch, classes, the result it reproduces)
PUBLISHED = {
    "cifar10": (50_000, 10, "MiniGoogLeNet, CIFAR-10: about 90% top-1"),
    "tiny_imagenet": (100_000, 200, "GoogLeNet, Tiny ImageNet 64 px: 57.34% / 81.25% (70 ep.)"),
    "imagenet": (1_281_167, 1000, "GoogLeNet-BN, ImageNet (MindSpore): 71.86% / 90.70% (300 ep.)"),
}


def main():
    parser = argument_parser(__doc__, steps=3)
    parser.add_argument("--recipes", default=",".join(PUBLISHED))
    args = parser.parse_args()
    import keras

    from settings.config import TrainConfig, with_defaults
    from training import devices
    keras.mixed_precision.set_global_policy(
        devices.precision_policy(None, devices.configure_towers()[:1]))
    rows = []
    for dataset in args.recipes.split(","):
        images, classes, result = PUBLISHED[dataset]
        recipe = with_defaults(TrainConfig(dataset=dataset))
        _, (seconds, std), _ = train_and_infer(
            recipe.model, classes, recipe.image_size, recipe.batch_size, warmup=1,
            steps=args.steps, width_multiplier=recipe.width_multiplier)
        rate = recipe.batch_size / seconds
        epoch_hours = images / rate / 3600
        rows.append(dict(dataset=dataset, result=result, model=recipe.model,
                         image_size=recipe.image_size, batch_size=recipe.batch_size,
                         epochs=recipe.epochs, step_seconds=seconds, step_std=std,
                         images_per_second=rate, hours_per_epoch=epoch_hours,
                         days_in_all=epoch_hours * recipe.epochs / 24,
                         precision=keras.mixed_precision.global_policy().name))
        r = rows[-1]
        print(f"{dataset}: {r['model']} {r['image_size']} px, batch {r['batch_size']}, "
              f"{r['precision']}: {seconds:.3f} +/- {std:.3f} s/step = {rate:,.1f} img/s; "
              f"{epoch_hours:.2f} h/epoch, {r['days_in_all']:.1f} days for {r['epochs']} epochs",
              flush=True)
    write_json(args.json, rows)


if __name__ == "__main__":
    main()
