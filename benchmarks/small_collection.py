"""A small photo collection: the folder recipe's defaults against the Keras tutorial path.

    python benchmarks/small_collection.py --data_dir=flower_photos_split --seeds=0,1
    python benchmarks/small_collection.py --tiny_imagenet=tiny-imagenet-200 --seeds=0,1

Most users start with a few thousand photos in class folders. --data_dir takes one already split
(train/<class>/ beside val/<class>/, e.g. TensorFlow's flower_photos split 8:2); --tiny_imagenet
makes one from real photos: 10 classes of Tiny ImageNet (every 20th of its sorted class ids), the
first 500 training images of each as train/, and the official val/ images of those classes (50
each) as val/ (symbolic links, made once under --root). Then, per seed:
  (a) ours: python train.py --dataset=folder --model=minigooglenet --width_multiplier=0.5
      --image_size=64 --epochs=20, every other setting the folder recipe's default;
  (b) the Keras tutorial path (tensorflow.org/tutorials/images/classification) with the same model
      object (`inception.build_model`): `image_dataset_from_directory` at the input size,
      cache + shuffle(1000) + prefetch, RandomFlip + RandomRotation(0.1) + RandomZoom(0.1),
      Adam at its default rate, 20 epochs.
Both are scored on val/ after every epoch. Prints each epoch's held-out top-1, the Keras path's
best epoch, ours at the last epoch, and the wall times; --json writes them.
"""
import argparse
import os

from keras_baseline import fit_and_score, run_train_py, side_by_side  # benchmarks/

from harness import argument_parser, print_for_parent, run_child, write_json  # benchmarks/

CLASSES, PER_CLASS = 10, 500
SETTINGS = dict(model="minigooglenet", width_multiplier=0.5, image_size=64, epochs=20)


def make_collection(tiny_imagenet, root):
    """root/train/<wnid>/ (500 each) and root/val/<wnid>/ (the official val images)."""
    if os.path.exists(os.path.join(root, "complete")):
        return root
    train_dir = os.path.join(tiny_imagenet, "train")
    wnids = sorted(os.listdir(train_dir))[::20][:CLASSES]
    for wnid in wnids:
        images = os.path.join(train_dir, wnid, "images")
        os.makedirs(os.path.join(root, "train", wnid), exist_ok=True)
        for name in sorted(os.listdir(images))[:PER_CLASS]:
            link = os.path.join(root, "train", wnid, name)
            if not os.path.lexists(link):
                os.symlink(os.path.join(images, name), link)
    with open(os.path.join(tiny_imagenet, "val", "val_annotations.txt")) as f:
        for line in f:
            name, wnid = line.split("\t")[:2]
            if wnid in wnids:
                os.makedirs(os.path.join(root, "val", wnid), exist_ok=True)
                link = os.path.join(root, "val", wnid, name)
                if not os.path.lexists(link):
                    os.symlink(os.path.join(tiny_imagenet, "val", "images", name), link)
    open(os.path.join(root, "complete"), "w").close()
    return root


def num_classes(root):
    return len([d for d in os.listdir(os.path.join(root, "train"))
                if os.path.isdir(os.path.join(root, "train", d))])


def keras_tutorial(root, seed, epochs):
    """(b), in this process: per-epoch top-1 / top-5 on val/."""
    import keras
    import tensorflow as tf

    import inception
    keras.utils.set_random_seed(seed)
    size = SETTINGS["image_size"]
    load = dict(image_size=(size, size), batch_size=32)
    train = keras.utils.image_dataset_from_directory(os.path.join(root, "train"), shuffle=True,
                                                     seed=seed, **load)
    val = keras.utils.image_dataset_from_directory(os.path.join(root, "val"), shuffle=False,
                                                   **load)
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=seed),
                                keras.layers.RandomRotation(0.1, seed=seed),
                                keras.layers.RandomZoom(0.1, seed=seed)])
    # The tutorial scales to [0, 1]; these models take [-1, 1].
    scale = keras.layers.Rescaling(1 / 127.5, offset=-1.0)
    autotune = tf.data.AUTOTUNE
    train = train.cache().shuffle(1000, seed=seed).map(
        lambda x, y: (scale(augment(x, training=True)), y), num_parallel_calls=autotune)
    val = val.cache().map(lambda x, y: (scale(x), y), num_parallel_calls=autotune)
    net = inception.build_model(SETTINGS["model"], num_classes(root), size,
                                width_multiplier=SETTINGS["width_multiplier"])
    return fit_and_score(net, train, val, keras.optimizers.Adam(), epochs)


def main():
    parser = argument_parser(__doc__, seeds="0,1", which="ours,keras", epochs=SETTINGS["epochs"])
    parser.add_argument("--data_dir", help="a pre-split folder: train/<class>/, val/<class>/")
    parser.add_argument("--tiny_imagenet", help="tiny-imagenet-200, to make the collection from")
    parser.add_argument("--root", default=os.path.expanduser("~/.cache/googlenet-tf/small"))
    parser.add_argument("--child_seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data_dir:
        root = os.path.abspath(os.path.expanduser(args.data_dir))
    elif args.tiny_imagenet:
        root = make_collection(os.path.abspath(os.path.expanduser(args.tiny_imagenet)),
                               os.path.abspath(os.path.expanduser(args.root)))
    else:
        parser.error("give --data_dir or --tiny_imagenet")
    if args.child_seed is not None:
        print_for_parent(keras_tutorial(root, args.child_seed, args.epochs))
        return
    settings = {**SETTINGS, "epochs": args.epochs}
    flags = [f"--{k}={v}" for k, v in settings.items()]
    paths = {"ours": lambda seed, run_dir: run_train_py(
                 ["--dataset=folder", f"--data_dir={root}", f"--run_dir={run_dir}",
                  f"--seed={seed}", *flags], run_dir),
             "keras": lambda seed: run_child(os.path.abspath(__file__), f"--child_seed={seed}",
                                             f"--data_dir={root}", f"--epochs={args.epochs}")}
    results = side_by_side([int(s) for s in args.seeds.split(",")],
                           {name: paths[name] for name in args.which.split(",")})
    write_json(args.json, dict(settings=settings, results=results))


if __name__ == "__main__":
    main()
