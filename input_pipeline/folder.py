"""A generic tree of class folders, in either of the two layouts photo collections come in.

Class folders, split by the project (stratified 7:3 by default, saved in the run directory):
    root/<class name>/*.{jpg,jpeg,png,bmp,gif}   (any case)
Already split (PyTorch ImageFolder tutorials, Kaggle sets, CIFAR-10 as images, flower_data):
    root/train/<class name>/*.jpg  beside  root/val/<class name>/  and/or  root/test/<class name>/
The held-out folder may be called val, valid, validation or test, in any case. train/ is trained
on and its class folders are the classes; the held-out folder is scored as it is, with no re-split.
With both val/ and test/, val/ is scored during training and evaluate.py scores either.

Names are taken as the file system gives them: spaces and any script train as they are. A file
name that is not valid UTF-8 is left out with a warning naming it (TensorFlow takes paths as
UTF-8), a class folder so named or one that cannot be listed is refused naming it; a file that
cannot be read (no permission, a symlink loop) is listed and skipped by the first pass.
"""
import os

import numpy as np
from absl import logging

from input_pipeline.examples import Examples, RawDataset, is_image_file

LAYOUT = """  DATA_DIR/
    <class 1>/image001.jpg ...
    <class 2>/image001.png ...   (jpg, jpeg, png, bmp or gif; one folder per class)
or, already split:
  DATA_DIR/
    train/<class 1>/image001.jpg ...
    val/<class 1>/image001.jpg ...    (val, valid, validation and/or test; any case)"""
# Held-out folder names (lower case) -> the split's name in the run directory.
HELD_OUT_FOLDERS = {"val": "val", "valid": "val", "validation": "val", "test": "test"}
TRAIN_FOLDER = "train"


def missing_dir_error(data_dir, dataset, layout):
    return ValueError(f"--data_dir={data_dir!r} does not exist or is not a directory; "
                      f"the {dataset} dataset expects this layout:\n{layout}")


def dataset_root(data_dir, dataset, layout, archive_folder=None):
    """`data_dir` as an absolute path, checked to be a directory; its `archive_folder` when that is
    inside (a dataset's archive unpacks into its own folder, e.g. tiny-imagenet-200/)."""
    root = os.path.abspath(os.path.expanduser(data_dir)) if data_dir else data_dir
    if not root or not os.path.isdir(root):
        raise missing_dir_error(data_dir, dataset, layout)
    if _not_utf8(root):
        raise ValueError(f"--data_dir='{shown(root)}' is not valid UTF-8, which TensorFlow cannot "
                         f"take in a path; rename it or link to it under a UTF-8 name")
    if archive_folder and os.path.isdir(os.path.join(root, archive_folder)):
        root = os.path.join(root, archive_folder)
    return root


def shown(path):
    """`path` printable: the bytes of a name that is not UTF-8 as \\x escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _not_utf8(name):
    """Whether `name` (from os.listdir) holds bytes that are not UTF-8 (surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _listed(folder):
    """os.listdir, with a folder that cannot be listed (no permission) named in one line."""
    try:
        return os.listdir(folder)
    except OSError as error:
        raise ValueError(f"Folder '{shown(folder)}' cannot be listed ({error.strerror}); make it "
                         f"readable, or move it out of the data directory") from None


def _subfolders(root):
    return sorted(d for d in _listed(root)
                  if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))


def _check_class_name(root, name):
    """A class folder's name goes into class_names.txt, one per line, and into every path."""
    if _not_utf8(name) or "\n" in name or "\r" in name:
        problem = "is not valid UTF-8" if _not_utf8(name) else "holds a line break"
        raise ValueError(f"Class folder '{shown(os.path.join(root, name))}': its name {problem}, "
                         f"which a class name cannot be; rename the folder")


def list_class_folders(root, dataset="folder", layout=LAYOUT):
    if not root or not os.path.isdir(root):
        raise missing_dir_error(root, dataset, layout)
    classes = _subfolders(root)
    for name in classes:
        _check_class_name(root, name)
    if not classes:
        raise ValueError(f"{root!r} holds no class folders; the {dataset} dataset "
                         f"expects:\n{layout}")
    return classes


