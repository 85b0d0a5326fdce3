"""The dataset registry, and the train / test split that is made once per run and then reused.

Datasets without an official test split (digits, folder, mini_imagenet) are split per class with
scikit-learn, seeded. The split and the class names are written into the folder the caller names
(`split_dir`: the training code gives the run directory's `data/`) and read back from there on
resume and by evaluation, so a test image is never trained on, even if files are added to the data
folder later. The files in it are named here: CLASS_NAMES_FILE, SPLIT_FILE, META_FILE.

A validation split (--val_fraction) is carved out of the training images alone, per class and
seeded, whatever the layout (an official test split is never touched), and pinned the same way in
VALIDATION_FILE: the positions in the training list of the images it took, with their labels and
paths, checked against that list when it is read back.
"""
import csv
import dataclasses
import io
import json
import math
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
VALIDATION_FILE = "validation.csv"
VALIDATION_HEADER = ["index", "label", "path"]


def _damaged(path: str, reason: str) -> ValueError:
    """The one line a damaged split file gets. It is not remade from the data: a split made again
    holds out other images if the data folder changed since, and a test image would be trained
    on."""
    return ValueError(f"{path} is damaged ({reason}): the run's saved train/test split cannot be "
                      f"read. Nothing was changed; restore the file from a copy, or train a new "
                      f"run with another --run_dir")


def _read_text(path: str) -> str:
    """The file's text. A file name that is not UTF-8 is kept byte for byte (surrogateescape),
    so the names a folder holds are written and read back as they are."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        return f.read()


def _whole_text(path: str) -> str:
    """The file's text, checked to be whole: a last line without its line break was cut off."""
    text = _read_text(path)
    if not text:
        raise _damaged(path, "it is empty")
    if not text.endswith("\n"):
        raise _damaged(path, "its last line is cut off")
    return text


def read_class_names(split_dir: str) -> List[str]:
    """The class names saved in `split_dir`, in label order; raises naming the file when it is
    damaged."""
    path = os.path.join(split_dir, CLASS_NAMES_FILE)
    names = _whole_text(path)[:-1].split("\n")
    # A folder name holds neither "/" nor NUL, and no two classes share a name.
    seen = set()
    for line, name in enumerate(names, start=1):
        if not name or "/" in name or "\0" in name or name in seen:
            raise _damaged(path, f"line {line} is not a class name, or one listed before")
        seen.add(name)
    return names


