"""What makes TensorFlow fast here: each setting's training step and inference speed, one run.

    python benchmarks/tuning.py                             # googlenet, batch 16, 224 px
    python benchmarks/tuning.py --image_size=64 --batch_size=32 --json=tuning.json

Every setting runs in its own process (thread pools and the precision policy are fixed once
TensorFlow starts) and is reported as a ratio against the default, measured in the same run:
  default        float32, TensorFlow's own thread pools, no XLA (oneDNN kernels, NHWC), glibc's
                 malloc as it comes
  malloc         glibc's malloc as train.py sets it (host/runtime.py: 2 arenas, freed
                 memory kept for reuse)
  xla            --jit_compile: each tower's forward and backward pass compiled by XLA
  bfloat16       --mixed_precision: bfloat16 compute, float32 weights (what train.py uses on CPU)
  intra_cores_inter_1 / _2   one op's thread pool set to the core count; an inter-op pool of 1 / 2
Data layout is not a setting: TensorFlow's CPU convolutions only take NHWC (channels last), which
is what the models use.
"""
import argparse
import os

from harness import (  # benchmarks/harness.py
    argument_parser,
    child_result,
    print_for_parent,
    train_and_infer,
    write_json,
)

SETTINGS = {
    "default": {},
    "malloc": {"malloc": True},
    "xla": {"jit_compile": True},
    "bfloat16": {"mixed_precision": True},
    "intra_cores_inter_1": {"intra_op": os.cpu_count(), "inter_op": 1},
    "intra_cores_inter_2": {"intra_op": os.cpu_count(), "inter_op": 2},
}


def measure(args, setting):
    if setting.get("malloc"):  # before TensorFlow starts its threads
        from host.runtime import configure_malloc  # harness.py put the root on sys.path
        configure_malloc()
    import keras
    import tensorflow as tf
    if "intra_op" in setting:
        tf.config.threading.set_intra_op_parallelism_threads(setting["intra_op"])
        tf.config.threading.set_inter_op_parallelism_threads(setting["inter_op"])
    if setting.get("mixed_precision"):
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    _, train, inference = train_and_infer(
        args.model, args.classes, args.image_size, args.batch_size, warmup=args.warmup,
        steps=args.steps, jit_compile=setting.get("jit_compile", False),
        width_multiplier=args.width_multiplier)
    return dict(train_seconds=train[0], train_std=train[1],
                inference_seconds=inference[0], inference_std=inference[1])


def main():
    parser = argument_parser(__doc__, model="googlenet", batch_size=16, image_size=224,
                             classes=1000, width_multiplier=1.0, warmup=2, steps=5)
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="comma-separated subset of: " + ", ".join(SETTINGS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    chosen = [s.strip() for s in args.settings.split(",")]
    unknown = [s for s in chosen if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown --settings {unknown}; valid: {', '.join(SETTINGS)}")

    if args.child:
        print_for_parent(measure(args, SETTINGS[args.child]))
        return
    if "default" not in chosen:
        chosen.insert(0, "default")
    # Each child measures the one setting it is given, not the parent's --settings.
    results = {name: child_result(__file__, f"--child={name}", drop=("--settings",))
               for name in chosen}
    base = results["default"]
    print(f"{args.model}, batch {args.batch_size}, {args.image_size} px, {os.cpu_count()} cores; "
          "speed-up = default time / setting time")
    print(f"{'setting':<32}{'train s/batch':>20}{'speed-up':>10}{'infer s/batch':>20}"
          f"{'speed-up':>10}")
    for name, r in results.items():
        r["train_speedup"] = base["train_seconds"] / r["train_seconds"]
        r["inference_speedup"] = base["inference_seconds"] / r["inference_seconds"]
        print(f"{name:<32}{r['train_seconds']:>11.3f} +/- {r['train_std']:.3f}"
              f"{r['train_speedup']:>9.2f}x{r['inference_seconds']:>11.3f} +/- "
              f"{r['inference_std']:.3f}{r['inference_speedup']:>9.2f}x")
    write_json(args.json, dict(model=args.model, batch_size=args.batch_size,
                               image_size=args.image_size, cpu_count=os.cpu_count(),
                               settings=results))


if __name__ == "__main__":
    main()
