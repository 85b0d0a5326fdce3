"""Tests for input_pipeline/builder.py, store.py's choice of cache and skipped.py: the cache really
caches, every epoch is a uniform shuffle, bad files are skipped and reported."""
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import chisquare

from conftest import cpu_devices, write_image, write_image_folder
from host.console import PassProgress
from input_pipeline import builder, first_pass, skipped, store
from input_pipeline.builder import InputPipeline
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


@pytest.mark.parametrize("cache", ["memory", "disk", "disk_jpeg"])
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
    if cache.startswith("disk"):
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
    # Every run sets TF's global seed from --seed (0 by default, which used to crash the shuffle).
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
    assert images.shape == (10, 32, 32, 3)
    train = InputPipeline(examples, image_size=32, training=True)
    assert len(epoch(train, 0, batch_size=4)[1]) == 8  # two whole batches of 4


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
    listed = [line.split("\t") for line in (report / "skipped_files.txt").read_text().splitlines()]
    assert sorted((subset, path) for subset, path, _ in listed) == sorted(("train", p) for p in bad)
    reasons = {os.path.basename(path): reason for _, path, reason in listed}
    assert reasons["empty.jpg"] == "empty file"
    assert reasons["notes.jpg"].startswith("not a readable image: Unknown image file format")
    assert reasons["truncated.jpg"].startswith("not a readable image: ")