def _write_split(data_dir_out: str, meta: dict, class_names: List[str],
                 subsets: Optional[Dict[str, Examples]]):
    """Writes class_names.txt, split.csv (when `subsets`, {name: Examples}, hold file paths) and
    dataset.json, each atomically, dataset.json last: its presence means the split is complete."""
    os.makedirs(data_dir_out, exist_ok=True)
    tmp = os.path.join(data_dir_out, ".tmp")
    with open(tmp + "classes", "w", encoding="utf-8", errors="surrogateescape") as f:
        f.writelines(name + "\n" for name in class_names)
    if subsets:
        with open(tmp + "split", "w", newline="", encoding="utf-8",
                  errors="surrogateescape") as f:
            writer = csv.writer(f)
            writer.writerow(["subset", "label", "path"])
            for subset, ex in subsets.items():
                writer.writerows((subset, label, path) for label, path in zip(ex.labels, ex.paths))
        os.replace(tmp + "split", os.path.join(data_dir_out, SPLIT_FILE))
    os.replace(tmp + "classes", os.path.join(data_dir_out, CLASS_NAMES_FILE))
    with open(tmp + "meta", "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp + "meta", os.path.join(data_dir_out, META_FILE))


SPLIT_HEADER = ["subset", "label", "path"]


def _read_split(data_dir_out: str, meta: dict):
    """(class names, {subset name: Examples}) from a saved split, checked against itself and
    against dataset.json's counts: a damaged file is named, never half read."""
    class_names = read_class_names(data_dir_out)
    path = os.path.join(data_dir_out, SPLIT_FILE)
    reader = csv.reader(io.StringIO(_whole_text(path), newline=""))
    if next(reader) != SPLIT_HEADER:
        raise _damaged(path, f"its first line is not the header {','.join(SPLIT_HEADER)}")
    known = {"train", *meta["held_out"]} if "held_out" in meta else None  # older runs: any
    rows = {}
    for row in reader:
        if (len(row) != 3 or not row[1].isdigit() or not row[2]
                or (known is not None and row[0] not in known)):
            raise _damaged(path, f"line {reader.line_num} is not a subset,label,path row of "
                                 f"this split")
        labels, paths = rows.setdefault(row[0], ([], []))
        labels.append(int(row[1]))
        paths.append(row[2])
    counts = {"train": meta.get("num_train"), meta.get("eval_split", "test"): meta.get("num_test")}
    for subset, expected in counts.items():
        found = len(rows.get(subset, ([], []))[0])
        if expected is not None and found != expected:
            raise _damaged(path, f"it lists {found} {subset} images; {META_FILE} says {expected}")
    # Every class holds images (an empty class folder is refused), all of them in the split, so
    # the labels it uses are exactly the classes listed.
    used = sorted(set().union(*(labels for labels, _ in rows.values())))
    if used != list(range(len(class_names))):
        raise _damaged(os.path.join(data_dir_out, CLASS_NAMES_FILE),
                       f"it lists {len(class_names)} class name(s); {SPLIT_FILE} has "
                       f"{len(used)} classes")
    return class_names, {name: Examples(np.array(labels, dtype=np.int32), paths=np.array(paths))
                         for name, (labels, paths) in rows.items()}


def _read_meta(split_dir: str) -> dict:
    """dataset.json: how the split was made; raises naming it when it is damaged."""
    path = os.path.join(split_dir, META_FILE)
    try:
        meta = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise _damaged(path, f"not JSON: {error.msg} at line {error.lineno} column "
                             f"{error.colno}") from None
    missing = ([key for key in ("dataset", "data_dir", "official_split") if key not in meta]
               if isinstance(meta, dict) else ["dataset"])
    if missing:
        raise _damaged(path, f"it holds no {missing[0]!r}")
    return meta


def check_saved_split(split_dir: str) -> None:
    """Raises naming the file when the split saved in `split_dir` is damaged (nothing when none
    is saved): the training code checks it before it writes anything else."""
    if os.path.exists(os.path.join(split_dir, META_FILE)):
        meta = _read_meta(split_dir)
        if meta.get("saved_split", not meta["official_split"]):
            _read_split(split_dir, meta)
        elif os.path.exists(os.path.join(split_dir, CLASS_NAMES_FILE)):
            read_class_names(split_dir)
    if os.path.exists(os.path.join(split_dir, VALIDATION_FILE)):
        _read_validation_rows(split_dir)


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
                 test_fraction: float = 0.3, seed: int = 0, write: bool = True,
                 val_fraction: float = 0.0) -> DatasetSplits:
    """The run's `DatasetSplits`: made (and saved in `split_dir`, when given) once, reloaded from
    there afterwards. With `val_fraction` > 0, `validation` holds that fraction of every class's
    training images, taken out of `train` (`with_validation`).

    `write=False` reads a saved split but never writes one (multi-worker training: only the
    chief writes; the seeded split every worker makes is the same).
    """
    splits = _load_dataset(name, data_dir, split_dir=split_dir, test_fraction=test_fraction,
                           seed=seed, write=write)
    if val_fraction:
        splits = with_validation(splits, val_fraction, seed, split_dir=split_dir, write=write)
    return splits


def _load_dataset(name: str, data_dir: Optional[str], *, split_dir: Optional[str],
                  test_fraction: float, seed: int, write: bool) -> DatasetSplits:
    spec = get_dataset(name)
    data_dir = absolute_data_dir(data_dir)
    if split_dir and os.path.exists(os.path.join(split_dir, META_FILE)):
        meta = _read_meta(split_dir)
        if meta["dataset"] != name:
            raise ValueError(f"The split in {split_dir!r} was made for dataset "
                             f"{meta['dataset']!r}, not {name!r}; use another run directory")
        if meta.get("saved_split", not meta["official_split"]):
            class_names, subsets = _read_split(split_dir, meta)
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


def _validation_error(message: str) -> ValueError:
    return ValueError(f"--val_fraction: {message}")


