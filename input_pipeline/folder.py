"""A generic class-per-folder tree: `root/<class name>/*.{jpg,jpeg,png,bmp,gif}` (any case)."""
import os

import numpy as np

from input_pipeline.examples import Examples, RawDataset, is_image_file

LAYOUT = """  DATA_DIR/
    <class 1>/image001.jpg ...
    <class 2>/image001.png ...   (jpg, jpeg, png, bmp or gif; one folder per class)"""


def missing_dir_error(data_dir, dataset, layout):
    return ValueError(f"--data_dir={data_dir!r} does not exist or is not a directory; "
                      f"the {dataset} dataset expects this layout:\n{layout}")


def list_class_folders(root, dataset="folder", layout=LAYOUT):
    if not root or not os.path.isdir(root):
        raise missing_dir_error(root, dataset, layout)
    classes = sorted(d for d in os.listdir(root)
                     if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not classes:
        raise ValueError(f"{root!r} holds no class folders; the {dataset} dataset expects:\n{layout}")
    return classes


def list_images(folder):
    """Image files in `folder`, sorted; raises naming the folder when there are none."""
    names = sorted(n for n in os.listdir(folder) if is_image_file(n))
    if not names:
        raise ValueError(f"Class folder {folder!r} holds no image files "
                         f"(expected .jpg, .jpeg, .png, .bmp or .gif)")
    return [os.path.join(folder, n) for n in names]


def read_class_folders(root, class_names, subdir="", dataset="folder"):
    """Paths and labels of every image under root/<class>/<subdir>/."""
    paths, labels = [], []
    for label, name in enumerate(class_names):
        files = list_images(os.path.join(root, name, subdir) if subdir else os.path.join(root, name))
        paths += files
        labels += [label] * len(files)
    return paths, labels


def load(data_dir):
    root = os.path.abspath(os.path.expanduser(data_dir)) if data_dir else data_dir
    classes = list_class_folders(root)
    if len(classes) < 2:
        raise ValueError(f"{root!r} holds one class folder ({classes[0]!r}); a classifier needs "
                         f"at least two. Expected layout:\n{LAYOUT}")
    paths, labels = read_class_folders(root, classes)
    return RawDataset(classes, Examples(np.array(labels), paths=np.array(paths)))