def test_the_skip_list_names_the_bad_files_of_every_subset(tmp_path):
    # One bad file among the training images, one among the held-out ones: the held-out
    # pipeline, made second, must not erase what the training pipeline listed.
    good = [write_image(tmp_path / "d" / f"good_{i}.jpg", seed=i, fmt="JPEG") for i in range(8)]
    (tmp_path / "d" / "empty.jpg").write_bytes(b"")
    whole = open(good[0], "rb").read()
    (tmp_path / "d" / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    truncated = str(tmp_path / "d" / "truncated.jpg")
    train = Examples(np.zeros(5), paths=np.array(good[:4] + [truncated]))
    test = Examples(np.zeros(5), paths=np.array(good[4:] + [str(tmp_path / "d" / "empty.jpg")]))
    report = str(tmp_path / "run")
    train_data = InputPipeline(train, image_size=16, training=True, report_dir=report)
    test_data = InputPipeline(test, image_size=16, training=False, report_dir=report)
    assert train_data.num_examples == test_data.num_examples == 4
    assert skipped.read_skipped_list(report) == {
        "train": [str(tmp_path / "d" / "truncated.jpg")],
        "test": [str(tmp_path / "d" / "empty.jpg")]}
    assert "1 unreadable file(s) skipped" in test_data.describe_cache(report)
    # A later run in which the held-out file was repaired keeps the training entry only.
    write_image(tmp_path / "d" / "empty.jpg", fmt="JPEG")
    InputPipeline(test, image_size=16, training=False, report_dir=report)
    assert skipped.read_skipped_list(report) == {"train": [str(tmp_path / "d" / "truncated.jpg")]}


def test_mostly_unreadable_data_is_an_error(tmp_path):
    paths = [write_image(tmp_path / "ok.jpg", fmt="JPEG")]
    for i in range(3):
        (tmp_path / f"junk_{i}.jpg").write_bytes(b"junk")
        paths.append(str(tmp_path / f"junk_{i}.jpg"))
    with pytest.raises(ValueError, match="3 of 4 test image files could not be read.*junk_0.jpg"):
        InputPipeline(Examples(np.zeros(4), paths=np.array(paths)), image_size=32, training=False)


def test_array_examples_and_shards(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    examples = Examples(np.arange(10), images=images)
    shards = [epoch(InputPipeline(examples, image_size=32, training=False, shard=(2, i)), 0)[1]
              for i in range(2)]
    assert set(shards[0]).isdisjoint(shards[1])
    assert sorted(np.concatenate(shards)) == list(range(10))
    dataset = InputPipeline(examples, image_size=32, training=True, seed=1).dataset(5)
    assert [tuple(x.shape) for x, _ in dataset] == [(5, 32, 32, 3)] * 2


def test_auto_cache_goes_to_disk_when_memory_is_short(tmp_path, monkeypatch):
    examples = folder_examples(str(tmp_path / "data"), per_class=2)
    assert InputPipeline(examples, image_size=32, training=False).cache_mode == "memory"
    monkeypatch.setattr(store, "available_memory_bytes", lambda: 1000)
    pipeline = InputPipeline(examples, image_size=32, training=False,
                             cache_dir=str(tmp_path / "cache"))
    assert pipeline.cache_mode.startswith("disk") and os.listdir(tmp_path / "cache")


def test_auto_cache_on_disk_keeps_raw_pixels_only_when_they_are_no_bigger_than_the_data(
        tmp_path, monkeypatch):
    # 40x48 noise JPEGs of a few KB each; 16-px input caches 19x19x3 = 1,083 raw bytes per image.
    examples = folder_examples(str(tmp_path / "data"), per_class=2)
    monkeypatch.setattr(store, "available_memory_bytes", lambda: 1000)

    def mode(image_size):
        return InputPipeline(examples, image_size=image_size, training=False,
                             cache_dir=str(tmp_path / "cache")).cache_mode
    assert mode(16) == "disk"
    # 128-px input: 147x147x3 = 64,827 raw bytes per image, ten times the files themselves.
    assert mode(128) == "disk_jpeg"
    assert any(f.endswith(f".jpg{store.JPEG_QUALITY}") for f in os.listdir(tmp_path / "cache"))
    # Raw pixels that would fill more than half the free disk are not chosen either.
    monkeypatch.setattr(store, "free_disk_bytes", lambda directory: 1000)
    assert mode(16) == "disk_jpeg"


def smooth_photo_examples(root, n=24, size=96):
    """Photo-like JPEGs (smooth colour fields, as benchmarks/pipeline.py makes): noise would make
    any JPEG re-encoding look bad, and real images are not noise."""
    from PIL import Image
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        path = os.path.join(root, f"img_{i}.jpg")
        os.makedirs(root, exist_ok=True)
        Image.fromarray(small).resize((size, size), Image.BICUBIC).save(path, quality=90)
        paths.append(path)
    return Examples(np.arange(n), paths=np.array(paths))


def test_the_jpeg_disk_cache_is_compact_and_close_to_the_raw_one(tmp_path):
    examples = smooth_photo_examples(str(tmp_path / "data"))
    pipelines = {cache: InputPipeline(examples, image_size=64, training=False, cache=cache,
                                      cache_dir=str(tmp_path / cache))
                 for cache in ("disk", "disk_jpeg")}
    raw, compact = (by_label(*epoch(pipelines[c], 0)) for c in ("disk", "disk_jpeg"))
    assert raw.shape == compact.shape == (24, 64, 64, 3)
    # Pixels in [-1, 1]: 2/255 is one grey level. PSNR > 35 dB, no pixel off by more than 8%.
    error = (raw - compact) * 127.5
    assert 10 * np.log10(255 ** 2 / np.mean(error ** 2)) > 35
    assert np.abs(error).max() < 20
    # A fraction of the raw bytes (74x74x3 = 16,428 per image), and that is what it reports.
    raw_bytes, compact_bytes = (pipelines[c].cache_bytes for c in ("disk", "disk_jpeg"))
    assert raw_bytes == 24 * 74 * 74 * 3
    assert compact_bytes < raw_bytes / 3
    (cache_file,) = [f for f in os.listdir(tmp_path / "disk_jpeg") if not f.endswith(".npy")]
    assert os.path.getsize(tmp_path / "disk_jpeg" / cache_file) == compact_bytes
    assert f"{compact_bytes / 24 / 1e3:.1f} KB per image" in pipelines["disk_jpeg"].describe_cache()


def test_bad_arguments(tmp_path):
    examples = folder_examples(str(tmp_path / "data"), per_class=2)
    with pytest.raises(ValueError,
                       match="cache must be one of auto, memory, disk, disk_jpeg, none"):
        InputPipeline(examples, image_size=32, training=False, cache="ram")
    with pytest.raises(ValueError, match="shard index 2"):
        InputPipeline(examples, image_size=32, training=False, shard=(2, 2))


# -- Every epoch a uniform shuffle of the whole set ------------------------------------------------
# 30,000 class-sorted images (10 classes of 3,000), three times a 10,000-image shuffle buffer and
# over a hundred times any batch the pipeline uses. Each image's label is its
# id, and its class is id // PER_CLASS, so one pass checks both the classes and the permutation.
NUM_CLASSES, PER_CLASS = 10, 3_000
BATCH = 500


@pytest.fixture(scope="module")
def class_sorted():
    n = NUM_CLASSES * PER_CLASS
    images = np.random.default_rng(0).integers(0, 256, (n, 6, 6, 3), dtype=np.uint8)
    return Examples(np.arange(n), images=images)


def epoch_ids(pipeline, e):
    return np.concatenate([y.numpy() for _, y in pipeline.dataset(BATCH, epoch=e)])


def assert_uniform_class_mix(first_batch_ids, classes=NUM_CLASSES):
    counts = np.bincount(first_batch_ids // PER_CLASS, minlength=classes)
    # Under uniform sampling the statistic is chi-square with 9 degrees of freedom; a sweep
    # through sorted classes gives p ~ 0 (a batch of 500 from 2 or 3 classes).
    assert chisquare(counts).pvalue > 0.001, counts


# Without a cache (the slowest, reading every file each epoch) in the slow set: the order is drawn
# over record numbers whatever the cache, so the three others show it.
@pytest.mark.parametrize("cache", ["memory", "disk", "disk_jpeg",
                                   pytest.param("none", marks=pytest.mark.slow)])
def test_every_epoch_is_a_uniform_permutation_of_the_whole_set(class_sorted, tmp_path, cache):
    pipeline = InputPipeline(class_sorted, image_size=6, training=True, cache=cache, seed=1,
                             cache_dir=str(tmp_path), augmentation=IDENTITY)
    first, second = epoch_ids(pipeline, 0), epoch_ids(pipeline, 1)
    for ids in (first, second):
        # Every image exactly once ...
        np.testing.assert_array_equal(np.sort(ids), np.arange(len(class_sorted)))
        # ... the first batch a fair draw over the classes ...
        assert_uniform_class_mix(ids[:BATCH])
    # ... and a new order every epoch.
    assert np.mean(first != second) > 0.99


def test_two_workers_shards_mix_all_classes_and_partition_every_epoch(class_sorted):
    shards = [InputPipeline(class_sorted, image_size=6, training=True, cache="memory", seed=1,
                            shard=(2, w), augmentation=IDENTITY) for w in range(2)]
    for e in range(2):
        ids = [epoch_ids(shard, e) for shard in shards]
        for worker_ids in ids:
            assert_uniform_class_mix(worker_ids[:BATCH])
        np.testing.assert_array_equal(np.sort(np.concatenate(ids)), np.arange(len(class_sorted)))
        # The workers do not walk their shards in the same pattern (position in shard: id // 2).
        assert np.mean(ids[0] // 2 != ids[1] // 2) > 0.99
    assert np.mean(epoch_ids(shards[0], 0) != epoch_ids(shards[0], 1)) > 0.99


def test_a_class_sorted_folder_is_shuffled_from_the_disk_cache(tmp_path):
    # The same on real files: 12 class folders of 150 JPEGs each, read through the disk cache.
    classes = [f"c{k:02d}" for k in range(12)]
    paths = write_image_folder(str(tmp_path / "data"), classes=classes, per_class=150,
                               size=(8, 8))
    examples = Examples(np.repeat(np.arange(12), 150), paths=np.array(paths))
    pipeline = InputPipeline(examples, image_size=8, training=True, cache="disk", seed=0,
                             cache_dir=str(tmp_path / "cache"), augmentation=IDENTITY)
    labels = [np.concatenate([y.numpy() for _, y in pipeline.dataset(120, epoch=e)])
              for e in range(2)]
    for epoch_labels in labels:
        np.testing.assert_array_equal(np.sort(epoch_labels), examples.labels)
        counts = np.bincount(epoch_labels[:120], minlength=12)
        assert chisquare(counts).pvalue > 0.001, counts
    assert np.mean(labels[0] != labels[1]) > 0.8


@pytest.mark.parametrize("cache,suffix",
                         [("disk", ".u8"), ("disk_jpeg", f".jpg{store.JPEG_QUALITY}")])
def test_a_complete_disk_cache_is_reused_and_a_partial_one_is_not(tmp_path, cache, suffix):
    examples = unique_label_examples(str(tmp_path / "data"), n=10)
    cache_dir = str(tmp_path / "cache")
    first = InputPipeline(examples, image_size=16, training=False, cache=cache,
                          cache_dir=cache_dir)
    expected = epoch(first, 0)
    (cache_file,) = [f for f in os.listdir(cache_dir) if f.endswith(suffix)]
    # A run killed while filling a cache leaves a partial file: a later run removes it.
    abandoned = os.path.join(cache_dir, cache_file + ".partial-999999999")
    open(abandoned, "wb").write(b"half")
    shutil.rmtree(tmp_path / "data")
    again = InputPipeline(examples, image_size=16, training=False, cache=cache,
                          cache_dir=cache_dir)
    assert "reused" in again.describe_cache()
    np.testing.assert_array_equal(epoch(again, 0)[0], expected[0])
    assert not os.path.exists(abandoned)
    # A cache file cut short is not trusted: the images are read again (here: they are gone).
    with open(os.path.join(cache_dir, cache_file), "r+b") as f:
        f.truncate(100)
    with pytest.raises(ValueError, match="10 of 10 test image files could not be read"):
        InputPipeline(examples, image_size=16, training=False, cache=cache, cache_dir=cache_dir)


def test_the_first_pass_shows_progress_and_the_cache(tmp_path, capsys):
    examples = folder_examples(str(tmp_path / "data"), per_class=5)
    InputPipeline(examples, image_size=16, training=True, cache="memory",
                  progress=PassProgress())
    out = capsys.readouterr().out
    assert "First pass over the 10 train images" in out
    assert "10/10" in out and "img/s" in out
    size = builder.preprocessing.cache_size(16)
    assert (f"Cache (memory) holds 10 train images: {10 * size * size * 3 / 1e6:.1f} MB "
            f"({size * size * 3 / 1e3:.1f} KB per image) in RAM") in out
    # One PassProgress serves both of a run's pipelines, each pass with its own bar.
    progress = PassProgress()
    InputPipeline(examples, image_size=16, training=True, cache="memory", progress=progress)
    InputPipeline(Examples(examples.labels[:4], paths=examples.paths[:4]), image_size=16,
                  training=False, cache="memory", subset="test", progress=progress)
    out = capsys.readouterr().out
    assert "10/10" in out and "First pass over the 4 test images" in out and "4/4 " in out
    # Without one, the pipeline prints nothing.
    InputPipeline(examples, image_size=16, training=True, cache="memory")
    assert capsys.readouterr().out == ""


def test_the_first_pass_runs_without_the_autotuner_and_yields_every_example_once(tmp_path):
    # With tf.data's autotuner on, about half of all first passes ran at 70% speed with a core
    # idle (docs/design.md, "The first pass"); the pass's parallelism is fixed instead.
    examples = folder_examples(str(tmp_path / "data"), per_class=5)
    passed = first_pass.batches(examples, 16, Augmentation().eval_fraction, False)
    assert passed.options().autotune.enabled is False
    indices = np.concatenate([index.numpy() for _, index in passed])
    np.testing.assert_array_equal(indices, np.arange(10))  # every example once, in order


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_augmenting_on_the_device_gives_the_host_batch(tmp_path, cache):
    examples = unique_label_examples(str(tmp_path / "data"))
    pipeline = InputPipeline(examples, image_size=32, training=True, cache=cache, seed=5)
    on_host = list(pipeline.dataset(4, epoch=1))
    on_device = list(pipeline.dataset(4, epoch=1, augment_on="device"))
    assert len(on_host) == len(on_device) == 3
    side = builder.preprocessing.cache_size(32)
    for (host_images, host_labels), (inputs, labels) in zip(on_host, on_device):
        # Handed over: the cached uint8 squares (37 px for 32) and each image's parameters...
        assert inputs["images"].dtype == tf.uint8 and inputs["images"].shape == (4, side, side, 3)
        assert inputs["box"].shape == (4, 4) and inputs["hue"].shape == (4,)
        np.testing.assert_array_equal(labels, host_labels)
        # ... 3 bytes per pixel at the cache size instead of 12 per pixel of the input.
        assert inputs["images"].numpy().nbytes < host_images.numpy().nbytes / 2.5
        # The same crops, flips and colours, wherever they are applied.
        np.testing.assert_allclose(pipeline.augment(inputs), host_images, atol=1e-5)
    # Evaluation is unchanged: there is nothing to augment.
    held_out = InputPipeline(examples, image_size=32, training=False, cache=cache)
    a, b = (np.concatenate([x for x, _ in held_out.dataset(4, augment_on=where)])
            for where in ("host", "device"))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="augment_on must be host or device, got 'gpu'"):
        pipeline.dataset(4, augment_on="gpu")


def test_balanced_sampling_draws_every_class_equally_often_with_its_own_images():
    # 900 / 90 / 10 images; each image's pixels say which one it is: its index in two channels
    # (index // 256, index % 256), and its class times 100 in the third.
    labels = np.repeat([0, 1, 2], [900, 90, 10])
    index = np.arange(1000)
    pixels = np.stack([labels * 100, index // 256, index % 256], -1).astype(np.uint8)
    images = np.broadcast_to(pixels[:, None, None, :], (1000, 4, 4, 3)).copy()
    examples = Examples(labels, images=images)
    balanced = InputPipeline(examples, image_size=4, training=True, cache="memory", seed=3,
                             augmentation=IDENTITY, sampling="balanced")
    epochs, images_drawn = [], []
    for e in range(2):
        batches = list(balanced.dataset(100, epoch=e))
        # Back from [-1, 1] to the stored bytes: v / 127.5 - 1.
        stored = np.concatenate([np.rint((x.numpy()[:, 0, 0] + 1) * 127.5) for x, _ in batches])
        drawn = np.concatenate([y.numpy() for _, y in batches])
        assert len(drawn) == 1000  # an epoch is as long as the data
        # Each label comes with an image of its class.
        which = (stored[:, 1] * 256 + stored[:, 2]).astype(int)
        np.testing.assert_array_equal(labels[which], drawn)
        np.testing.assert_array_equal(stored[:, 0], drawn * 100)
        counts = np.bincount(drawn, minlength=3)
        assert chisquare(counts).pvalue > 0.001, counts  # ~333 each, not 900 / 90 / 10
        epochs.append(drawn)
        images_drawn.append(which)
    assert np.mean(epochs[0] != epochs[1]) > 0.5
    # Within a class, every image is as likely as the others (drawn with replacement): the 10
    # images of the smallest class each come up about 67 times in ~670 draws, and ~670 draws
    # of the 900 images of the largest find about 900 x (1 - exp(-670 / 900)) = 472 of them.
    which = np.concatenate(images_drawn)
    smallest = np.bincount(which[labels[which] == 2] - 990, minlength=10)
    assert chisquare(smallest).pvalue > 0.001, smallest
    assert 400 < len(np.unique(which[labels[which] == 0])) < 540
    again = InputPipeline(examples, image_size=4, training=True, cache="memory", seed=3,
                          augmentation=IDENTITY, sampling="balanced")
    np.testing.assert_array_equal(
        np.concatenate([y.numpy() for _, y in again.dataset(100, epoch=1)]), epochs[1])
    uniform = InputPipeline(examples, image_size=4, training=True, cache="memory", seed=3,
                            augmentation=IDENTITY)
    assert np.bincount(np.concatenate([y.numpy() for _, y in uniform.dataset(100)])).tolist() \
        == [900, 90, 10]
    with pytest.raises(ValueError, match="sampling must be one of uniform, balanced"):
        InputPipeline(examples, image_size=4, training=True, sampling="oversample")