def carve_validation(train: Examples, val_fraction: float, seed: int) -> np.ndarray:
    """The sorted positions in `train` of a per-class `val_fraction` of it, reproducible from
    `seed`; raises one line naming --val_fraction when a class is too small to give one."""
    if not 0 < val_fraction < 1:
        raise _validation_error(f"must be between 0 and 1, got {val_fraction}")
    counts = np.bincount(train.labels)
    present = counts[counts > 0]
    if present.min() < 2:
        raise _validation_error(
            f"class {int(np.argmin(np.where(counts > 0, counts, 1 << 62)))} has "
            f"{int(present.min())} training image; every class needs at least 2 to keep one "
            f"for training and one for validation")
    wanted = math.ceil(val_fraction * len(train))  # scikit-learn's count of the held-out part
    if wanted < len(present) or len(train) - wanted < len(present):
        raise _validation_error(
            f"{val_fraction:g} of the {len(train)} training images is {wanted}, but each of the "
            f"{len(present)} classes needs one for validation and one for training; choose a "
            f"fraction between {len(present) / len(train):.3g} and "
            f"{1 - len(present) / len(train):.3g}")
    _, val_index = train_test_split(np.arange(len(train)), test_size=val_fraction,
                                    random_state=seed, stratify=train.labels)
    return np.sort(val_index)


def _read_validation_rows(split_dir: str) -> List[Tuple[int, int, str]]:
    """validation.csv's (index, label, path) rows; raises naming the file when damaged."""
    path = os.path.join(split_dir, VALIDATION_FILE)
    reader = csv.reader(io.StringIO(_whole_text(path), newline=""))
    if next(reader) != VALIDATION_HEADER:
        raise _damaged(path, f"its first line is not the header {','.join(VALIDATION_HEADER)}")
    rows = []
    for row in reader:
        if len(row) != 3 or not row[0].isdigit() or not row[1].isdigit():
            raise _damaged(path, f"line {reader.line_num} is not an index,label,path row")
        rows.append((int(row[0]), int(row[1]), row[2]))
    indices = [index for index, _, _ in rows]
    if not rows or indices != sorted(set(indices)):
        raise _damaged(path, "its indices are not increasing, each once")
    return rows


def _saved_validation(split_dir: str, train: Examples, val_fraction: float) -> np.ndarray:
    """The positions saved in validation.csv, checked against the training list they index: a
    list that changed since (an official split read again from data that changed) is refused,
    as another validation split would score images the checkpoints trained on."""
    path = os.path.join(split_dir, VALIDATION_FILE)
    rows = _read_validation_rows(split_dir)
    index = np.array([i for i, _, _ in rows])
    if index[-1] >= len(train) or len(rows) != math.ceil(val_fraction * len(train)):
        raise ValueError(f"{path} was made for another training list or --val_fraction than "
                         f"this run's {len(train)} training images at --val_fraction="
                         f"{val_fraction:g}; train a new run with another --run_dir")
    labels_match = np.array_equal(train.labels[index], [label for _, label, _ in rows])
    paths_match = train.paths is None or list(train.paths[index]) == [p for _, _, p in rows]
    if not (labels_match and paths_match):
        raise ValueError(f"{path} lists other images than the training data now holds at those "
                         f"positions (the data changed since the run started); train a new run "
                         f"with another --run_dir")
    return index


def _write_validation(split_dir: str, train: Examples, index: np.ndarray) -> None:
    """validation.csv, atomically."""
    os.makedirs(split_dir, exist_ok=True)
    tmp = os.path.join(split_dir, ".tmpvalidation")
    with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.writer(f)
        writer.writerow(VALIDATION_HEADER)
        paths = train.paths[index] if train.paths is not None else [""] * len(index)
        writer.writerows((int(i), int(label), p)
                         for i, label, p in zip(index, train.labels[index], paths))
    os.replace(tmp, os.path.join(split_dir, VALIDATION_FILE))


def with_validation(splits: DatasetSplits, val_fraction: float, seed: int, *,
                    split_dir: Optional[str] = None, write: bool = True) -> DatasetSplits:
    """`splits` with `validation` carved out of `splits.train` (never out of a held-out split):
    read from `split_dir`'s validation.csv when saved there, else made (`carve_validation`) and
    saved (when `write`)."""
    train = splits.train
    saved = split_dir is not None and os.path.exists(os.path.join(split_dir, VALIDATION_FILE))
    if saved:
        index = _saved_validation(split_dir, train, val_fraction)
    else:
        index = carve_validation(train, val_fraction, seed)
        if split_dir and write:
            _write_validation(split_dir, train, index)
    keep = np.ones(len(train), dtype=bool)
    keep[index] = False
    return dataclasses.replace(splits, train=train.subset(keep), validation=train.subset(index))
