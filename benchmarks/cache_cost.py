"""What each cache form costs, on real photos, at the cache sizes of the datasets users train on.

    python benchmarks/cache_cost.py --data_dir=flower_photos      # any folder of real photos

For each input size (CIFAR-10's 32 px, Tiny ImageNet's 64, mini-ImageNet's 96, ImageNet's 224),
the photos (up to --num_images, read through the real pipeline, `InputPipeline`) are cached twice
in the same run: raw pixels on disk (`--cache=disk`) and re-encoded JPEGs (`--cache=disk_jpeg`).
For each: bytes per image, epochs 2+ img/s of the evaluation pipeline read from the cache (the
files in the page cache, as on any machine with room for them), and the re-encoding's error
(PSNR of the JPEG cache's pixels against the raw cache's). From the bytes per image it computes
what each form costs for each dataset's training and held-out images (the memory cache holds the
raw bytes), beside the data's own size where it is known.
"""
import glob
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from harness import argument_parser, write_json  # noqa: E402  (benchmarks/harness.py)

# Training images per dataset and its recipe's input size: CIFAR-10 and ImageNet as released,
# Tiny ImageNet's 100,000, mini-ImageNet's 60,000 less the 30% this project holds out. The data's
# own bytes: CIFAR-10's pixel arrays (32 x 32 x 3 each), Tiny ImageNet's JPEGs (measured: 2.0 KB
# each), ImageNet's training JPEGs (about 140 GB as distributed); mini-ImageNet's depend on the
# release (84-px pickles or full-size JPEGs). The held-out images add their share to each.
DATASETS = {
    "CIFAR-10": dict(images=50_000, image_size=32, own_bytes=50_000 * 32 * 32 * 3),
    "Tiny ImageNet": dict(images=100_000, image_size=64, own_bytes=100_000 * 2_000),
    "mini-ImageNet": dict(images=42_000, image_size=96, own_bytes=None),
    "ImageNet": dict(images=1_281_167, image_size=224, own_bytes=140e9),
}


def measure(examples, image_size, scratch, repeats):
    from input_pipeline import InputPipeline
    figures, pixels = {}, {}
    for cache in ("disk", "disk_jpeg"):
        pipeline = InputPipeline(examples, image_size=image_size, training=False, cache=cache,
                                 cache_dir=os.path.join(scratch, f"{cache}-{image_size}"))
        pixels[cache] = np.concatenate([x.numpy() for x, _ in pipeline.dataset(64)])
        best = 0.0
        for _ in range(repeats):  # the best of a few whole passes: a noisy pass cannot flatter
            start, count = time.perf_counter(), 0
            for x, _ in pipeline.dataset(64):
                count += int(x.shape[0])
            best = max(best, count / (time.perf_counter() - start))
        figures[cache] = dict(bytes_per_image=pipeline.cache_bytes / pipeline.num_examples,
                              images_per_second=best)
    error = (pixels["disk"] - pixels["disk_jpeg"]) * 127.5  # back to grey levels
    figures["psnr_db"] = float(10 * np.log10(255 ** 2 / np.mean(error ** 2)))
    return figures


def main():
    parser = argument_parser(__doc__, num_images=2000)
    parser.add_argument("--data_dir", required=True, help="a folder of real photos (any depth)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from input_pipeline.examples import Examples, is_image_file
    paths = sorted(p for p in glob.glob(os.path.join(os.path.expanduser(args.data_dir), "**", "*"),
                                        recursive=True) if is_image_file(p))[:args.num_images]
    examples = Examples(np.zeros(len(paths), np.int32), paths=np.array(paths))
    print(f"{len(paths)} photos from {args.data_dir}, mean file "
          f"{np.mean([os.path.getsize(p) for p in paths]) / 1e3:.1f} KB")
    scratch = tempfile.mkdtemp(prefix="cache-cost-")
    results = {}
    try:
        for size in sorted({d["image_size"] for d in DATASETS.values()}):
            results[size] = measure(examples, size, scratch, args.repeats)
            shutil.rmtree(scratch)
            os.makedirs(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\n{'input':>5} | {'raw KB/img':>10} {'raw img/s':>10} | {'jpeg KB/img':>11} "
          f"{'jpeg img/s':>10} | {'raw/jpeg bytes':>14} {'jpeg/raw speed':>14} | PSNR")
    for size, r in results.items():
        raw, jpeg = r["disk"], r["disk_jpeg"]
        print(f"{size:>5} | {raw['bytes_per_image'] / 1e3:10.1f} "
              f"{raw['images_per_second']:10,.0f} | "
              f"{jpeg['bytes_per_image'] / 1e3:11.1f} {jpeg['images_per_second']:10,.0f} | "
              f"{raw['bytes_per_image'] / jpeg['bytes_per_image']:13.1f}x "
              f"{jpeg['images_per_second'] / raw['images_per_second']:13.2f}x | "
              f"{r['psnr_db']:.1f} dB")
    print(f"\n{'dataset':<14} {'images':>10} {'input':>5} | {'memory / disk (raw)':>19} "
          f"{'disk_jpeg':>10} | {'the data itself':>15}")
    table = {}
    for name, d in DATASETS.items():
        r = results[d["image_size"]]
        raw = d["images"] * r["disk"]["bytes_per_image"]
        jpeg = d["images"] * r["disk_jpeg"]["bytes_per_image"]
        own = d["own_bytes"]
        table[name] = dict(d, raw_bytes=raw, jpeg_bytes=jpeg)
        print(f"{name:<14} {d['images']:>10,} {d['image_size']:>5} | {raw / 1e9:16.2f} GB "
              f"{jpeg / 1e9:7.2f} GB | {'%.2f GB' % (own / 1e9) if own else 'varies':>15}")
    write_json(args.json, dict(per_size=results, datasets=table))


if __name__ == "__main__":
    main()
