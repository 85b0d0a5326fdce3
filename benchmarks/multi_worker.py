"""Multi-worker step: what the batch-norm statistics' all-reduce costs beside the gradients'.

    python benchmarks/multi_worker.py                 # MiniGoogLeNet, 32 px, 64 images a worker
    python benchmarks/multi_worker.py --model=googlenet_bn --image_size=64 --per_tower_batch=16

Starts two workers of one job on 127.0.0.1 (MultiWorkerMirroredStrategy, one CPU tower each, the
way train.py runs under TF_CONFIG) and, in each, times in turn: the training step train.py runs
(training/step.py: the forward and backward pass, the gradients' all-reduce inside the optimizer,
the update, then the all-reduce that averages the moving statistics); the gradients' all-reduce
alone (a SUM of tensors shaped like the trainable weights); the statistics' all-reduce alone (a
MEAN of tensors shaped like the moving statistics); and both in one all-reduce, which is what
folding the statistics into the gradients' collective would cost. Each is printed as seconds and
as a share of the step. The two workers share this machine's cores, so the step is slower than on
two machines, while loopback makes the collectives cheaper than a network: on a real cluster the
collectives' share is larger, and the statistics' share is what to compare with the gradients'.
"""
import argparse
import json
import os
import socket
import subprocess
import sys

from harness import argument_parser, print_for_parent, timed, write_json  # benchmarks/harness.py


def collective(strategy, tensors, op):
    """A tf.function all-reducing `tensors` across the job with `op`, as one batched call."""
    import tensorflow as tf

    @tf.function
    def run():
        def replica():
            reduced = tf.distribute.get_replica_context().all_reduce(
                op, [tf.identity(t) for t in tensors])
            return reduced[0][..., :1]  # a little of the result: the call is synchronous anyway
        return strategy.experimental_local_results(strategy.run(replica))[0]
    return lambda: run().numpy()


def measure(args):
    """In this worker: mean and spread of each timing, in seconds."""
    import keras
    import tensorflow as tf

    import inception
    from training import devices
    from training.step import StepConfig, make_train_step, moving_statistics
    # Each worker its share of the cores, as if on a machine of its own: two processes that each
    # run a thread pool per core of the machine slow each other down.
    tf.config.threading.set_intra_op_parallelism_threads(args.threads_per_worker)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads_per_worker)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    global_batch = args.per_tower_batch * strategy.num_replicas_in_sync
    with strategy.scope():
        model = inception.build_model(args.model, args.classes, args.image_size)
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
        optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, strategy, StepConfig(global_batch, args.classes))
    images = tf.random.uniform((args.per_tower_batch, args.image_size, args.image_size, 3), -1, 1)
    labels = tf.random.uniform((args.per_tower_batch,), 0, args.classes, tf.int32)
    batches = devices.distributed_iterator(
        strategy, lambda ctx: tf.data.Dataset.from_tensors((images, labels)).repeat())
    gradients = [tf.ones(v.shape, tf.float32) for v in model.trainable_variables]
    statistics = [tf.ones(v.shape, tf.float32) for v in moving_statistics(model)]
    if not statistics:
        raise SystemExit(f"--model={args.model} has no batch norm: nothing to measure")
    timings = {
        "step": lambda: step(*next(batches))["total_loss"].numpy(),
        "gradients": collective(strategy, gradients, tf.distribute.ReduceOp.SUM),
        "statistics": collective(strategy, statistics, tf.distribute.ReduceOp.MEAN),
        "both_in_one": collective(strategy, gradients + statistics,
                                  tf.distribute.ReduceOp.SUM),
    }
    # Every worker runs the same calls in the same order: each collective meets its peer's.
    result = {name: timed(fn, args.warmup, args.steps) for name, fn in timings.items()}
    result["values"] = {"gradients": int(sum(g.shape.num_elements() for g in gradients)),
                        "statistics": int(sum(s.shape.num_elements() for s in statistics))}
    result["tensors"] = {"gradients": len(gradients), "statistics": len(statistics)}
    return result


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_job(args):
    """Both workers' results, from two processes of this script on loopback."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    passed = [a for a in sys.argv[1:] if not a.startswith("--json")]
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": json.dumps(tf_config)}
        processes.append(subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", *passed], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for index, process in enumerate(processes):
        stdout, stderr = process.communicate()
        if process.returncode:
            raise SystemExit(f"worker {index} failed:\n{stderr[-2000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def main():
    parser = argument_parser(__doc__, model="minigooglenet", image_size=32, classes=10, warmup=5,
                             steps=30)
    parser.add_argument("--per_tower_batch", type=int, default=64,
                        help="images per worker and step")
    parser.add_argument("--threads_per_worker", type=int, default=max(1, os.cpu_count() // 2),
                        help="TensorFlow's intra- and inter-op threads in each worker")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print_for_parent(measure(args))
        return
    results = run_job(args)
    print(f"{args.model}, {args.image_size} px, {args.per_tower_batch} images a worker, 2 workers "
          f"on 127.0.0.1, {args.threads_per_worker} thread(s) each, {os.cpu_count()} CPU cores "
          f"in all")
    chief = results[0]
    print(f"all-reduced: gradients {chief['tensors']['gradients']} tensors, "
          f"{chief['values']['gradients']:,} values; moving statistics "
          f"{chief['tensors']['statistics']} tensors, {chief['values']['statistics']:,} values")
    print(f"{'':<10}{'timed':<40}{'s':>16}{'of the step':>14}")
    for index, result in enumerate(results):
        step = result["step"][0]
        for name, label in (("step", "training step (both all-reduces in it)"),
                            ("gradients", "gradients' all-reduce"),
                            ("statistics", "statistics' all-reduce"),
                            ("both_in_one", "both in one all-reduce")):
            mean, std = result[name]
            print(f"{f'worker {index}' if name == 'step' else '':<10}{label:<40}"
                  f"{mean:>9.4f} +/- {std:.4f}{mean / step:>13.1%}")
    saved = [r["gradients"][0] + r["statistics"][0] - r["both_in_one"][0] for r in results]
    print("folding the statistics into the gradients' all-reduce would save "
          + ", ".join(f"{s:.4f} s ({s / r['step'][0]:.1%})" for s, r in zip(saved, results))
          + " of a step (worker 0, worker 1)")
    write_json(args.json, dict(model=args.model, image_size=args.image_size,
                               per_tower_batch=args.per_tower_batch, cpu_count=os.cpu_count(),
                               threads_per_worker=args.threads_per_worker,
                               workers=results))


if __name__ == "__main__":
    main()
