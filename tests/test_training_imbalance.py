"""Imbalanced classes through the Trainer: --class_weight=balanced gives the training step the
balanced weights of the training split's counts, --sampling=balanced reaches the training
pipeline, and the start line says so or warns."""
import pytest

from conftest import cpu_devices, write_image_folder
from rundir.recorded import resolve_config
from training.loop import Trainer


@pytest.fixture(scope="module")
def imbalanced(tmp_path_factory):
    """A pre-split folder, so the training counts are exact: 12 images of 'cat', 2 of 'dog' (6x)."""
    root = tmp_path_factory.mktemp("imbalanced") / "pets"
    write_image_folder(str(root / "train"), classes=("cat",), per_class=12, size=(36, 36))
    write_image_folder(str(root / "train"), classes=("dog",), per_class=2, size=(36, 36))
    write_image_folder(str(root / "val"), classes=("cat", "dog"), per_class=2, size=(36, 36))
    return str(root)


def start(data_dir, run_dir, **extra):
    """The Trainer of a tiny run and what its start printed."""
    lines = []
    config = resolve_config(dict(dataset="folder", data_dir=data_dir, run_dir=run_dir,
                                 model="minigooglenet", image_size=32, width_multiplier=0.125,
                                 batch_size=4, epochs=1, lr=0.01, lr_schedule="constant",
                                 warmup_epochs=0, mixed_precision=False, **extra))
    trainer = Trainer(config, towers=cpu_devices(1), print_fn=lines.append)
    trainer.announce(0)
    return trainer, lines


def test_balanced_class_weights_and_sampling_reach_the_step_and_the_pipeline(imbalanced,
                                                                            tmp_path):
    trainer, lines = start(imbalanced, str(tmp_path / "run"), class_weight="balanced",
                           sampling="balanced")
    # n = 14 training images, k = 2 classes: 14 / (2 x 12) for cat, 14 / (2 x 2) for dog.
    assert trainer.steps.config.class_weights == pytest.approx((7 / 12, 3.5))
    assert trainer.data.train.sampling == "balanced"
    assert trainer.data.test.sampling == "uniform"  # held-out images are scored each once
    assert len(lines) == 1  # both remedies on: no warning
    assert lines[0].startswith("Training minigooglenet on folder: 14 train / 4 val images")
    assert ("), 2 classes, balanced class weights in the loss (x0.583 to x3.5), balanced sampling "
            "(every class equally often), 1 tower(s)") in lines[0]


def test_the_start_warns_of_imbalanced_classes_nothing_balances(imbalanced, tmp_path):
    trainer, lines = start(imbalanced, str(tmp_path / "run"))
    assert trainer.steps.config.class_weights is None and trainer.data.train.sampling == "uniform"
    assert "2 classes, 1 tower(s)" in lines[0]
    assert lines[1].startswith("Warning: the classes are imbalanced: 'cat' has 12 training "
                               "images, 6.0x the 2 of 'dog'.")
    assert len(lines) == 2
