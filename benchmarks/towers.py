"""Multi-tower scaling: training-step img/s with 1 and N towers, and the scaling efficiency.

    python benchmarks/towers.py --num_gpus=2                    # 1 vs 2 towers
    python benchmarks/towers.py --num_gpus=4 --model=googlenet --image_size=224 --json=t.json

Each tower count runs in its own process (towers must be set up before TensorFlow starts). With
GPUs the towers are GPUs; without, the CPU is split into logical devices, as the tests do, which
shows what the tower machinery costs rather than a speed-up: the CPU's cores are shared by all
towers whatever their number. Weak scaling: every tower keeps --per_tower_batch, so N towers train
N times the images per step; efficiency = img/s with N towers / (N x img/s with one). The step is
train.py's (built as the trainer builds it, training/builder.py: the folder recipe's SGD, weight
decay and label smoothing), in float32.
"""
import argparse
import os

from harness import (  # benchmarks/harness.py
    argument_parser,
    child_result,
    print_for_parent,
    step_config,
    timed,
    towers_and_state,
    write_json,
)


def measure(args, towers):
    """In this process: img/s of train.py's training step with `towers` towers."""
    import tensorflow as tf

    from training import builder, devices
    use_cpu = not tf.config.list_physical_devices("GPU")
    tower_devices = devices.configure_towers(towers, towers_on_cpu=use_cpu)
    global_batch = args.per_tower_batch * towers
    config = step_config(args.model, args.classes, args.image_size, global_batch,
                         jit_compile=args.jit_compile)
    built, state = towers_and_state(config, tower_devices, "float32", args.warmup + args.steps)
    step = builder.build_steps(config, built, state).train
    batch = built.per_tower_batch
    images = tf.random.uniform((batch, args.image_size, args.image_size, 3), -1, 1)
    labels = tf.random.uniform((batch,), 0, args.classes, tf.int32)
    # Every tower gets its own batch through the same distributed-dataset path training uses.
    batches = devices.distributed_iterator(
        built.strategy, lambda ctx: tf.data.Dataset.from_tensors((images, labels)).repeat())
    seconds, std = timed(lambda: step(*next(batches))["total_loss"].numpy(), args.warmup,
                         args.steps)
    return dict(towers=towers, global_batch=global_batch, seconds=seconds, std=std,
                img_per_s=global_batch / seconds,
                devices=list(built.strategy.extended.worker_devices))


def main():
    parser = argument_parser(__doc__, model="googlenet", image_size=64, classes=100, warmup=2,
                             steps=5, jit_compile=False)
    parser.add_argument("--num_gpus", type=int, default=2, help="N: the most towers to time")
    parser.add_argument("--per_tower_batch", type=int, default=16)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.num_gpus < 1:
        parser.error(f"--num_gpus must be >= 1, got {args.num_gpus}")

    if args.child:
        print_for_parent(measure(args, args.child))
        return
    def timed_in_child(towers, per_tower):
        return child_result(__file__, f"--child={towers}", f"--per_tower_batch={per_tower}")
    results = [timed_in_child(1, args.per_tower_batch)]
    if args.num_gpus > 1:
        results.append(timed_in_child(args.num_gpus, args.per_tower_batch))
        if all("CPU" in d.upper() for d in results[1]["devices"]):
            # Towers sharing the same cores: N towers' whole batch on one tower prices the
            # tower machinery itself.
            results.append(timed_in_child(1, args.per_tower_batch * args.num_gpus))
    one = results[0]["img_per_s"]
    print(f"{args.model}, {args.image_size} px, {os.cpu_count()} CPU cores")
    print(f"{'towers':<8}{'global batch':>14}{'s/step':>18}{'img/s':>10}{'efficiency':>12}")
    for r in results[:2]:
        r["efficiency"] = r["img_per_s"] / (r["towers"] * one)
    for r in results:
        efficiency = f"{r['efficiency']:.2f}" if "efficiency" in r else "-"
        print(f"{r['towers']:<8}{r['global_batch']:>14}{r['seconds']:>11.3f} +/- {r['std']:.3f}"
              f"{r['img_per_s']:>10.1f}{efficiency:>12}")
    if len(results) == 3:
        overhead = results[2]["img_per_s"] / results[1]["img_per_s"]
        print(f"one tower / {args.num_gpus} towers at the same global batch: {overhead:.2f}x "
              "(the cost of the tower machinery on shared cores)")
    print("devices:", ", ".join(results[min(1, len(results) - 1)]["devices"]))
    write_json(args.json, dict(model=args.model, image_size=args.image_size,
                               per_tower_batch=args.per_tower_batch, cpu_count=os.cpu_count(),
                               results=results))


if __name__ == "__main__":
    main()
