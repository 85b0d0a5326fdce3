"""What the optimizer options cost per training step: AdamW and LAMB against SGD, gradient clipping,
and gradient accumulation, on the cifar10 recipe's step.

    python benchmarks/optimizer_options.py
    python benchmarks/optimizer_options.py --precision=float32 --rounds=5 --json=o.json

Every case is train.py's training step (training/builder.py) for MiniGoogLeNet at 32 px, batch
128, on one device, built once in this process; the rounds then time each case's --steps steps in
turn (after --warmup steps each), so a slow spell of the machine falls on every case alike. Each
case's time is the median of its rounds, and its ratio is against SGD (the recipe's step) from the
same rounds. docs/benchmarks.md gives the figures.
"""
import statistics

from harness import argument_parser, timed, training_step, write_json  # benchmarks/harness.py

# name: the TrainConfig settings the case changes from the cifar10 recipe. AdamW and LAMB at the
# rate and decay their papers' CIFAR/ImageNet recipes use (an Adam-type rate, not SGD's 0.1).
CASES = {
    "sgd": {},
    "adamw": dict(optimizer="adamw", lr=0.001, weight_decay=0.05),
    "lamb": dict(optimizer="lamb", lr=0.001, weight_decay=0.05),
    "clip_norm": dict(clip_norm=1.0),
    "grad_accum_2": dict(grad_accum_steps=2),
    "grad_accum_4": dict(grad_accum_steps=4),
}


def main() -> None:
    parser = argument_parser(__doc__, batch_size=128, warmup=5, steps=20)
    parser.add_argument("--precision", default="mixed_bfloat16",
                        choices=("float32", "mixed_bfloat16"), help="Keras precision policy")
    parser.add_argument("--rounds", type=int, default=3, help="times every case is timed")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    args = parser.parse_args()
    import keras
    keras.mixed_precision.set_global_policy(args.precision)
    steps = {}
    for name in args.cases.split(","):
        _, step, images, labels = training_step(
            "minigooglenet", 10, 32, args.batch_size, 10 ** 6, dataset="cifar10", **CASES[name])
        steps[name] = (step, images, labels)
    seconds = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, (step, images, labels) in steps.items():
            mean, _ = timed(lambda: step(images, labels)["total_loss"].numpy(), args.warmup,
                            args.steps)
            seconds[name].append(mean)
    base = statistics.median(seconds["sgd"]) if "sgd" in seconds else None
    results = []
    print(f"{'case':<14} {'s/step':>8} {'img/s':>8} {'vs sgd':>8}   ({args.precision}, batch "
          f"{args.batch_size}, median of {args.rounds} rounds of {args.steps} steps)")
    for name, times in seconds.items():
        median = statistics.median(times)
        ratio = median / base if base else None
        results.append(dict(case=name, settings=CASES[name], seconds_per_step=median,
                            images_per_second=args.batch_size / median, vs_sgd=ratio,
                            rounds=times))
        print(f"{name:<14} {median:>8.4f} {args.batch_size / median:>8.1f} "
              f"{'' if ratio is None else f'{ratio:.3f}x':>8}")
    write_json(args.json, dict(precision=args.precision, batch_size=args.batch_size,
                               results=results))


if __name__ == "__main__":
    main()
