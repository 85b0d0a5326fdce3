"""Hostile folders (issue 49, part 5): class folders named with spaces and non-Latin letters, a
file name that is not valid UTF-8, symlink loops inside a class folder, and files and folders the
user running train.py cannot read. Each trains or is named in one line, never a traceback.

Tests here run as root, which reads a chmod 000 file anyway; the unreadable cases then run
train.py without the two capabilities that let root past file permissions (CAP_DAC_OVERRIDE,
CAP_DAC_READ_SEARCH), so it meets the file as any other user would, and skip saying why when
that cannot be done."""
import ctypes
import logging
import os
import re
import subprocess

import pytest

from conftest import ENV, train_args, write_image, write_image_folder
from input_pipeline import folder, load_dataset

# Sorted by code point, as the classes are: Latin, then Cyrillic, then CJK.
CLASSES = ("red rose", "Ромашка поле", "金鱼")
NOT_UTF8 = b"\xff\xfe caf\xe9.jpg"  # Latin-1 bytes, as an old camera or a Windows share names it
NOT_UTF8_SHOWN = r"\xff\xfe caf\xe9.jpg"
LOOPS = ("loop.jpg", "a_loop.jpg", "b_loop.jpg")  # loop.jpg -> itself; a_loop <-> b_loop

_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 24, 1, 2


def _without_root_reads():
    """preexec_fn: drops what lets root read any file from the bounding set, so the program run
    next gets permission checks like any other user (its own files keep the owner's bits)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _as_a_user():
    """(subprocess.run's keyword arguments under which a chmod 000 file cannot be read, or None;
    why not): as this user when it is not root, else without root's read capabilities."""
    if os.geteuid() != 0:
        return {}, None
    try:
        subprocess.run(["true"], preexec_fn=_without_root_reads, check=True)
    except (subprocess.SubprocessError, OSError) as error:  # prctl refused: no CAP_SETPCAP
        return None, (f"running as root, and root's read capabilities cannot be dropped here "
                      f"({error}): a chmod 000 file is read like any other")
    return {"preexec_fn": _without_root_reads}, None


def _run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=300, **kwargs)


def _hostile_folder(root):
    """CLASSES with six 36x36 JPEGs each; in the first, the symlink loops, a folder link to
    itself, and a seventh JPEG whose name is not UTF-8."""
    write_image_folder(root, classes=CLASSES, per_class=6, size=(36, 36))
    first = os.path.join(root, CLASSES[0])
    os.symlink("loop.jpg", os.path.join(first, "loop.jpg"))
    os.symlink("b_loop.jpg", os.path.join(first, "a_loop.jpg"))
    os.symlink("a_loop.jpg", os.path.join(first, "b_loop.jpg"))
    os.symlink(".", os.path.join(first, "self"))  # a reader that recursed would never end
    with open(os.path.join(first, "img_0.jpg"), "rb") as f:
        pixels = f.read()
    with open(os.fsencode(first) + b"/" + NOT_UTF8, "wb") as f:
        f.write(pixels)
    return first


# -- the reader, in-process ----------------------------------------------------------------------
def test_names_with_spaces_and_other_scripts_are_classes_and_survive_the_saved_split(tmp_path,
                                                                                       caplog):
    root = str(tmp_path / "photos")
    first = _hostile_folder(root)
    with caplog.at_level(logging.WARNING):
        raw = folder.load(root)
    assert raw.class_names == list(CLASSES) == sorted(CLASSES)
    names = sorted(os.path.basename(p) for p, label in zip(raw.train.paths, raw.train.labels)
                   if label == 0)
    # The image files and the loops (for the first pass to find unreadable); not the folder
    # link, not the file whose name is not UTF-8, which the warning names.
    assert names == sorted([f"img_{i}.jpg" for i in range(6)] + list(LOOPS))
    [warning] = [r.getMessage() for r in caplog.records if "UTF-8" in r.getMessage()]
    assert warning.startswith(f"Left out 1 file(s) in {first} whose names are not valid UTF-8")
    assert NOT_UTF8_SHOWN in warning and "rename them" in warning
    # Written into the run's data/ and read back as it was.
    split_dir = str(tmp_path / "data")
    made = load_dataset("folder", root, split_dir=split_dir)
    again = load_dataset("folder", root, split_dir=split_dir)
    assert again.class_names == made.class_names == list(CLASSES)
    assert list(again.train.paths) == list(made.train.paths)
    assert list(again.test.paths) == list(made.test.paths)
    with open(os.path.join(split_dir, "class_names.txt"), encoding="utf-8") as f:
        assert f.read() == "".join(name + "\n" for name in CLASSES)


