"""Training and inference speed of one model, side by side in one run (never run by the tests).

    python benchmarks/model_speed.py                                  # googlenet, batch 32, 224 px
    python benchmarks/model_speed.py --model=googlenet_bn --batch_size=16 --image_size=128

Times (a) our hand-written training step (training/step.py), (b) the same Keras model trained with
`model.fit`, (c) forward passes (inference), and (d) torchvision's GoogLeNet when PyTorch is
installed (`pip install -e ".[bench]"`; skipped with a message otherwise). Warm-up steps are
discarded; each figure is the mean +/- standard deviation of the timed steps, as TensorFlow's
classic Inception timing script reports. FLOPs are counted once, by TensorFlow's profiler on the
forward graph (2 per multiply-add), and stated; training counts 3x the forward FLOPs.
"""
import argparse
import importlib.util
import os
import time

import numpy as np

from harness import (  # benchmarks/harness.py
    argument_parser,
    child_result,
    forward_flops,
    print_for_parent,
    timed,
    train_and_infer,
    write_json,
)


def keras_fit(args, classes):
    """The same model through model.fit: a functional wrapper mapping outputs to the same loss."""
    import keras

    import inception
    model = inception.build_model(args.model, classes, args.image_size)
    inputs = keras.Input((args.image_size, args.image_size, 3))
    outputs = model(inputs, training=True)
    names = sorted(outputs)
    wrapped = keras.Model(inputs, [outputs[n] for n in names])
    weights = [1.0 if n == "logits" else 0.3 for n in names]
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    wrapped.compile(keras.optimizers.SGD(0.01, momentum=0.9), loss=[cross_entropy] * len(names),
                    loss_weights=weights, jit_compile=args.jit_compile)
    n = args.batch_size * (args.warmup + args.steps)
    images = np.random.uniform(-1, 1, (n, args.image_size, args.image_size, 3)).astype("float32")
    labels = np.random.randint(0, classes, n)

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.start)
    times = StepTimes()
    wrapped.fit(images, [labels] * len(names), batch_size=args.batch_size, epochs=1, verbose=0,
                callbacks=[times], shuffle=False)
    kept = times.times[args.warmup:]
    return float(np.mean(kept)), float(np.std(kept))


def torchvision_in_subprocess():
    """torchvision's numbers from a child process: importing torchvision beside TensorFlow crashes
    (clashing native libraries), and a separate process keeps the two runtimes' thread pools apart.
    None when PyTorch or torchvision is not installed."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None:
        return None
    return child_result(__file__, "--torch_child")


def torchvision_googlenet(args, classes):
    import torch
    import torchvision
    torch.set_num_threads(os.cpu_count())
    model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True,
                                         num_classes=classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.rand(args.batch_size, 3, args.image_size, args.image_size) * 2 - 1
    labels = torch.randint(0, classes, (args.batch_size,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_step():
        model.train()
        optimizer.zero_grad()
        out = model(images)
        loss = loss_fn(out.logits, labels) + 0.3 * (loss_fn(out.aux_logits1, labels)
                                                    + loss_fn(out.aux_logits2, labels))
        loss.backward()
        optimizer.step()

    def infer():
        model.eval()
        with torch.no_grad():
            model(images)
    return timed(train_step, args.warmup, args.steps), timed(infer, args.warmup, args.steps)


def torchvision_forward_flops(image_size, classes):
    """2 x multiply-adds of torchvision GoogLeNet's convolutions and linear layers, one image."""
    import torch
    import torchvision
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True,
                                         num_classes=classes).eval()
    total = [0]

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * \
                module.kernel_size[1]
            total[0] += 2 * output.numel() * per_output
        elif isinstance(module, torch.nn.Linear):
            total[0] += 2 * module.in_features * module.out_features
    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    for hook in hooks:
        hook.remove()
    return total[0]


def main():
    parser = argument_parser(__doc__, model="googlenet", batch_size=32, image_size=224,
                             classes=1000, warmup=3, steps=10, jit_compile=False)
    parser.add_argument("--torch_child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_child:
        train, infer = torchvision_googlenet(args, args.classes)
        print_for_parent(dict(train=train, infer=infer,
                              flops=torchvision_forward_flops(args.image_size, args.classes)))
        return

    model, train, infer = train_and_infer(args.model, args.classes, args.image_size,
                                          args.batch_size, warmup=args.warmup, steps=args.steps,
                                          jit_compile=args.jit_compile)
    flops = forward_flops(model, args.image_size)
    fit = keras_fit(args, args.classes)
    torch_result = torchvision_in_subprocess() if args.model == "googlenet" else None
    batch = args.batch_size

    def rates(mean_std, train_flops):
        mean, std = mean_std
        return dict(seconds=mean, std=std, img_per_s=batch / mean,
                    gflop_per_s=train_flops * batch / mean / 1e9)
    results = dict(model=args.model, batch_size=batch, image_size=args.image_size,
                   forward_gflops_per_image=flops / 1e9, cpu_count=os.cpu_count(),
                   ours_train=rates(train, 3 * flops), keras_fit_train=rates(fit, 3 * flops),
                   ours_inference=rates(infer, flops))
    print(f"{args.model}, batch {batch}, {args.image_size} px: {flops / 1e9:.2f} GFLOPs forward "
          f"per image (TF profiler; training counted as 3x)")
    print(f"{'':<28}{'s/batch':>16}{'img/s':>10}{'GFLOP/s':>10}")
    rows = [("ours: train step", results["ours_train"]),
            ("keras model.fit", results["keras_fit_train"]),
            ("ours: inference", results["ours_inference"])]
    if torch_result is None:
        print("(torchvision not installed or another model: skipping PyTorch; "
              "pip install -e \".[bench]\")")
    else:
        # torchvision's "5x5" branch is a 3x3, so it does less work: its GFLOP/s use its own
        # FLOPs, counted the same way (2 per multiply-add of its convolutions and linears).
        torch_flops = torch_result["flops"]
        results["torchvision_forward_gflops_per_image"] = torch_flops / 1e9
        results["torchvision_train"] = rates(torch_result["train"], 3 * torch_flops)
        results["torchvision_inference"] = rates(torch_result["infer"], torch_flops)
        results["ours_over_torchvision_train_gflops"] = (
            results["ours_train"]["gflop_per_s"] / results["torchvision_train"]["gflop_per_s"])
        results["ours_over_torchvision_inference_img"] = (
            results["ours_inference"]["img_per_s"] / results["torchvision_inference"]["img_per_s"])
        rows += [("torchvision: train step", results["torchvision_train"]),
                 ("torchvision: inference", results["torchvision_inference"])]
    for name, r in rows:
        print(f"{name:<28}{r['seconds']:>9.3f} +/- {r['std']:.3f}{r['img_per_s']:>10.1f}"
              f"{r['gflop_per_s']:>10.1f}")
    results["ours_train_over_keras_fit"] = fit[0] / train[0]
    print(f"ours / model.fit (training speed): {results['ours_train_over_keras_fit']:.2f}x")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
