"""The dataset registry, and the train / test split that is made once per run and then reused.

Datasets without an official test split (digits, folder, mini_imagenet) are split per class with
scikit-learn, seeded. The split and the class names are written into the folder the caller names
(`split_dir`: the training code gives the run directory's `data/`) and read back from there on
resume and by evaluation, so a test image is never trained on, even if files are added to the data
folder later. The files in it are named here: CLASS_NAMES_FILE, SPLIT_FILE, META_FILE.
"""
import csv
import dataclasses
import json
import os
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from sklearn.model_selection import train_test_split

from input_pipeline import cifar10, digits, folder, imagenet, mini_imagenet, tiny_imagenet
from input_pipeline.examples import DatasetSplits, Examples, RawDataset


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset layout: how to read it. How it trains (its augmentation and settings) is its
    recipe, settings/recipes.py."""
    load: Callable  # data_dir -> RawDataset
    description: str

    def read(self, data_dir: Optional[str]) -> RawDataset:
        """The dataset in `data_dir` (`absolute_data_dir`), whatever the layout."""
        return self.load(absolute_data_dir(data_dir))


def absolute_data_dir(data_dir: Optional[str]) -> Optional[str]:
    """`data_dir` with `~` expanded (a shell leaves it after `--data_dir=`) and made absolute."""
    return os.path.abspath(os.path.expanduser(data_dir)) if data_dir else data_dir


DATASETS = {
    "digits": DatasetSpec(digits.load, "scikit-learn's handwritten digits as JPEGs (no download)"),
    "folder": DatasetSpec(folder.load, "any root/<class>/*.jpg tree"),
    "mini_imagenet": DatasetSpec(mini_imagenet.load,
                                 "mini-ImageNet, all 100 classes merged and re-split"),
    "tiny_imagenet": DatasetSpec(tiny_imagenet.load, "Tiny ImageNet, val/ as the test split"),
    "cifar10": DatasetSpec(cifar10.load,
                           "CIFAR-10 pickles or train/ test/ folders, the official split"),
    "imagenet": DatasetSpec(imagenet.load, "ILSVRC 2012 train/ and val/"),
}


def get_dataset(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def stratified_split(examples: Examples, test_fraction: float,
                     seed: int) -> Tuple[Examples, Examples]:
    """Per-class (stratified) train / test split of `examples`, reproducible from `seed`."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    counts = np.bincount(examples.labels)
    if counts[counts > 0].min() < 2:
        raise ValueError("Every class needs at least 2 images to be split into train and test; "
                         f"class {int(np.argmin(np.where(counts > 0, counts, 99)))} has 1")
    train_index, test_index = train_test_split(
        np.arange(len(examples)), test_size=test_fraction, random_state=seed,
        stratify=examples.labels)
    return examples.subset(np.sort(train_index)), examples.subset(np.sort(test_index))


CLASS_NAMES_FILE, SPLIT_FILE, META_FILE = "class_names.txt", "split.csv", "dataset.json"


def read_class_names(split_dir: str) -> List[str]:
    """The class names saved in `split_dir`, in label order."""
    with open(os.path.join(split_dir, CLASS_NAMES_FILE)) as f:
        return [line.rstrip("\n") for line in f]


