"""Generated photo-like JPEG collections for the benchmarks that need many files.

    python benchmarks/collection.py --root=~/.cache/googlenet-tf/scale --num_images=200000

Class-sorted folders (`root/all/class_000/img_000000.jpg`, ...) of photo-like images: a smooth
colour field, coarse texture and sensor-like noise, 256-400 px on each side (the size of the
photos in flower_photos or ImageNet, so decoding costs what it costs on real data), JPEG quality
90, about 32 KB each. Made once, by every core, and reused: a collection that is complete (its
`complete.json` written last) is never made again. `subset_view` gives the first N images of
every class as a tree of symbolic links, so N = 10,000 and 50,000 read the same files as 200,000.
"""
import json
import multiprocessing
import os
import time

import numpy as np
from PIL import Image

from harness import argument_parser  # benchmarks/harness.py

COMPLETE = "complete.json"


def photo(rng, height, width):
    """A photo-like RGB image: what JPEG and the decoder see in real photos, not noise or flat
    colour (either would make decoding unrealistically slow or fast)."""
    field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    texture = Image.fromarray(rng.integers(0, 256, (height // 6, width // 6, 3), dtype=np.uint8))
    pixels = (0.75 * np.asarray(field.resize((width, height), Image.BICUBIC), np.float32)
              + 0.25 * np.asarray(texture.resize((width, height), Image.BILINEAR), np.float32))
    pixels += rng.normal(0.0, 6.0, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _write_class(job):
    root, label, per_class = job
    rng = np.random.default_rng(label)
    folder = os.path.join(root, f"class_{label:03d}")
    os.makedirs(folder, exist_ok=True)
    for i in range(per_class):
        path = os.path.join(folder, f"img_{i:06d}.jpg")
        if not os.path.exists(path):
            height, width = rng.integers(256, 401, 2)
            tmp = path + ".tmp"
            photo(rng, int(height), int(width)).save(tmp, format="JPEG", quality=90)
            os.replace(tmp, path)
        else:
            rng.integers(256, 401, 2)  # keep the stream aligned with a fresh run
    return per_class


def make_collection(root, num_images, classes=100, print_fn=print):
    """`root/all` holding `num_images` JPEGs in `classes` class folders; made only if missing."""
    folder = os.path.join(root, "all")
    per_class = num_images // classes
    marker = os.path.join(folder, COMPLETE)
    if os.path.exists(marker):
        with open(marker) as f:
            made = json.load(f)
        if made["classes"] == classes and made["per_class"] >= per_class:
            return folder, made["per_class"]
    start = time.perf_counter()
    print_fn(f"Writing {classes * per_class:,} JPEGs to {folder} (once)...")
    with multiprocessing.Pool() as pool:
        pool.map(_write_class, [(folder, c, per_class) for c in range(classes)], chunksize=1)
    with open(marker, "w") as f:
        json.dump({"classes": classes, "per_class": per_class}, f)
    print_fn(f"  done in {time.perf_counter() - start:.0f} s")
    return folder, per_class


def subset_view(root, num_images, classes=100):
    """`root/n<num_images>`: the first num_images // classes files of every class of the full
    collection, as symbolic links in class folders (made once)."""
    full = os.path.join(root, "all")
    per_class = num_images // classes
    view = os.path.join(root, f"n{num_images}")
    marker = os.path.join(view, COMPLETE)
    if os.path.exists(marker):
        return view
    for label in range(classes):
        name = f"class_{label:03d}"
        os.makedirs(os.path.join(view, name), exist_ok=True)
        for i in range(per_class):
            link = os.path.join(view, name, f"img_{i:06d}.jpg")
            if not os.path.lexists(link):
                os.symlink(os.path.join(full, name, f"img_{i:06d}.jpg"), link)
    with open(marker, "w") as f:
        json.dump({"classes": classes, "per_class": per_class}, f)
    return view


def main():
    parser = argument_parser(__doc__, num_images=200_000, classes=100)
    parser.add_argument("--root", default=os.path.expanduser("~/.cache/googlenet-tf/scale"))
    args = parser.parse_args()
    make_collection(os.path.expanduser(args.root), args.num_images, args.classes)


if __name__ == "__main__":
    main()
