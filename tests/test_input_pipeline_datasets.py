"""Tests for the dataset readers and the run's saved split (input_pipeline/datasets.py)."""
import json
import os
import pickle

import numpy as np
import pytest

import input_pipeline
from conftest import write_image, write_image_folder
from input_pipeline import digits


def test_registry_lists_valid_names():
    with pytest.raises(ValueError, match="cifar10, digits, folder, imagenet, mini_imagenet"):
        input_pipeline.get_dataset("mnist")


def test_digits_are_written_as_jpegs_and_split_stratified(tmp_path):
    data_dir, split_dir = str(tmp_path / "digits"), str(tmp_path / "split")
    splits = input_pipeline.load_dataset("digits", data_dir, split_dir=split_dir)
    files = [f for _, _, names in os.walk(data_dir) for f in names]
    assert len(files) == 1797 and all(f.endswith(".jpg") for f in files)
    assert splits.class_names == [str(d) for d in range(10)]
    assert len(splits.train) + len(splits.test) == 1797
    assert set(splits.train.paths).isdisjoint(splits.test.paths)
    # Stratified 7:3: every class holds out 30% of its images (+-1 for rounding).
    for label in range(10):
        n_train = (splits.train.labels == label).sum()
        n_test = (splits.test.labels == label).sum()
        assert abs(n_test - 0.3 * (n_train + n_test)) <= 1
    image = input_pipeline.decode_image(open(splits.train.paths[0], "rb").read())
    assert image.shape == (digits.IMAGE_SIZE, digits.IMAGE_SIZE, 3)


def test_split_is_saved_and_reused_even_when_files_are_added(tmp_path):
    root, split_dir = str(tmp_path / "photos"), str(tmp_path / "split")
    write_image_folder(root, classes=("daisy", "roses", "tulips"), per_class=10)
    first = input_pipeline.load_dataset("folder", root, split_dir=split_dir, seed=1)
    meta = json.load(open(os.path.join(split_dir, "dataset.json")))
    assert meta["dataset"] == "folder" and meta["num_test"] == 9
    write_image_folder(root, classes=("daisy",), per_class=15)  # 5 new daisies
    again = input_pipeline.load_dataset("folder", root, split_dir=split_dir, seed=2)
    np.testing.assert_array_equal(first.test.paths, again.test.paths)
    np.testing.assert_array_equal(first.train.paths, again.train.paths)
    fresh = input_pipeline.load_dataset("folder", root, seed=1)
    assert len(fresh.train) + len(fresh.test) == 35
    with pytest.raises(ValueError, match="made for dataset 'folder', not 'digits'"):
        input_pipeline.load_dataset("digits", None, split_dir=split_dir)


def test_folder_reads_every_extension_in_any_case(tmp_path):
    root = tmp_path / "data"
    for i, ext in enumerate([".jpg", ".JPEG", ".png", ".Bmp", ".gif"]):
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF"}
        write_image(root / "x" / f"{i}{ext}", fmt=fmt[ext.lower()])
        write_image(root / "y" / f"{i}{ext}", fmt=fmt[ext.lower()])
    (root / "x" / "readme.txt").write_text("ignored")
    splits = input_pipeline.load_dataset("folder", str(root), test_fraction=0.2)
    assert splits.class_names == ["x", "y"] and len(splits.train) + len(splits.test) == 10


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="(?s)does not exist.*<class 1>/image001.jpg"):
        input_pipeline.load_dataset("folder", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="holds no class folders"):
        input_pipeline.load_dataset("folder", str(tmp_path))
    write_image_folder(str(tmp_path / "d"), classes=("a",), per_class=2)
    os.makedirs(tmp_path / "d" / "b")
    with pytest.raises(ValueError, match=r"Class folder '.*d/b' holds no image files"):
        input_pipeline.load_dataset("folder", str(tmp_path / "d"))


def _pre_split(root, held_out=("val",), classes=("daisy", "roses"), per_class=3):
    write_image_folder(str(root / "train"), classes=classes, per_class=per_class)
    for name in held_out:
        write_image_folder(str(root / name), classes=classes, per_class=2)