def list_images(folder, allow_empty=False):
    """Image files in `folder`, sorted; raises naming the folder when there are none. Those whose
    names are not valid UTF-8 are left out, named in a warning."""
    names = sorted(n for n in _listed(folder) if is_image_file(n))
    unnamed = [n for n in names if _not_utf8(n)]
    if unnamed:
        names = [n for n in names if not _not_utf8(n)]
        logging.warning("Left out %d file(s) in %s whose names are not valid UTF-8, which "
                        "TensorFlow cannot take as paths: %s; rename them (e.g. convmv -f latin1 "
                        "-t utf8 --notest) to train on them", len(unnamed), shown(folder),
                        ", ".join(shown(n) for n in unnamed[:5]) + (", ..." if len(unnamed) > 5
                                                                   else ""))
    if not names and not allow_empty:
        raise ValueError(f"Class folder {folder!r} holds no image files "
                         f"(expected .jpg, .jpeg, .png, .bmp or .gif)")
    return [os.path.join(folder, n) for n in names]


def read_class_folders(root, class_names, subdir="", dataset="folder"):
    """Paths and labels of every image under root/<class>/<subdir>/."""
    paths, labels = [], []
    for label, name in enumerate(class_names):
        files = list_images(os.path.join(root, name, *([subdir] if subdir else [])))
        paths += files
        labels += [label] * len(files)
    return paths, labels


def split_folders(root):
    """{"train": path, "val": path, "test": path} of a pre-split root (val and test as present),
    or None for a root of class folders. A root that mixes the two layouts is an error."""
    subfolders = _subfolders(root)
    train = [d for d in subfolders if d.lower() == TRAIN_FOLDER]
    if not train:
        return None
    folders = {"train": os.path.join(root, train[0])}
    for d in subfolders:
        split = HELD_OUT_FOLDERS.get(d.lower())
        if split is None:
            continue
        if split in folders:
            raise ValueError(f"{root!r} holds two held-out folders for {split!r}: "
                             f"{os.path.basename(folders[split])}/ and {d}/; keep one")
        folders[split] = os.path.join(root, d)
    others = [d for d in subfolders if d not in train and d.lower() not in HELD_OUT_FOLDERS]
    if others or len(train) > 1:
        raise ValueError(
            f"{root!r} mixes a {train[0]}/ folder with other folders ({', '.join(others[:5])}). "
            f"Use one of the two layouts:\n{LAYOUT}")
    if len(folders) == 1:
        raise ValueError(
            f"{root!r} holds {train[0]}/ but no held-out folder (val/, valid/, validation/ or "
            f"test/). Add one, or pass --data_dir={folders['train']} to have its classes split "
            f"into train and test. Expected:\n{LAYOUT}")
    return folders


def _read_held_out(folder, class_names, train_dir):
    """A held-out folder's images, labelled with train/'s classes."""
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [d for d in _subfolders(folder) if d not in index]
    if unknown:
        raise ValueError(f"{folder!r} has class folder(s) {', '.join(unknown[:10])} that "
                         f"{train_dir!r} lacks; the classes are train/'s")
    paths, labels, empty = [], [], []
    for name in class_names:
        class_dir = os.path.join(folder, name)
        files = list_images(class_dir, allow_empty=True) if os.path.isdir(class_dir) else []
        if not files:
            empty.append(name)
        paths += files
        labels += [index[name]] * len(files)
    if not paths:
        raise ValueError(f"{folder!r} holds no images in class folders named as in "
                         f"{train_dir!r}; expected:\n{LAYOUT}")
    if empty:
        logging.warning("%d class(es) have no held-out images in %s: %s", len(empty), folder,
                        ", ".join(empty[:10]) + (", ..." if len(empty) > 10 else ""))
    return Examples(np.array(labels), paths=np.array(paths))


def _read_classes(root):
    classes = list_class_folders(root)
    if len(classes) < 2:
        raise ValueError(f"{root!r} holds one class folder ({classes[0]!r}); a classifier needs "
                         f"at least two. Expected layout:\n{LAYOUT}")
    paths, labels = read_class_folders(root, classes)
    return classes, Examples(np.array(labels), paths=np.array(paths))


def load(data_dir):
    root = dataset_root(data_dir, "folder", LAYOUT)
    folders = split_folders(root)
    if folders is None:
        return RawDataset(*_read_classes(root))
    classes, train = _read_classes(folders["train"])
    held_out = {split: _read_held_out(folders[split], classes, folders["train"])
                for split in ("val", "test") if split in folders}
    scored, *others = held_out
    return RawDataset(classes, train, held_out[scored], test_name=scored,
                      extra={name: held_out[name] for name in others}, folders=folders)