def _write_split(data_dir_out: str, meta: dict, class_names: List[str],
                 subsets: Optional[Dict[str, Examples]]):
    """Writes class_names.txt, split.csv (when `subsets`, {name: Examples}, hold file paths) and
    dataset.json, each atomically, dataset.json last: its presence means the split is complete."""
    os.makedirs(data_dir_out, exist_ok=True)
    tmp = os.path.join(data_dir_out, ".tmp")
    with open(tmp + "classes", "w") as f:
        f.writelines(name + "\n" for name in class_names)
    if subsets:
        with open(tmp + "split", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["subset", "label", "path"])
            for subset, ex in subsets.items():
                writer.writerows((subset, label, path) for label, path in zip(ex.labels, ex.paths))
        os.replace(tmp + "split", os.path.join(data_dir_out, SPLIT_FILE))
    os.replace(tmp + "classes", os.path.join(data_dir_out, CLASS_NAMES_FILE))
    with open(tmp + "meta", "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp + "meta", os.path.join(data_dir_out, META_FILE))


def _read_split(data_dir_out: str):
    """(class names, {subset name: Examples}) from a saved split."""
    class_names = read_class_names(data_dir_out)
    rows = {}
    with open(os.path.join(data_dir_out, SPLIT_FILE), newline="") as f:
        for row in csv.DictReader(f):
            labels, paths = rows.setdefault(row["subset"], ([], []))
            labels.append(int(row["label"]))
            paths.append(row["path"])
    return class_names, {name: Examples(np.array(labels, dtype=np.int32), paths=np.array(paths))
                         for name, (labels, paths) in rows.items()}


def _layout(meta: dict):
    """How the held-out set was made, in words, for the start line."""
    if meta.get("folders"):
        train = meta["folders"]["train"]
        held = ", ".join(f"{os.path.basename(meta['folders'][n])}/" for n in meta["held_out"])
        return (f"pre-split folder: trains on {os.path.basename(train)}/, held out {held} as "
                f"given (--test_fraction not used)")
    if meta["official_split"]:
        return "the dataset's own held-out split"
    return f"{meta['test_fraction']:.0%} of every class held out (seed {meta['seed']})"


def _splits(name: str, data_dir: Optional[str], meta: dict, class_names: List[str],
            train: Examples, held_out: Dict[str, Examples]):
    scored = meta.get("eval_split", "test")
    return DatasetSplits(name, data_dir, list(class_names), train, held_out[scored],
                         test_name=scored,
                         extra={k: v for k, v in held_out.items() if k != scored},
                         layout=_layout(meta))


def load_dataset(name: str, data_dir: Optional[str] = None, *, split_dir: Optional[str] = None,
                 test_fraction: float = 0.3, seed: int = 0, write: bool = True) -> DatasetSplits:
    """The run's `DatasetSplits`: made (and saved in `split_dir`, when given) once, reloaded from
    there afterwards.

    `write=False` reads a saved split but never writes one (multi-worker training: only the
    chief writes; the seeded split every worker makes is the same).
    """
    spec = get_dataset(name)
    data_dir = absolute_data_dir(data_dir)
    if split_dir and os.path.exists(os.path.join(split_dir, META_FILE)):
        with open(os.path.join(split_dir, META_FILE)) as f:
            meta = json.load(f)
        if meta["dataset"] != name:
            raise ValueError(f"The split in {split_dir!r} was made for dataset "
                             f"{meta['dataset']!r}, not {name!r}; use another run directory")
        if meta.get("saved_split", not meta["official_split"]):
            class_names, subsets = _read_split(split_dir)
            train = subsets.pop("train")
            return _splits(name, meta["data_dir"], meta, class_names, train, subsets)
        data_dir = data_dir or meta["data_dir"]

    raw = spec.load(data_dir)
    if raw.test is None:
        train, test = stratified_split(raw.train, test_fraction, seed)
        held_out = {"test": test}
    else:
        train = raw.train
        held_out = {raw.test_name: raw.test, **raw.extra}
    # A split the project made, or one read from a folder tree that may change, is pinned by
    # saving its file list; an official split is read again from the data.
    save_paths = raw.train.paths is not None and (raw.test is None or raw.folders is not None)
    meta = {"dataset": name, "data_dir": data_dir,
            "official_split": raw.test is not None, "saved_split": save_paths,
            "test_fraction": None if raw.test is not None else test_fraction,
            "seed": seed, "num_train": len(train),
            "num_test": len(held_out[next(iter(held_out))]),
            "eval_split": next(iter(held_out)), "held_out": list(held_out),
            "folders": raw.folders}
    if split_dir and write:
        if os.path.exists(os.path.join(split_dir, META_FILE)):
            known = read_class_names(split_dir)
            if known != list(raw.class_names):
                listed = os.path.join(split_dir, CLASS_NAMES_FILE)
                raise ValueError(f"The classes in {data_dir!r} differ from the {len(known)} the "
                                 f"run was trained on ({listed})")
        else:
            _write_split(split_dir, meta, raw.class_names,
                         {"train": train, **held_out} if save_paths else None)
    return _splits(name, data_dir, meta, raw.class_names, train, held_out)
