"""Tests for input_pipeline/builder.py: the cache really caches, bad files are skipped and reported."""
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import cpu_devices, write_image, write_image_folder
from input_pipeline import builder
from input_pipeline.builder import InputPipeline, build_dataset
from input_pipeline.examples import Examples
from input_pipeline.preprocessing import Augmentation

IDENTITY = Augmentation(min_area=1.0, aspect_ratio=(1.0, 1.0), flip=False, color_jitter=False)


def folder_examples(root, per_class=6, classes=("a", "b")):
    paths = write_image_folder(root, classes=classes, per_class=per_class)
    return Examples(np.repeat(np.arange(len(classes)), per_class), paths=np.array(paths))


def unique_label_examples(root, n=12):
    """One image per label, so a label identifies its image across epochs."""
    paths = [write_image(os.path.join(root, f"img_{i}.jpg"), seed=i, fmt="JPEG") for i in range(n)]
    return Examples(np.arange(n), paths=np.array(paths))


def epoch(pipeline, e, batch_size=4):
    images, labels = [], []
    for x, y in pipeline.dataset(batch_size, epoch=e):
        images.append(x.numpy())
        labels.append(y.numpy())
    if not labels:
        return np.zeros((0,)), np.zeros((0,), np.int32)
    return np.concatenate(images), np.concatenate(labels)


def by_label(images, labels):
    return images[np.argsort(labels)]


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_second_epoch_needs_no_files(tmp_path, cache):
    examples = unique_label_examples(str(tmp_path / "data"))
    same = InputPipeline(examples, image_size=32, training=True, cache=cache, seed=3,
                         cache_dir=str(tmp_path / "cache"), augmentation=IDENTITY)
    crops = InputPipeline(examples, image_size=32, training=True, cache=cache, seed=3,
                          cache_dir=str(tmp_path / "cache2"))
    first, first_crops = epoch(same, 0), epoch(crops, 0)
    shutil.rmtree(tmp_path / "data")
    second, second_crops = epoch(same, 1), epoch(crops, 1)
    # Every image again (the same pixels), in another order ...
    assert sorted(first[1]) == sorted(second[1]) == list(range(12))
    assert list(first[1]) != list(second[1])
    np.testing.assert_array_equal(by_label(*first), by_label(*second))
    # ... and with augmentation, new crops of every image.
    a, b = by_label(*first_crops), by_label(*second_crops)
    assert all(np.abs(a[i] - b[i]).mean() > 1e-3 for i in range(12))
    if cache == "disk":
        assert os.listdir(tmp_path / "cache")


def test_without_a_cache_deleted_files_are_gone(tmp_path):
    # The control for the test above: with nothing cached, the files really are needed.
    examples = unique_label_examples(str(tmp_path / "data"), n=4)
    pipeline = InputPipeline(examples, image_size=32, training=False, cache="none")
    assert len(epoch(pipeline, 0)[1]) == 4
    shutil.rmtree(tmp_path / "data")
    assert len(epoch(pipeline, 1)[1]) == 0


def test_cache_survives_mirrored_strategy_distribution(tmp_path):
    examples = unique_label_examples(str(tmp_path / "data"), n=8)
    pipeline = InputPipeline(examples, image_size=32, training=True, cache="memory", seed=0)
    strategy = tf.distribute.MirroredStrategy(cpu_devices(2))

    def count(e):
        dist = strategy.distribute_datasets_from_function(lambda ctx: pipeline.dataset(2, epoch=e))
        seen = 0
        for _, labels in dist:
            seen += sum(int(t.shape[0]) for t in strategy.experimental_local_results(labels))
        return seen

    assert count(0) == 8
    shutil.rmtree(tmp_path / "data")
    assert count(1) == 8


def test_same_seed_and_epoch_repeat_exactly(tmp_path):
    examples = folder_examples(str(tmp_path / "data"))
    a = InputPipeline(examples, image_size=32, training=True, seed=7)
    b = InputPipeline(examples, image_size=32, training=True, seed=7)
    np.testing.assert_array_equal(epoch(a, 2)[0], epoch(b, 2)[0])
    assert not np.array_equal(epoch(a, 2)[1], epoch(a, 3)[1])


