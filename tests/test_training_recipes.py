"""The per-dataset recipes: one for every dataset reader, their augmentation, their defaults."""
import dataclasses

import pytest

import input_pipeline
from training.config import TrainConfig, with_defaults
from training.recipes import FALLBACK, RECIPES, get_recipe


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
