"""Tiny ImageNet: 200 classes of 64x64 images; `val/` (with its annotations) is the test split."""
import os

import numpy as np
from absl import logging

from input_pipeline.examples import Examples, RawDataset
from input_pipeline.folder import dataset_root, list_class_folders, read_class_folders

LAYOUT = """  DATA_DIR/  (or DATA_DIR/tiny-imagenet-200/)
    wnids.txt
    train/<wnid>/images/*.JPEG
    val/images/*.JPEG  with  val/val_annotations.txt  (tab separated: file, wnid, box)"""


def load(data_dir):
    root = dataset_root(data_dir, "tiny_imagenet", LAYOUT, "tiny-imagenet-200")
    wnids_path = os.path.join(root, "wnids.txt")
    annotations = os.path.join(root, "val", "val_annotations.txt")
    for required in (wnids_path, os.path.join(root, "train"), annotations):
        if not os.path.exists(required):
            raise ValueError(f"Missing {required!r}; the tiny_imagenet dataset expects:\n{LAYOUT}")
    with open(wnids_path) as f:
        listed = [line.strip() for line in f if line.strip()]
    folders = list_class_folders(os.path.join(root, "train"), "tiny_imagenet", LAYOUT)
    # The classes are train/'s folders; wnids.txt only gives their order. Copies circulate with
    # a cut-down wnids.txt (seen: 9 of the 200 lines), which must not silently drop classes.
    class_names = listed
    if sorted(listed) != folders:
        class_names = folders
        logging.warning("%s lists %d classes but %s has %d class folders; using the folders",
                        wnids_path, len(listed), os.path.join(root, "train"), len(folders))
    train_paths, train_labels = read_class_folders(os.path.join(root, "train"), class_names,
                                                   subdir="images", dataset="tiny_imagenet")
    index = {name: i for i, name in enumerate(class_names)}
    test_paths, test_labels = [], []
    with open(annotations) as f:
        for line_number, line in enumerate(f, start=1):
            fields = line.rstrip("\n").split("\t")
            if not line.strip():
                continue
            if len(fields) < 2:
                raise ValueError(f"{annotations}, line {line_number}: expected 'file<TAB>wnid...'")
            if fields[1] not in index:
                raise ValueError(f"{annotations}, line {line_number}: class {fields[1]!r} has no "
                                 f"folder in {os.path.join(root, 'train')}")
            path = os.path.join(root, "val", "images", fields[0])
            if not os.path.exists(path):
                raise ValueError(f"{annotations}, line {line_number}: image {path!r} does not "
                                 f"exist")
            test_paths.append(path)
            test_labels.append(index[fields[1]])
    return RawDataset(class_names,
                      Examples(np.array(train_labels), paths=np.array(train_paths)),
                      Examples(np.array(test_labels), paths=np.array(test_paths)))
