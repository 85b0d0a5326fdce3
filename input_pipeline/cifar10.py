"""CIFAR-10 in either form it is handed out in, with the official 50000/10000 split.

- the python version: `cifar-10-batches-py/` pickles (the original archive);
- image folders: `train/<class>/*.jpg|png` and `test/<class>/...` (the form of many copies).
Both give the same ten classes in the same order (the archive's batches.meta order, which is
alphabetical), so a model trained on one form is scored and used alike with the other.
"""
import os
import pickle

import numpy as np

from input_pipeline.examples import Examples, RawDataset
from input_pipeline.folder import dataset_root, list_class_folders, read_class_folders

# The order of the archive's batches.meta: label i is CLASS_NAMES[i] in both layouts.
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")
LAYOUT = """  DATA_DIR/  (or DATA_DIR/cifar-10-batches-py/)
    data_batch_1 ... data_batch_5, test_batch, batches.meta   (python pickles)
  or
  DATA_DIR/
    train/<class>/*.jpg|png   test/<class>/*.jpg|png   (the ten classes: airplane ... truck)"""


# Everything a CIFAR-10 pickle may name besides dicts, lists, bytes, str and ints: NumPy's array
# rebuilders (numpy 1.x's module path, in the original archive, and numpy 2's) and the encoder
# Python 3 uses for bytes in protocol 2. A pickle can name any function to call as it loads (it
# can run code: Python's pickle docs), so any other name is refused (`_CifarUnpickler`).
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}
# The dtypes of the arrays the archive holds (uint8 pixels; int labels in some copies).
_ALLOWED_DTYPES = ("u1", "i1", "i2", "i4", "i8", "u2", "u4", "u8")


def _numeric_dtype(spec, *args):
    """numpy.dtype for numeric types only: an object array could hold anything."""
    dtype = np.dtype(spec, *args)
    if dtype.str.lstrip("<>|=") not in _ALLOWED_DTYPES:
        raise pickle.UnpicklingError(f"it holds an array of dtype {dtype}, which CIFAR-10 "
                                     f"files never do")
    return dtype


class _CifarUnpickler(pickle.Unpickler):
    """pickle's loader restricted to what the CIFAR-10 files contain (the pattern of Python's
    pickle docs, "Restricting Globals"): nothing in a data directory runs code."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"it asks to load {module}.{name}, which CIFAR-10 files "
                                         f"never do (a pickle naming it could run code)")
        if (module, name) == ("numpy", "dtype"):
            return _numeric_dtype
        return super().find_class(module, name)


def _unpickle(path):
    try:
        with open(path, "rb") as f:
            return _CifarUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise ValueError(f"Missing CIFAR-10 file {path!r}; expected layout:\n{LAYOUT}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise ValueError(f"{path!r} is not a CIFAR-10 pickle, refused: {e}") from None


def _read_batches(root, names, num_classes):
    images, labels = [], []
    for name in names:
        batch = _unpickle(os.path.join(root, name))
        if b"data" not in batch or b"labels" not in batch:
            raise ValueError(f"{os.path.join(root, name)!r} lacks b'data' or b'labels'")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        # Rows are channel-planar: 1024 red, 1024 green, 1024 blue values of a 32x32 image.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"labels"]))
    labels = np.concatenate(labels)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"A label in {root!r} is outside 0..{num_classes - 1}")
    return Examples(labels, images=np.concatenate(images))


def _load_pickles(root):
    meta = _unpickle(os.path.join(root, "batches.meta"))
    class_names = [n.decode() for n in meta[b"label_names"]]
    train = _read_batches(root, [f"data_batch_{i}" for i in range(1, 6)], len(class_names))
    test = _read_batches(root, ["test_batch"], len(class_names))
    return RawDataset(class_names, train, test)


def _load_folders(root):
    subsets = {}
    for subset in ("train", "test"):
        folder = os.path.join(root, subset)
        found = list_class_folders(folder, "cifar10", LAYOUT)
        if sorted(found) != sorted(CLASS_NAMES):
            raise ValueError(f"{folder!r} has class folders {', '.join(found)}; the cifar10 "
                             f"dataset expects the ten classes {', '.join(CLASS_NAMES)}")
        paths, labels = read_class_folders(folder, list(CLASS_NAMES), dataset="cifar10")
        subsets[subset] = Examples(np.array(labels), paths=np.array(paths))
    return RawDataset(list(CLASS_NAMES), subsets["train"], subsets["test"])


def load(data_dir):
    root = dataset_root(data_dir, "cifar10", LAYOUT, "cifar-10-batches-py")
    if os.path.isdir(os.path.join(root, "train")) and not os.path.exists(
            os.path.join(root, "data_batch_1")):
        return _load_folders(root)
    return _load_pickles(root)
