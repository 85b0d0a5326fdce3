"""The augmentation and optimizer options on a small photo collection: the folder recipe as it
is, against it with MixUp, CutMix, RandAugment, random erasing or AugMix, or with AdamW or LAMB
in place of SGD (at docs/usage.md's example rate and decay for them, --lr=0.001
--weight_decay=0.05).

    python benchmarks/augmentation_options.py --data_dir=flower_photos_split --work_dir=DIR

--data_dir is a pre-split folder (train/<class>/ beside val/<class>/, e.g. TensorFlow's
flower_photos split 8:2, as the `dataset/` folder of github:Oldpel/flower_photos holds it). Each
variant and seed is one `python train.py --dataset=folder --model=minigooglenet
--width_multiplier=0.5 --image_size=64 --epochs=20 --seed=S` with the variant's flags added
(benchmarks/small_collection.py's settings; every other setting the folder recipe's), one after
the other, scored on val/ after every epoch. Each run's directory is kept under --work_dir, so the
same command continues an interrupted comparison: a finished run is read back, an unfinished one
resumes. Prints each run's held-out top-1 at the last epoch, then per variant the mean over the
seeds and its difference from the recipe's.
"""
import os
import statistics

from keras_baseline import run_train_py  # benchmarks/keras_baseline.py
from small_collection import SETTINGS  # benchmarks/small_collection.py

from harness import argument_parser, write_json  # benchmarks/harness.py

VARIANTS = {
    "recipe": [],
    "mixup": ["--mixup=0.2"],
    "cutmix": ["--cutmix=1"],
    "randaugment": ["--augment_policy=randaugment"],
    "random_erasing": ["--random_erasing=0.25"],
    "augmix": ["--augment_policy=augmix"],
    "adamw": ["--optimizer=adamw", "--lr=0.001", "--weight_decay=0.05"],
    "lamb": ["--optimizer=lamb", "--lr=0.001", "--weight_decay=0.05"],
}


def main() -> None:
    parser = argument_parser(__doc__, seeds="0,1", epochs=SETTINGS["epochs"])
    parser.add_argument("--data_dir", required=True,
                        help="a pre-split folder: train/<class>/, val/<class>/")
    parser.add_argument("--work_dir", required=True,
                        help="where the runs are kept; the same command continues them")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated variants, in this order")
    args = parser.parse_args()
    data_dir = os.path.abspath(os.path.expanduser(args.data_dir))
    settings = {**SETTINGS, "epochs": args.epochs}
    flags = [f"--{k}={v}" for k, v in settings.items()]
    seeds = [int(s) for s in args.seeds.split(",")]
    results = []
    for seed in seeds:
        for name in args.variants.split(","):
            run_dir = os.path.join(os.path.abspath(args.work_dir), f"{name}-s{seed}")
            print(f"seed {seed}: {name}", flush=True)
            result = run_train_py(["--dataset=folder", f"--data_dir={data_dir}",
                                   f"--run_dir={run_dir}", f"--seed={seed}", *flags,
                                   *VARIANTS[name]], run_dir)
            results.append(dict(variant=name, seed=seed, flags=VARIANTS[name], **result))
            print(f"  top-1 per epoch {' '.join(f'{v:.4f}' for v in result['top1'])}; "
                  f"last {result['top1'][-1]:.2%}", flush=True)
    last = {name: [r["top1"][-1] for r in results if r["variant"] == name]
            for name in args.variants.split(",")}
    base = statistics.mean(last["recipe"]) if "recipe" in last else None
    print(f"\n{'variant':<16} " + " ".join(f"{'seed ' + str(s):>8}" for s in seeds)
          + f" {'mean':>8} {'vs recipe':>10}")
    for name, scores in last.items():
        mean = statistics.mean(scores)
        difference = "" if base is None else f"{(mean - base) * 100:+.2f} pt"
        print(f"{name:<16} " + " ".join(f"{s:>8.2%}" for s in scores)
              + f" {mean:>8.2%} {difference:>10}")
    write_json(args.json, dict(settings=settings, variants=VARIANTS, results=results))


if __name__ == "__main__":
    main()
