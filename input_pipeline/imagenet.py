"""ImageNet (ILSVRC 2012): `train/<wnid>/*.JPEG`; `val/` per-class folders, or flat with labels.

A flat `val/` needs a labels file mapping each image to its wnid, one per line as
`<file> <wnid>` (spaces, tabs or a comma), e.g. `val/val_labels.txt`, or Kaggle's
`LOC_val_solution.csv` (ImageId,PredictionString: the wnid is the prediction string's first word).
"""
import csv
import os

import numpy as np

from input_pipeline.examples import Examples, RawDataset, is_image_file
from input_pipeline.folder import list_class_folders, missing_dir_error, read_class_folders

LAYOUT = """  DATA_DIR/train/<wnid>/*.JPEG
  DATA_DIR/val/<wnid>/*.JPEG
or
  DATA_DIR/val/*.JPEG  with a labels file  DATA_DIR/val_labels.txt (or val/val_labels.txt, or
  LOC_val_solution.csv): one '<file> <wnid>' per line"""
LABEL_FILES = ("val_labels.txt", "val/val_labels.txt", "val_labels.csv", "LOC_val_solution.csv")


def _read_label_file(path):
    rows = []
    with open(path, newline="") as f:
        for line_number, row in enumerate(csv.reader(f), start=1):
            if len(row) == 1:
                row = row[0].split()
            if not row or row[0] in ("ImageId", "filename"):
                continue
            if len(row) < 2:
                raise ValueError(f"{path}, line {line_number}: expected '<file> <wnid>', got {row}")
            rows.append((line_number, row[0], row[1].split()[0]))
    return rows


def _flat_val(root, index):
    label_file = next((os.path.join(root, p) for p in LABEL_FILES
                       if os.path.exists(os.path.join(root, p))), None)
    if label_file is None:
        raise ValueError(f"{os.path.join(root, 'val')!r} has no class folders and no labels file "
                         f"was found ({', '.join(LABEL_FILES)}); expected:\n{LAYOUT}")
    val_dir = os.path.join(root, "val")
    paths, labels = [], []
    for line_number, name, wnid in _read_label_file(label_file):
        if wnid not in index:
            raise ValueError(f"{label_file}, line {line_number}: class {wnid!r} has no train/ "
                             f"folder")
        if not is_image_file(name):
            name += ".JPEG"
        path = os.path.join(val_dir, name)
        if not os.path.exists(path):
            raise ValueError(f"{label_file}, line {line_number}: image {path!r} does not exist")
        paths.append(path)
        labels.append(index[wnid])
    return paths, labels


def load(data_dir):
    if not data_dir or not os.path.isdir(os.path.join(data_dir, "train")):
        raise missing_dir_error(data_dir, "imagenet", LAYOUT)
    root = os.path.abspath(os.path.expanduser(data_dir))
    class_names = list_class_folders(os.path.join(root, "train"), "imagenet", LAYOUT)
    train_paths, train_labels = read_class_folders(os.path.join(root, "train"), class_names)
    val_dir = os.path.join(root, "val")
    if not os.path.isdir(val_dir):
        raise ValueError(f"Missing {val_dir!r}; the imagenet dataset expects:\n{LAYOUT}")
    val_classes = [d for d in os.listdir(val_dir) if os.path.isdir(os.path.join(val_dir, d))]
    index = {name: i for i, name in enumerate(class_names)}
    if val_classes:
        unknown = sorted(set(val_classes) - set(index))
        if unknown:
            raise ValueError(f"{val_dir!r} has class folders with no train/ folder: {unknown[:5]}")
        test_paths, test_labels = [], []
        for name in sorted(val_classes):
            files = read_class_folders(val_dir, [name])[0]
            test_paths += files
            test_labels += [index[name]] * len(files)
    else:
        test_paths, test_labels = _flat_val(root, index)
    return RawDataset(class_names,
                      Examples(np.array(train_labels), paths=np.array(train_paths)),
                      Examples(np.array(test_labels), paths=np.array(test_paths)))