@pytest.mark.parametrize("held_out", ["val", "Valid", "validation", "TEST"])
def test_a_pre_split_folder_is_trained_and_scored_as_given(tmp_path, held_out):
    root, split_dir = tmp_path / "flower_data", str(tmp_path / "split")
    _pre_split(root, held_out=(held_out,))
    splits = input_pipeline.load_dataset("folder", str(root), split_dir=split_dir,
                                         test_fraction=0.5)
    assert splits.class_names == ["daisy", "roses"]
    # No re-split: every train/ image is trained on, every held-out image is held out.
    assert sorted(splits.train.paths) == sorted(
        str(p) for p in (root / "train").rglob("*.jpg"))
    assert sorted(splits.test.paths) == sorted(str(p) for p in (root / held_out).rglob("*.jpg"))
    assert splits.test_name == ("test" if held_out == "TEST" else "val")
    assert "--test_fraction not used" in splits.layout
    meta = json.load(open(os.path.join(split_dir, "dataset.json")))
    assert meta["folders"]["train"] == str(root / "train") and meta["saved_split"]
    # The run directory alone gives the same split back, even with the data gone.
    import shutil
    shutil.rmtree(root)
    again = input_pipeline.load_dataset("folder", split_dir=split_dir)
    np.testing.assert_array_equal(again.test.paths, splits.test.paths)
    np.testing.assert_array_equal(again.train.labels, splits.train.labels)
    assert again.test_name == splits.test_name and again.layout == splits.layout


def test_a_pre_split_folder_with_val_and_test_scores_val_and_keeps_test(tmp_path):
    root = tmp_path / "data"
    _pre_split(root, held_out=("val", "test"))
    (root / "test" / "roses" / "img_1.jpg").unlink()
    splits = input_pipeline.load_dataset("folder", str(root), split_dir=str(tmp_path / "split"))
    assert splits.test_name == "val" and splits.held_out_names == ["val", "test"]
    assert len(splits.test) == 4 and len(splits.held_out("test")) == 3
    assert all("/test/" in p for p in splits.held_out("test").paths)
    with pytest.raises(ValueError, match="--eval_split='train': .* are val, test"):
        splits.held_out("train")
    reloaded = input_pipeline.load_dataset("folder", split_dir=str(tmp_path / "split"))
    np.testing.assert_array_equal(reloaded.held_out("test").paths, splits.held_out("test").paths)


def test_pre_split_folder_errors_and_warnings(tmp_path, caplog):
    mixed = tmp_path / "mixed"
    _pre_split(mixed)
    write_image_folder(str(mixed), classes=("tulips",), per_class=2)
    with pytest.raises(ValueError, match="(?s)mixes a train/ folder with other folders "
                                         r"\(tulips\).*<class 1>/image001.jpg.*train/<class 1>"):
        input_pipeline.load_dataset("folder", str(mixed))
    unknown = tmp_path / "unknown"
    _pre_split(unknown)
    write_image_folder(str(unknown / "val"), classes=("cactus",), per_class=1)
    with pytest.raises(ValueError, match=r"val' has class folder\(s\) cactus that .*train' lacks"):
        input_pipeline.load_dataset("folder", str(unknown))
    alone = tmp_path / "alone"
    write_image_folder(str(alone / "train"), classes=("a", "b"), per_class=2)
    with pytest.raises(ValueError, match="holds train/ but no held-out folder.*--data_dir=.*train"):
        input_pipeline.load_dataset("folder", str(alone))
    # A class with no held-out images is allowed, with a warning naming it.
    sparse = tmp_path / "sparse"
    _pre_split(sparse, classes=("a", "b", "c"))
    import shutil
    shutil.rmtree(sparse / "val" / "c")
    with caplog.at_level("WARNING"):
        splits = input_pipeline.load_dataset("folder", str(sparse))
    assert splits.class_names == ["a", "b", "c"] and sorted(set(splits.test.labels)) == [0, 1]
    assert "1 class(es) have no held-out images" in caplog.text and ": c" in caplog.text


