"""How close the training step comes to the machine: its FLOP/s against a large matmul's.

    python benchmarks/utilization.py                       # cifar10 recipe and GoogLeNet 224 px
    python benchmarks/utilization.py --cases=cifar10 --precisions=mixed_bfloat16 --json=u.json

For each precision (its own process: Keras' policy and TensorFlow's thread pools are fixed once it
starts) it measures
  peak      tf.matmul of two --matmul_size squares in the precision's compute type, 2 n^3 FLOPs a
            call: what the machine's math library reaches on the best-shaped work there is;
  model     the forward FLOPs per image (TensorFlow's profiler on the forward graph, 2 per
            multiply-add), times 3 for a training step (forward, and the backward pass's two
            products);
  step      train.py's training step (training/builder.py: the recipe's SGD, weight decay, label
            smoothing, aux heads) on one device, images per second;
  where     one profiled run of the step, its op time by kind (convolutions and matmuls, batch
            norm, concatenation and slicing, pooling, element-wise, the optimizer's update);
and prints utilization = model FLOPs x img/s / peak. docs/benchmarks.md gives the figures.
"""
import argparse
import glob
import os
import re
import tempfile

from harness import (  # benchmarks/harness.py
    argument_parser,
    child_result,
    forward_flops,
    print_for_parent,
    timed,
    training_step,
    write_json,
)

# name: (model, image size, batch, classes, the recipe whose step is timed)
CASES = {
    "cifar10": ("minigooglenet", 32, 64, 10, "cifar10"),
    "googlenet224": ("googlenet", 224, 32, 1000, "imagenet"),
}
PRECISIONS = ("float32", "mixed_bfloat16")
# Op kinds, by a profiler event's name ("<layer path>/<op>:<op type>"), first match wins. Batch
# norm is told by its op type (the models' fused kernel, FusedBatchNormV3) or, computed the way
# Keras 3's own layer does it from element-wise ops (its moments, then scale and shift), by the
# layer's name in the path; the concatenations' backward passes are slices. The op type may
# carry oneDNN's prefix (`_MklNativeConv2D`, `_MklFusedMatMul`: the bfloat16 kernels), so the
# kinds match anywhere in it.
KINDS = (
    ("optimizer update", re.compile(r"^sgd/|/update_|:\w*(ResourceApply|AssignSub|AssignAdd)")),
    ("batch norm", re.compile(r"/bn_?\d*/|batchnorm|moments|BatchNorm")),
    ("convolution / matmul", re.compile(r":\w*(Conv2D|MatMul)")),
    ("concat / slice", re.compile(r":\w*(Concat|Slice|Split)\w*$")),
    ("pooling", re.compile(r":\w*(MaxPool|AvgPool)")),
)


def matmul_peak(size, dtype, warmup=2, steps=10):
    """(GFLOP/s, seconds per call) of one size x size matmul in `dtype`."""
    import tensorflow as tf
    a = tf.random.uniform((size, size), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
    matmul = tf.function(lambda x, y: tf.matmul(x, y))
    seconds, _ = timed(lambda: matmul(a, b).numpy(), warmup, steps)
    return 2 * size ** 3 / seconds / 1e9, seconds


def op_time_by_kind(step, images, labels, steps=3):
    """{kind: share of the op time} of `steps` profiled calls of the training step."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    with tempfile.TemporaryDirectory() as log_dir:
        tf.profiler.experimental.start(log_dir)
        for _ in range(steps):
            step(images, labels)["total_loss"].numpy()
        tf.profiler.experimental.stop()
        path = glob.glob(os.path.join(log_dir, "plugins", "profile", "*", "*.xplane.pb"))[0]
        with open(path, "rb") as f:
            space = xplane_pb2.XSpace.FromString(f.read())
    totals = {}
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):  # the executor's op threads
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or "::" in name:  # the executor's own spans enclose the ops
                    continue
                kind = next((k for k, pattern in KINDS if pattern.search(name)),
                            "element-wise and other")
                totals[kind] = totals.get(kind, 0) + event.duration_ps
    whole = sum(totals.values()) or 1
    return {kind: ps / whole for kind, ps in sorted(totals.items(), key=lambda kv: -kv[1])}


def measure(args, precision):
    """One precision's peak and every case's step, in this process."""
    import keras
    import tensorflow as tf
    keras.mixed_precision.set_global_policy(precision)
    compute = tf.bfloat16 if precision == "mixed_bfloat16" else tf.float32
    peak, matmul_seconds = matmul_peak(args.matmul_size, compute)
    result = dict(precision=precision, peak_gflops=peak, matmul_seconds=matmul_seconds, cases={})
    for name in args.cases.split(","):
        model_name, size, batch, classes, recipe = CASES[name]
        model, step, images, labels = training_step(model_name, classes, size, batch,
                                                    args.warmup + args.steps + 3, dataset=recipe)
        train = timed(lambda: step(images, labels)["total_loss"].numpy(), args.warmup,
                      args.steps)
        flops = forward_flops(model, size)
        images_per_second = batch / train[0]
        achieved = 3 * flops * images_per_second / 1e9
        result["cases"][name] = dict(
            model=model_name, image_size=size, batch_size=batch,
            forward_gflops_per_image=flops / 1e9, step_seconds=train[0], step_std=train[1],
            images_per_second=images_per_second, training_gflops=achieved,
            utilization=achieved / peak, op_time=op_time_by_kind(step, images, labels))
    return result


def main():
    parser = argument_parser(__doc__, warmup=3, steps=10)
    parser.add_argument("--cases", default=",".join(CASES),
                        help="comma-separated subset of: " + ", ".join(CASES))
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help="comma-separated subset of: " + ", ".join(PRECISIONS))
    parser.add_argument("--matmul_size", type=int, default=4096,
                        help="side of the square matrices of the peak's matmul")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for value, valid, flag in ((args.cases, CASES, "--cases"),
                               (args.precisions, PRECISIONS, "--precisions")):
        unknown = [v for v in value.split(",") if v not in valid]
        if unknown:
            parser.error(f"unknown {flag} {unknown}; valid: {', '.join(valid)}")
    if args.child:
        print_for_parent(measure(args, args.child))
        return
    results = [child_result(__file__, f"--child={p}", drop=("--precisions",))
               for p in args.precisions.split(",")]
    print(f"{os.cpu_count()} cores; utilization = 3 x forward FLOPs x img/s / matmul peak")
    print(f"{'precision':<16}{'case':<14}{'GFLOP/img':>10}{'img/s':>9}{'GFLOP/s':>9}"
          f"{'peak':>9}{'util.':>8}")
    for r in results:
        for name, c in r["cases"].items():
            print(f"{r['precision']:<16}{name:<14}{c['forward_gflops_per_image']:>10.3f}"
                  f"{c['images_per_second']:>9.1f}{c['training_gflops']:>9.1f}"
                  f"{r['peak_gflops']:>9.1f}{c['utilization']:>8.1%}")
            print("    op time: " + ", ".join(f"{kind} {share:.0%}"
                                              for kind, share in c["op_time"].items()))
    write_json(args.json, dict(cpu_count=os.cpu_count(), matmul_size=args.matmul_size,
                               results=results))


if __name__ == "__main__":
    main()