@pytest.mark.parametrize("global_seed", [0, 5])
def test_the_order_ignores_a_global_tf_seed(tmp_path, global_seed):
    # --deterministic sets TF's global seed (0 by default, which used to crash the shuffle).
    examples = unique_label_examples(str(tmp_path / "data"))
    pipeline = InputPipeline(examples, image_size=32, training=True, seed=7)
    expected = epoch(pipeline, 2)[1]
    tf.random.set_seed(global_seed)
    try:
        np.testing.assert_array_equal(epoch(pipeline, 2)[1], expected)
    finally:
        tf.random.set_seed(None)


def test_eval_pipeline_keeps_order_and_remainder(tmp_path):
    examples = folder_examples(str(tmp_path / "data"), per_class=5)
    pipeline = InputPipeline(examples, image_size=32, training=False)
    images, labels = epoch(pipeline, 0, batch_size=4)
    np.testing.assert_array_equal(labels, examples.labels)
    assert images.shape == (10, 32, 32, 3) and pipeline.steps_per_epoch(4) == 3
    train = InputPipeline(examples, image_size=32, training=True)
    assert len(epoch(train, 0, batch_size=4)[1]) == 8 and train.steps_per_epoch(4) == 2


def test_bad_files_are_skipped_and_reported(tmp_path):
    root = tmp_path / "data" / "a"
    good = [write_image(root / f"good_{i}.jpg", seed=i, fmt="JPEG") for i in range(6)]
    good.append(write_image(root / "png_named.jpg", fmt="PNG", mode="RGBA"))
    good.append(write_image(root / "cmyk.jpg", fmt="JPEG", mode="CMYK"))
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("not an image, just text")
    whole = open(good[0], "rb").read()
    (root / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    bad = [str(root / n) for n in ("empty.jpg", "notes.jpg", "truncated.jpg")]
    paths = np.array(good + bad)
    report = tmp_path / "run"
    pipeline = InputPipeline(Examples(np.zeros(len(paths)), paths=paths), image_size=32,
                             training=True, report_dir=str(report))
    assert sorted(pipeline.skipped_files) == sorted(bad)
    assert pipeline.num_examples == 8
    assert len(epoch(pipeline, 0, batch_size=1)[1]) == 8
    listed = (report / "skipped_files.txt").read_text().split()
    assert sorted(listed) == sorted(bad)


def test_mostly_unreadable_data_is_an_error(tmp_path):
    paths = [write_image(tmp_path / "ok.jpg", fmt="JPEG")]
    for i in range(3):
        (tmp_path / f"junk_{i}.jpg").write_bytes(b"junk")
        paths.append(str(tmp_path / f"junk_{i}.jpg"))
    with pytest.raises(ValueError, match="3 of 4 image files could not be read.*junk_0.jpg"):
        InputPipeline(Examples(np.zeros(4), paths=np.array(paths)), image_size=32, training=False)


def test_array_examples_and_shards(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    examples = Examples(np.arange(10), images=images)
    shards = [epoch(InputPipeline(examples, image_size=32, training=False, shard=(2, i)), 0)[1]
              for i in range(2)]
    assert set(shards[0]).isdisjoint(shards[1])
    assert sorted(np.concatenate(shards)) == list(range(10))
    dataset = build_dataset(examples, image_size=32, batch_size=5, training=True, seed=1)
    assert [tuple(x.shape) for x, _ in dataset] == [(5, 32, 32, 3)] * 2


def test_auto_cache_goes_to_disk_when_memory_is_short(tmp_path, monkeypatch):
    examples = folder_examples(str(tmp_path / "data"), per_class=2)
    assert InputPipeline(examples, image_size=32, training=False).cache_mode == "memory"
    monkeypatch.setattr(builder, "available_memory_bytes", lambda: 1000)
    pipeline = InputPipeline(examples, image_size=32, training=False,
                             cache_dir=str(tmp_path / "cache"))
    assert pipeline.cache_mode == "disk" and os.listdir(tmp_path / "cache")


def test_bad_arguments(tmp_path):
    examples = folder_examples(str(tmp_path / "data"), per_class=2)
    with pytest.raises(ValueError, match="cache must be one of auto, memory, disk, none"):
        InputPipeline(examples, image_size=32, training=False, cache="ram")
    with pytest.raises(ValueError, match="shard index 2"):
        InputPipeline(examples, image_size=32, training=False, shard=(2, 2))