def _mini_imagenet_csv_layout(root, classes_per_split, per_class=4):
    os.makedirs(root / "images")
    for split, wnids in classes_per_split.items():
        rows = ["filename,label"]
        for wnid in wnids:
            for i in range(per_class):
                name = f"{wnid}{i:08d}.jpg"
                write_image(root / "images" / name, size=(21, 21), seed=i, fmt="JPEG")
                rows.append(f"{name},{wnid}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")


def test_mini_imagenet_merges_all_splits_and_resplits(tmp_path):
    root = tmp_path / "mini"
    _mini_imagenet_csv_layout(root, {"train": ["n01", "n02", "n03"], "val": ["n04"],
                                     "test": ["n05"]}, per_class=10)
    splits = input_pipeline.load_dataset("mini_imagenet", str(root))
    assert splits.class_names == ["n01", "n02", "n03", "n04", "n05"]
    assert np.bincount(splits.test.labels).tolist() == [3] * 5

    folders = tmp_path / "mini_folders"
    for split, wnid in (("train", "n01"), ("val", "n02"), ("test", "n03")):
        write_image_folder(str(folders / split), classes=(wnid,), per_class=4)
    splits = input_pipeline.load_dataset("mini_imagenet", str(folders))
    assert splits.class_names == ["n01", "n02", "n03"]


def test_mini_imagenet_csv_row_naming_a_missing_file(tmp_path):
    root = tmp_path / "mini"
    _mini_imagenet_csv_layout(root, {"train": ["n01", "n02"]})
    with open(root / "train.csv", "a") as f:
        f.write("gone.jpg,n01\n")
    with pytest.raises(ValueError, match=r"train.csv, line 10: image .*gone.jpg' does not exist"):
        input_pipeline.load_dataset("mini_imagenet", str(root))


