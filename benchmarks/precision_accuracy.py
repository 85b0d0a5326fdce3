"""Does bfloat16 cost accuracy? The cifar10 recipe trained in float32 and in bfloat16, per seed.

    python benchmarks/precision_accuracy.py --data_dir=CIFAR-10-images --epochs=10 --seeds=1,2 \
        --work_dir=precision-cifar10

For each seed, float32 then bfloat16, one run after the other on the same machine:
    python train.py --dataset=cifar10 --data_dir=... --epochs=N --seed=S \
        --nomixed_precision | --mixed_precision --mixed_precision_dtype=bfloat16
each in `work_dir`/<precision>-seed<S> (the recipe's defaults otherwise; --epochs sets the
length of its schedule). The runs take hours, so the same command continues them: a finished run
is not run again, an interrupted one resumes from its last checkpoint (train.py's own resume).

Reports each run's held-out top-1 per epoch; per precision the mean final top-1 over the seeds
and its seed-to-seed spread (largest minus smallest); whether the two means differ by no more
than the larger spread, the test by which bfloat16 is taken as costing no accuracy; and
bfloat16's training speed over float32's (mean over the seeds of each run's median img/s over its
epochs), measured in the same script. Writes it all with --json.
"""
import os
import statistics

from harness import (  # benchmarks/harness.py
    PRECISION_FLAGS,
    argument_parser,
    in_work_dir,
    read_history,
    stop,
    train_py,
    write_json,
)


def run(args, work_dir, precision, seed):
    """One (precision, seed) run, launched or continued unless it has trained every epoch; its
    history rows."""
    run_dir = os.path.join(work_dir, f"{precision}-seed{seed}")
    if len(read_history(run_dir)) < args.epochs:
        log = run_dir + ".log"
        returncode = train_py(["--dataset=cifar10", f"--data_dir={args.data_dir}",
                               f"--epochs={args.epochs}", f"--seed={seed}",
                               *PRECISION_FLAGS[precision]], run_dir, log)
        if returncode != 0:
            stop(returncode, f"train.py ({precision}, seed {seed})", log)
    return read_history(run_dir)


def summary(runs):
    """Per precision: final top-1 per seed, their mean and spread, median img/s per seed; and the
    comparison of the two precisions."""
    by_precision = {}
    for precision in PRECISION_FLAGS:
        histories = [rows for (p, _), rows in runs.items() if p == precision]
        final = [rows[-1]["top1"] for rows in histories]
        speed = [statistics.median(r["images_per_second"] for r in rows) for rows in histories]
        by_precision[precision] = dict(final_top1=final, mean_top1=statistics.mean(final),
                                       spread=max(final) - min(final),
                                       images_per_second=statistics.mean(speed))
    f32, bf16 = by_precision["float32"], by_precision["bfloat16"]
    difference = bf16["mean_top1"] - f32["mean_top1"]
    return dict(by_precision=by_precision, difference=difference,
                within_spread=abs(difference) <= max(f32["spread"], bf16["spread"]),
                speedup=bf16["images_per_second"] / f32["images_per_second"])


def compare(args, work_dir):
    runs = {}
    for seed in args.seeds:
        for precision in PRECISION_FLAGS:
            print(f"{precision}, seed {seed}:", flush=True)
            rows = runs[precision, seed] = run(args, work_dir, precision, seed)
            print("  top-1 per epoch " + " ".join(f"{r['top1']:.4f}" for r in rows), flush=True)
    result = summary(runs)
    print(f"\n{'precision':<9} | final top-1 per seed | mean | spread | median img/s")
    for precision, p in result["by_precision"].items():
        seeds = " ".join(f"{v:.2%}" for v in p["final_top1"])
        print(f"{precision:<9} | {seeds} | {p['mean_top1']:.2%} | {p['spread']:.2%} | "
              f"{p['images_per_second']:.1f}")
    verdict = "within" if result["within_spread"] else "outside"
    print(f"bfloat16 - float32: {result['difference']:+.2%} top-1, {verdict} the seed-to-seed "
          f"spread; bfloat16 trains {result['speedup']:.2f}x as fast")
    return dict(runs={f"{p}-seed{s}": rows for (p, s), rows in runs.items()}, **result)


def main():
    parser = argument_parser(__doc__, epochs=10, seeds="1,2")
    parser.add_argument("--data_dir", required=True,
                        help="CIFAR-10: the python pickles or train/ and test/ folders")
    parser.add_argument("--work_dir", help="where the runs are kept; the same command continues "
                        "them (default: a temporary directory, removed at the end)")
    args = parser.parse_args()
    args.data_dir = os.path.abspath(os.path.expanduser(args.data_dir))
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if len(args.seeds) < 2:
        parser.error("--seeds needs two or more seeds: the spread between them is the yardstick")
    results = in_work_dir(args.work_dir, lambda work_dir: compare(args, work_dir))
    write_json(args.json, dict(epochs=args.epochs, seeds=args.seeds, **results))


if __name__ == "__main__":
    main()
