"""The per-dataset recipes: one for every dataset reader, their augmentation, their defaults."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from test_input_pipeline_preprocessing import _find_shift as find_shift
from test_training_run_dir import write_checkpoint

import input_pipeline
from input_pipeline import preprocessing
from rundir.recorded import resolve_config, save_run_config
from settings.checks import check_config
from settings.config import TrainConfig, with_defaults
from settings.recipes import FALLBACK, RECIPES, get_recipe
from training import optimization


def test_every_dataset_has_exactly_one_recipe_and_unknown_names_are_listed():
    assert set(RECIPES) == set(input_pipeline.DATASETS)
    with pytest.raises(ValueError, match="'mnist'; valid names: cifar10, digits, folder"):
        get_recipe("mnist")


def test_a_new_run_takes_its_recipe_then_the_fallback_and_keeps_what_was_given():
    tiny = with_defaults(TrainConfig(dataset="tiny_imagenet", lr=0.3))
    assert tiny.lr == 0.3                                  # given
    assert (tiny.model, tiny.epochs, tiny.nesterov) == ("googlenet_64", 70, True)  # the recipe
    assert tiny.width_multiplier == FALLBACK["width_multiplier"] == 1.0   # not in the recipe
    assert tiny.image_size == 64                           # the model's own default
    assert tiny.run_dir == "runs/tiny_imagenet-googlenet_64"


def test_small_folder_collections_train_with_gentler_crops_and_no_hue_shift():
    folder = get_recipe("folder")
    small = folder.augmentation_for(5_000)
    large = folder.augmentation_for(500_000)
    assert (small.min_area, small.hue) == (0.25, 0.0) and small.flip and small.color_jitter
    # Large collections keep Inception's augmentation (TF-slim: 8-100% area, hue +-0.2).
    assert (large.min_area, large.hue) == (0.08, 0.2)
    # Datasets with their own recipe are the same at every size.
    tiny = get_recipe("tiny_imagenet")
    assert tiny.augmentation_for(10) == tiny.augmentation_for(10 ** 6) == tiny.augmentation


def test_a_crop_area_given_replaces_only_the_recipes_crop_range():
    small = get_recipe("folder").augmentation_for(5_000, crop_area=(0.19, 0.75))
    assert (small.min_area, small.max_area) == (0.19, 0.75)
    assert small == dataclasses.replace(get_recipe("folder").augmentation_for(5_000),
                                        min_area=0.19, max_area=0.75)  # hue 0 kept


def test_crop_area_is_refused_for_a_recipe_that_shifts_whole_images():
    with pytest.raises(ValueError, match=r"--crop_area .* shifts whole images .*'pad', up to 4"):
        get_recipe("cifar10").augmentation_for(50_000, crop_area=(0.5, 1.0))


def test_pad_given_shifts_the_cifar10_recipes_images_by_at_most_that_many_pixels():
    recipe = get_recipe("cifar10")
    two = recipe.augmentation_for(50_000, pad=2)
    assert two == dataclasses.replace(recipe.augmentation, pad=2)
    # 300 draws of one image: every shift in -2..2 each way (25, each missing with probability
    # (24/25)^300 < 1e-5), none beyond.
    size, draws = 32, 300
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3)).astype(np.uint8)
    params = preprocessing.sample_augmentation(draws, tf.constant([1, 2], tf.int64), two, size)
    out = preprocessing.apply_augmentation(tf.constant(np.repeat(image[None], draws, 0)),
                                           params, size, two).numpy()
    shifts = [find_shift(image.astype(np.float32), (x + 1.0) * 127.5, 4) for x in out]
    assert {(dy, dx) for _, dy, dx in shifts} == {(dy, dx) for dy in range(-2, 3)
                                                  for dx in range(-2, 3)}


def test_pad_is_refused_for_a_recipe_that_crops_areas_and_out_of_range():
    with pytest.raises(ValueError, match=r"^--pad sets the largest shift .*crop='inception'"):
        get_recipe("folder").augmentation_for(5_000, pad=2)
    with pytest.raises(ValueError, match=r"^--pad=-1: must be an integer >= 0 and <= 64"):
        check_config(with_defaults(TrainConfig(dataset="cifar10", pad=-1)), {"pad": -1})


def imagenet_decay_epochs(**given):
    return with_defaults(TrainConfig(dataset="imagenet", **given)).lr_decay_epochs


def test_the_recipes_decay_epochs_fall_at_the_same_fractions_of_the_epochs_given():
    # MindSpore's 70, 140, 210, 280 of its 300 epochs.
    assert imagenet_decay_epochs() == (70, 140, 210, 280)
    assert imagenet_decay_epochs(epochs=300) == (70, 140, 210, 280)
    assert imagenet_decay_epochs(epochs=30) == (7, 14, 21, 28)
    assert imagenet_decay_epochs(epochs=600) == (140, 280, 420, 560)
    # 7/30, 14/30, 21/30 and 28/30 of one epoch.
    assert imagenet_decay_epochs(epochs=1) == pytest.approx((0.233333333, 0.466666667, 0.7,
                                                             0.933333333))
    # Decay epochs the user gave are the user's.
    assert imagenet_decay_epochs(epochs=30, lr_decay_epochs=(10.0, 20.0)) == (10.0, 20.0)
    # A recipe without decay epochs has none at any length.
    assert with_defaults(TrainConfig(dataset="cifar10", epochs=3)).lr_decay_epochs == ()


def test_a_one_epoch_imagenet_run_is_accepted_and_decays_at_the_recipes_fractions(tmp_path):
    # python train.py --dataset=imagenet --data_dir=... --epochs=1, a smoke test.
    config = resolve_config(dict(dataset="imagenet", data_dir="/data/imagenet", epochs=1,
                                 run_dir=str(tmp_path / "run")))
    schedule = optimization.schedule_from_config(config, 30, ())
    # A 30-step epoch: 7/30 of it is step 7, and 28/30 step 28 (27.999999999999996 in floating
    # point, not step 27).
    assert schedule.boundaries == [7, 14, 21, 28]
    assert schedule.describe() == ("lr 0.1 (1-epoch warm-up; x0.3 at epochs 0.233, 0.467, 0.7, "
                                   "0.933)")


def test_decay_epochs_that_fall_on_one_step_are_said_to_multiply_there(tmp_path):
    # The same one-epoch run on a tiny collection: 2 steps an epoch put 7/30 and 14/30 of it on
    # step 0, and 21/30 and 28/30 on step 1 (epoch 0.5).
    config = resolve_config(dict(dataset="imagenet", data_dir="/data/imagenet", epochs=1,
                                 warmup_epochs=0, run_dir=str(tmp_path / "run")))
    schedule = optimization.schedule_from_config(config, 2, ())
    assert schedule.boundaries == [0, 0, 1, 1]
    assert schedule.describe() == ("lr 0.1 (x0.09 at epoch 0, x0.09 at epoch 0.5 (4 decays on "
                                   "2 steps: those on one step multiply))")
    assert [float(schedule(s)) for s in (0, 1)] == pytest.approx([0.1 * 0.3 ** 2,
                                                                  0.1 * 0.3 ** 4])


def test_a_resumed_run_keeps_its_saved_decay_epochs(tmp_path):
    data = dict(dataset="imagenet", data_dir="/data/imagenet")
    short, full = str(tmp_path / "short"), str(tmp_path / "full")
    save_run_config(resolve_config(dict(data, run_dir=short, epochs=30)))
    save_run_config(resolve_config(dict(data, run_dir=full)))
    write_checkpoint(short, 12)
    write_checkpoint(full, 12)
    # Extended, each run keeps the decay epochs it has trained with: none is scaled again.
    assert resolve_config({"run_dir": short, "epochs": 60}).lr_decay_epochs == (7, 14, 21, 28)
    assert resolve_config({"run_dir": full, "epochs": 600}).lr_decay_epochs == (70, 140, 210,
                                                                               280)
    # Nor cut short below them.
    with pytest.raises(ValueError, match=r"^--lr_decay_epochs=7,14,21,28 \(as saved in "
                                         r".*config.json\): every decay epoch must fall within "
                                         r"the run, after 0 and before --epochs=20$"):
        resolve_config({"run_dir": short, "epochs": 20})