def _tiny_imagenet(root, wnids=("n01", "n02"), per_class=3, bad_val_wnid=None):
    (root / "wnids.txt").parent.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for wnid in wnids:
        for i in range(per_class):
            write_image(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", fmt="JPEG")
    lines = []
    for i, wnid in enumerate(list(wnids) + ([bad_val_wnid] if bad_val_wnid else [])):
        write_image(root / "val" / "images" / f"val_{i}.JPEG", fmt="JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t10\t10")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_tiny_imagenet_uses_val_as_test(tmp_path):
    _tiny_imagenet(tmp_path / "tiny-imagenet-200")
    splits = input_pipeline.load_dataset("tiny_imagenet", str(tmp_path))
    assert splits.class_names == ["n01", "n02"]
    assert len(splits.train) == 6 and splits.test.labels.tolist() == [0, 1]
    _tiny_imagenet(tmp_path / "bad", bad_val_wnid="n99")
    with pytest.raises(ValueError, match="val_annotations.txt, line 3: class 'n99' has no folder"):
        input_pipeline.load_dataset("tiny_imagenet", str(tmp_path / "bad"))


def test_tiny_imagenet_classes_are_the_train_folders_when_wnids_txt_is_cut_short(tmp_path):
    # Copies of Tiny ImageNet circulate with a wnids.txt of 9 lines for 200 class folders.
    root = tmp_path / "tiny"
    _tiny_imagenet(root, wnids=("n03", "n01", "n02"))
    assert input_pipeline.load_dataset("tiny_imagenet", str(root)).class_names == [
        "n03", "n01", "n02"]  # wnids.txt's order when it lists exactly the folders
    (root / "wnids.txt").write_text("n03\n")
    splits = input_pipeline.load_dataset("tiny_imagenet", str(root))
    assert splits.class_names == ["n01", "n02", "n03"] and len(splits.train) == 9
    assert sorted(splits.test.labels.tolist()) == [0, 1, 2]


def test_cifar10_pickles_are_channel_planar(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                         b"labels": rng.integers(0, 10, 4).tolist()}
        pickle.dump(batches[name], open(root / name, "wb"))
    names = [n.encode() for n in ("airplane automobile bird cat deer dog frog horse ship "
                                  "truck").split()]
    pickle.dump({b"label_names": names}, open(root / "batches.meta", "wb"))
    splits = input_pipeline.load_dataset("cifar10", str(tmp_path))
    assert len(splits.train) == 20 and len(splits.test) == 4 and splits.class_names[9] == "truck"
    row = batches["data_batch_1"][b"data"][0]
    # Pixel (r, c) of channel k is at k * 1024 + r * 32 + c.
    assert splits.train.images[0, 2, 5].tolist() == [row[69], row[1024 + 69], row[2048 + 69]]
    assert splits.test.labels.tolist() == batches["test_batch"][b"labels"]
    os.remove(root / "batches.meta")
    with pytest.raises(ValueError, match="Missing CIFAR-10 file .*batches.meta"):
        input_pipeline.load_dataset("cifar10", str(root))


def test_imagenet_val_folders_or_flat_with_labels(tmp_path):
    root = tmp_path / "imagenet"
    write_image_folder(str(root / "train"), classes=("n01", "n02"), per_class=2, ext=".JPEG")
    write_image_folder(str(root / "val"), classes=("n02",), per_class=1, ext=".JPEG")
    splits = input_pipeline.load_dataset("imagenet", str(root))
    assert len(splits.train) == 4 and splits.test.labels.tolist() == [1]

    flat = tmp_path / "flat"
    write_image_folder(str(flat / "train"), classes=("n01", "n02"), per_class=2, ext=".JPEG")
    for i in range(2):
        write_image(flat / "val" / f"ILSVRC2012_val_{i:08d}.JPEG", fmt="JPEG")
    (flat / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00000000,n02 1 2 3 4\n"
        "ILSVRC2012_val_00000001,n01 1 2 3 4\n")
    splits = input_pipeline.load_dataset("imagenet", str(flat))
    assert splits.test.labels.tolist() == [1, 0]
    (flat / "LOC_val_solution.csv").write_text("ILSVRC2012_val_00000000,n77 1 2 3 4\n")
    with pytest.raises(ValueError, match="line 1: class 'n77' has no train/ folder"):
        input_pipeline.load_dataset("imagenet", str(flat))


CIFAR10_CLASSES = ("airplane automobile bird cat deer dog frog horse ship truck").split()


def _cifar10_both_layouts(tmp_path, per_batch=10):
    """The same random images as the archive's pickles and as train/ test/ PNG folders (PNG:
    lossless, so both layouts must decode to identical pixels)."""
    from PIL import Image
    rng = np.random.default_rng(1)
    pickles, folders = tmp_path / "pickles" / "cifar-10-batches-py", tmp_path / "folders"
    pickles.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.permutation(per_batch).tolist()  # every class in every batch
        pickle.dump({b"data": data, b"labels": labels}, open(pickles / name, "wb"))
        subset = "test" if name == "test_batch" else "train"
        for i, (row, label) in enumerate(zip(data, labels)):
            folder = folders / subset / CIFAR10_CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            image = row.reshape(3, 32, 32).transpose(1, 2, 0)
            Image.fromarray(image).save(folder / f"{name}-{i:04d}.png")
    pickle.dump({b"label_names": [n.encode() for n in CIFAR10_CLASSES]},
                open(pickles / "batches.meta", "wb"))
    return pickles.parent, folders


def _by_label(examples):
    """{label: sorted list of image bytes}: the examples as a multiset per class."""
    from input_pipeline.preprocessing import decode_image
    images = (examples.images if examples.images is not None else
              [decode_image(open(p, "rb").read()).numpy() for p in examples.paths])
    grouped = {}
    for label, image in zip(examples.labels.tolist(), images):
        grouped.setdefault(label, []).append(np.asarray(image).tobytes())
    return {label: sorted(found) for label, found in grouped.items()}


def test_cifar10_pickles_and_image_folders_give_the_same_split_and_classes(tmp_path):
    pickles, folders = _cifar10_both_layouts(tmp_path)
    from_pickles = input_pipeline.load_dataset("cifar10", str(pickles))
    from_folders = input_pipeline.load_dataset("cifar10", str(folders))
    assert from_pickles.class_names == from_folders.class_names == CIFAR10_CLASSES
    assert len(from_folders.train) == 50 and len(from_folders.test) == 10
    for subset in ("train", "test"):
        assert (_by_label(getattr(from_pickles, subset))
                == _by_label(getattr(from_folders, subset)))


def test_cifar10_folders_with_other_classes_are_refused_by_name(tmp_path):
    write_image_folder(str(tmp_path / "train"), classes=("cat", "dog"), per_class=1)
    write_image_folder(str(tmp_path / "test"), classes=("cat", "dog"), per_class=1)
    with pytest.raises(ValueError, match=r"train'? has class folders cat, dog; .*ten classes"):
        input_pipeline.load_dataset("cifar10", str(tmp_path))


def test_every_layout_reads_a_data_dir_given_with_a_tilde(tmp_path, monkeypatch):
    """`--data_dir=~/data/imagenet`, as docs/usage.md writes it: bash leaves the `~` to the
    program."""
    monkeypatch.setenv("HOME", str(tmp_path))
    write_image_folder(str(tmp_path / "data" / "imagenet" / "train"), classes=("n01", "n02"),
                       per_class=2, ext=".JPEG")
    write_image_folder(str(tmp_path / "data" / "imagenet" / "val"), classes=("n02",),
                       per_class=1, ext=".JPEG")
    splits = input_pipeline.load_dataset("imagenet", "~/data/imagenet")
    assert len(splits.train) == 4 and splits.train.paths[0].startswith(str(tmp_path) + "/")
    # What evaluate.py reads other data with (--dataset, --data_dir) expands it too.
    raw = input_pipeline.get_dataset("imagenet").read("~/data/imagenet")
    assert raw.test.labels.tolist() == [1] and raw.train.paths[0].startswith(str(tmp_path) + "/")
    write_image_folder(str(tmp_path / "photos"), classes=("a", "b"), per_class=3)
    photos = input_pipeline.load_dataset("folder", "~/photos")
    assert len(photos.train) + len(photos.test) == 6 and photos.data_dir == str(tmp_path / "photos")


class _CreatesAFile:
    """What a crafted pickle can do as it loads: call any function it names (here
    open(path, "w"))."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def _cifar10_pickles(root, protocol, data_batch_1=None):
    """The archive's six batches and batches.meta, pickled as the original (dicts of bytes keys;
    uint8 rows, int labels, bytes names)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batch = {b"batch_label": f"batch {i}".encode(),
                 b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, 2).tolist(),
                 b"filenames": [b"a_1.png", b"b_2.png"]}
        if name == "data_batch_1" and data_batch_1 is not None:
            batch = data_batch_1
        with open(root / name, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
    names = [n.encode() for n in ("airplane automobile bird cat deer dog frog horse ship "
                                  "truck").split()]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_pickles_as_written_by_numpy_load(tmp_path, protocol):
    # Protocol 2 is the original archive's; 4 and 5 are what Python 3 writes (5: NumPy's buffers).
    _cifar10_pickles(tmp_path / "cifar-10-batches-py", protocol)
    splits = input_pipeline.load_dataset("cifar10", str(tmp_path))
    assert len(splits.train) == 10 and len(splits.test) == 2


def test_a_cifar10_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "created_by_the_pickle"
    root = tmp_path / "cifar-10-batches-py"
    _cifar10_pickles(root, 2, data_batch_1={b"data": _CreatesAFile(str(marker)), b"labels": []})
    with pytest.raises(ValueError, match=r"data_batch_1' is not a CIFAR-10 pickle, refused: it "
                                         r"asks to load io.open"):
        input_pipeline.load_dataset("cifar10", str(tmp_path))
    assert not marker.exists()


def test_a_cifar10_pickle_with_an_object_array_is_refused(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    _cifar10_pickles(root, 2, data_batch_1={b"data": np.array([1, "x"], dtype=object),
                                            b"labels": [0, 1]})
    with pytest.raises(ValueError, match="data_batch_1' is not a CIFAR-10 pickle, refused: it "
                                         "holds an array of dtype object"):
        input_pipeline.load_dataset("cifar10", str(tmp_path))
