"""mini-ImageNet (mini-imagenet-tools): 100 classes x 600 images, in either of its two layouts.

Its published train/val/test splits hold different classes (64/16/20, for few-shot work), so a
100-way classifier merges all of them and re-splits every class (see `datasets.load_dataset`).
"""
import csv
import os

import numpy as np

from input_pipeline.examples import Examples, RawDataset
from input_pipeline.folder import dataset_root, list_images

SPLITS = ("train", "val", "test")
LAYOUT = """  DATA_DIR/images/*.jpg  with  DATA_DIR/train.csv, val.csv, test.csv
    (header: filename,label)
or
  DATA_DIR/train|val|test/<wnid>/*.jpg"""


def _read_csvs(root):
    rows = []
    for split in SPLITS:
        csv_path = os.path.join(root, f"{split}.csv")
        if not os.path.exists(csv_path):
            continue
        with open(csv_path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:2]] != ["filename", "label"]:
                raise ValueError(f"{csv_path}: expected the header 'filename,label', got {header}")
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) < 2 or not row[1].strip():
                    raise ValueError(f"{csv_path}, line {line}: expected 'filename,label', "
                                     f"got {row}")
                path = os.path.join(root, "images", row[0].strip())
                if not os.path.exists(path):
                    raise ValueError(f"{csv_path}, line {line}: image {path!r} does not exist")
                rows.append((path, row[1].strip()))
    return rows


def _read_split_folders(root):
    rows = []
    for split in SPLITS:
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            continue
        for wnid in sorted(os.listdir(split_dir)):
            class_dir = os.path.join(split_dir, wnid)
            if os.path.isdir(class_dir) and not wnid.startswith("."):
                rows += [(path, wnid) for path in list_images(class_dir)]
    return rows


def load(data_dir):
    root = dataset_root(data_dir, "mini_imagenet", LAYOUT)
    if os.path.isdir(os.path.join(root, "images")):
        rows = _read_csvs(root)
    else:
        rows = _read_split_folders(root)
    if not rows:
        raise ValueError(f"Found no mini-ImageNet images in {root!r}; expected:\n{LAYOUT}")
    class_names = sorted({wnid for _, wnid in rows})
    index = {name: i for i, name in enumerate(class_names)}
    paths, labels = zip(*((path, index[wnid]) for path, wnid in rows))
    return RawDataset(class_names, Examples(np.array(labels), paths=np.array(paths)))
