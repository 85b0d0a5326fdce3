"""Shared test set-up: split the CPU into logical devices so multi-tower code runs without a GPU.

TensorFlow fixes its device list the first time it initialises, so this runs at import time, before
any test touches TensorFlow. Tests that need towers use `cpu_devices(n)`. Also the fixture images
and the way end-to-end tests run train.py (`train_args`, `run`, the `data_dir` fixture,
`tiny_settings`), and what
a --profile_steps trace holds (`profiles`, `profiled_steps`).
"""
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

NUM_LOGICAL_CPUS = 2

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(NUM_LOGICAL_CPUS)])


@pytest.fixture(autouse=True)
def float32_policy():
    """A Trainer sets Keras's global precision policy (bfloat16 on CPUs with native bfloat16); no
    test may leave it to the next one."""
    yield
    import keras
    keras.mixed_precision.set_global_policy("float32")


def cpu_devices(n):
    """Names of the first `n` logical CPU devices, e.g. ['/cpu:0', '/cpu:1']."""
    names = [d.name for d in tf.config.list_logical_devices("CPU")]
    if n > len(names):
        pytest.skip(f"needs {n} logical CPUs, have {len(names)}")
    return names[:n]


def tiny_settings(data_dir, run_dir, **extra):
    """A training run's settings small enough for a test: a folder, MiniGoogLeNet at an eighth
    of its width on 32-px images, batch 4, 2 epochs at a constant rate; `extra` over them."""
    return {**dict(dataset="folder", data_dir=data_dir, run_dir=run_dir, model="minigooglenet",
                   image_size=32, width_multiplier=0.125, batch_size=4, epochs=2, log_every=1,
                   lr=0.01, lr_schedule="constant", warmup_epochs=0), **extra}


def assert_refused_before_data(given, message, tmp_path):
    """`given` settings are refused with `message` (a regular expression for its start) in one
    line, by the settings' check and as train.py resolves them: before the (missing) data folder
    is looked at, leaving no run directory."""
    import os

    from rundir.recorded import resolve_config
    from settings.checks import check_config
    from settings.config import TrainConfig, with_defaults
    with pytest.raises(ValueError, match="^" + message) as error:
        check_config(with_defaults(TrainConfig.from_dict(given)), given)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="^" + message):
        resolve_config({"dataset": "folder", "data_dir": str(tmp_path / "missing"),
                        "run_dir": str(tmp_path / "run"), **given})
    assert not os.path.exists(tmp_path / "run")


def towers_and_host_batches(pipeline, towers=2, batch=4):
    """Pairs (what `towers` CPU towers make of each device-path batch, concatenated; the
    host path's batch) for epoch 0 of a training `pipeline`: the two augmentation paths side by
    side."""
    strategy = tf.distribute.MirroredStrategy(cpu_devices(towers))
    on_host = [x.numpy() for x, _ in pipeline.dataset(batch, epoch=0)]
    batches = strategy.experimental_distribute_dataset(
        pipeline.dataset(batch, epoch=0, augment_on="device"))
    step = tf.function(lambda inputs: strategy.run(pipeline.augment, args=(inputs,)))
    return [(np.concatenate([t.numpy() for t in strategy.experimental_local_results(
        step(inputs))]), host) for host, (inputs, _) in zip(on_host, batches)]


def write_image(path, size=(40, 48), color=None, fmt=None, mode="RGB", seed=0):
    """Writes a small real image file (random pixels, or one `color`) and returns its path."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    pixels = (np.full((*size, 3), color, np.uint8) if color is not None
              else rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path, format=fmt)
    return str(path)


def write_image_folder(root, classes=("cat", "dog"), per_class=6, size=(40, 48), ext=".jpg"):
    """A class-per-folder tree of JPEGs: root/<class>/img_<i><ext>."""
    paths = []
    for c, name in enumerate(classes):
        for i in range(per_class):
            paths.append(write_image(os.path.join(root, name, f"img_{i}{ext}"), size=size,
                                     seed=c * 1000 + i, fmt="JPEG"))
    return paths


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "images"
    write_image_folder(str(root))
    return str(root)


def scalars(log_dir):
    """({tag: [float values in step order]}, the EventAccumulator) of a TensorBoard log dir."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(log_dir, size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    values = {}
    for tag in events.Tags()["tensors"]:
        values[tag] = [float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)
                       if e.tensor_proto.dtype == tf.float32.as_datatype_enum]
    return {k: v for k, v in values.items() if v}, events


def profiled_steps(xplane_path):
    """The step numbers of the "train" step markers in a profiler trace (an XSpace protobuf)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    with open(xplane_path, "rb") as f:
        space = xplane_pb2.XSpace.FromString(f.read())
    steps = []
    for plane in space.planes:
        stat_names = {i: m.name for i, m in plane.stat_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                if plane.event_metadata[event.metadata_id].name != "train":
                    continue
                stats = {stat_names[s.metadata_id]: s.int64_value or s.uint64_value
                         for s in event.stats}
                if "step_num" in stats:
                    steps.append(stats["step_num"])
    return sorted(steps)


def profiles(run_dir):
    """{profile directory name: its trace file} under the run's TensorBoard train logs."""
    root = os.path.join(run_dir, "train", "plugins", "profile")
    found = {}
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        traces = [f for f in os.listdir(os.path.join(root, name)) if f.endswith(".xplane.pb")]
        assert len(traces) == 1, (name, traces)
        found[name] = os.path.join(root, name, traces[0])
    return found


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Three classes of six 36x36 JPEGs: 12 train images, 3 steps per epoch at batch 4."""
    root = tmp_path_factory.mktemp("cli") / "photos"
    write_image_folder(str(root), classes=("daisy", "roses", "tulips"), per_class=6, size=(36, 36))
    return str(root)


def train_args(data_dir, run_dir, *extra):
    """train.py on the `data_dir` fixture, small and fast."""
    return [sys.executable, os.path.join(ROOT, "train.py"), "--dataset=folder",
            f"--data_dir={data_dir}", f"--run_dir={run_dir}", "--image_size=32",
            "--width_multiplier=0.125", "--batch_size=4", *extra]


def run(args, timeout=300):
    return subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=timeout)