def test_a_class_folder_whose_name_is_not_utf8_is_named(tmp_path):
    root = tmp_path / "photos"
    write_image_folder(str(root), classes=("cat", "dog"), per_class=2)
    os.rename(os.path.join(root, "dog"), os.fsencode(root) + b"/d\xf6g")
    with pytest.raises(ValueError) as refused:
        folder.load(str(root))
    assert str(refused.value) == (f"Class folder '{root}/d\\xf6g': its name is not valid UTF-8, "
                                  f"which a class name cannot be; rename the folder")


# -- train.py on it --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """train.py on a hostile folder that also holds a chmod 000 image when it can be made
    unreadable: (root, run dir, its CompletedProcess, that image's path or None, why None)."""
    base = tmp_path_factory.mktemp("names")
    root = str(base / "photos")
    first = _hostile_folder(root)
    kwargs, why_not = _as_a_user()
    unreadable = None
    if kwargs is not None:
        unreadable = write_image(os.path.join(first, "locked.jpg"), size=(36, 36), fmt="JPEG")
        os.chmod(unreadable, 0)
    run_dir = str(base / "run")
    done = _run(train_args(root, run_dir, "--model=minigooglenet", "--epochs=1"),
                **(kwargs or {}))
    if unreadable:
        os.chmod(unreadable, 0o644)
    return root, run_dir, done, unreadable, why_not


def _skipped(run_dir):
    """The paths skipped_files.txt lists ("<subset>\\t<path>[\\t<reason>]" lines)."""
    with open(os.path.join(run_dir, "skipped_files.txt"), encoding="utf-8") as f:
        return sorted(line.split("\t")[1].rstrip("\n") for line in f if line.strip())


def test_a_hostile_folder_trains_and_names_what_it_leaves_out(hostile_run):
    root, run_dir, done, unreadable, _ = hostile_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    with open(os.path.join(run_dir, "data", "class_names.txt"), encoding="utf-8") as f:
        assert f.read().splitlines() == list(CLASSES)
    first = os.path.join(root, CLASSES[0])
    # The loops (and the locked file) are read, fail, and are listed; the rest trains.
    listed = sorted(os.path.join(first, name) for name in LOOPS)
    assert _skipped(run_dir) == sorted(listed + ([unreadable] if unreadable else []))
    counts = re.search(r"Training minigooglenet on folder: (\d+) train / (\d+) test images",
                       done.stdout)
    assert int(counts[1]) + int(counts[2]) == 3 * 6
    # The file whose name is not UTF-8: one warning line naming it, with its bytes escaped.
    [warning] = [line for line in done.stderr.splitlines() if "not valid UTF-8" in line]
    assert f"in {first} whose names are not valid UTF-8" in warning
    assert NOT_UTF8_SHOWN in warning
    assert "Done at step 3" in done.stdout


def test_an_unreadable_file_is_skipped_and_listed(hostile_run):
    root, run_dir, done, unreadable, why_not = hostile_run
    if unreadable is None:
        pytest.skip(why_not)
    assert done.returncode == 0, done.stderr[-3000:]
    assert unreadable in _skipped(run_dir)
    [warning] = [line for line in done.stderr.splitlines() if "Skipped" in line
                 and unreadable in line]
    assert "Permission denied" in warning


def test_a_class_folder_that_cannot_be_listed_is_named(tmp_path):
    root = str(tmp_path / "photos")
    write_image_folder(root, classes=("cat", "dog"), per_class=4, size=(36, 36))
    locked = os.path.join(root, "dog")
    kwargs, why_not = _as_a_user()
    if kwargs is None:
        pytest.skip(why_not)
    os.chmod(locked, 0)
    try:
        done = _run(train_args(root, str(tmp_path / "run"), "--model=minigooglenet",
                               "--epochs=1"), **kwargs)
    finally:
        os.chmod(locked, 0o755)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"Error: Folder '{locked}' cannot be listed (Permission denied); make it readable, or "
        f"move it out of the data directory")
