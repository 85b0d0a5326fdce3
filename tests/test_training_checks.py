"""Tests for settings/checks.py: every setting that cannot train is refused, naming its flag."""
import dataclasses

import pytest

from settings.checks import check_config
from settings.config import TrainConfig, with_defaults


def check(given):
    return check_config(with_defaults(TrainConfig.from_dict(given)), given)


@pytest.mark.parametrize("given, message", [
    (dict(batch_size=0), "--batch_size=0: must be an integer >= 1"),
    (dict(num_gpus=0), "--num_gpus=0: must be an integer >= 1"),
    (dict(lr=-1.0), "--lr=-1: must be a number > 0"),
    (dict(lr=0.0), "--lr=0: must be a number > 0"),
    (dict(lr=float("nan")), "--lr=nan: must be a number > 0"),
    (dict(lr=float("inf")), "--lr=inf: must be a number > 0"),
    (dict(epochs=0), "--epochs=0: must be an integer >= 1"),
    # googlenet_bn halves its input five times: 32 pixels is its smallest (the paper's Table 1).
    (dict(dataset="folder", image_size=10),
     "--image_size=10: --model=googlenet_bn needs images of at least 32 pixels"),
    (dict(model="minigooglenet", image_size=4), "--image_size=4: --model=minigooglenet needs .* 8"),
    (dict(test_fraction=0.0), "--test_fraction=0: must be a number > 0 and < 1"),
    (dict(test_fraction=1.0), "--test_fraction=1: must be a number > 0 and < 1"),
    (dict(width_multiplier=0.0), "--width_multiplier=0: must be a number > 0 and <= 4"),
    (dict(width_multiplier=50.0), "--width_multiplier=50: must be a number > 0 and <= 4"),
    (dict(seed=-1), "--seed=-1: must be an integer >= 0"),
    (dict(lr_schedule="exponential_step", lr_decay_epochs=(5.0, 30.0), epochs=20),
     "--lr_decay_epochs=5,30: every decay epoch must fall within the run, after 0 and before "
     "--epochs=20"),
    (dict(lr_schedule="exponential_step", lr_decay_epochs=(10.0, 5.0)),
     "--lr_decay_epochs=10,5: decay epochs must be in increasing order"),
    (dict(lr_schedule="cosine", lr_decay_epochs=(5.0,)),
     "--lr_decay_epochs=5: decay epochs are used only by --lr_schedule=exponential_step; this "
     "run's schedule is cosine"),
    # Decay epochs the user gave are taken as given: outside the run, refused, not scaled.
    (dict(dataset="imagenet", epochs=1, lr_decay_epochs=(70.0, 140.0)),
     "^--lr_decay_epochs=70,140: every decay epoch must fall within the run, after 0 and before "
     "--epochs=1$"),
    (dict(dataset="imagenet", epochs=30, lr_decay_epochs=(7.0, 30.0)),
     "^--lr_decay_epochs=7,30: every decay epoch must fall within the run"),
    (dict(lr_gamma=0.0), "--lr_gamma=0: must be a number > 0 and <= 1"),
    (dict(lr_gamma=2.0), "--lr_gamma=2: must be a number > 0 and <= 1"),
    (dict(warmup_epochs=-1.0), "--warmup_epochs=-1: must be a number >= 0"),
    (dict(warmup_epochs=20.0, epochs=10),
     "--warmup_epochs=20: the warm-up must end within the run's --epochs=10"),
    (dict(momentum=1.0), "--momentum=1: must be a number >= 0 and < 1"),
    (dict(weight_decay=-1e-4), "--weight_decay=-0.0001: must be a number >= 0"),
    (dict(label_smoothing=1.0), "--label_smoothing=1: must be a number >= 0 and < 1"),
    (dict(aux_weight=-0.3), "--aux_weight=-0.3: must be a number >= 0"),
    (dict(dropout_rate=1.0), "--dropout_rate=1: must be a number >= 0 and < 1"),
    (dict(crop_area=(0.0, 1.0)), "--crop_area=0,1: must be two fractions min,max with 0 < min <= "
     "max <= 1"),
    (dict(crop_area=(0.8, 0.5)), "--crop_area=0.8,0.5: must be two fractions"),
    (dict(crop_area=(0.2, 1.5)), "--crop_area=0.2,1.5: must be two fractions"),
    (dict(crop_area=(0.5,)), "--crop_area=0.5: must be two fractions"),
    (dict(log_every=0), "--log_every=0: must be an integer >= 1"),
    (dict(checkpoint_every=-5), "--checkpoint_every=-5: must be an integer >= 0"),
    (dict(keep_checkpoints=-1), "--keep_checkpoints=-1: must be an integer >= 0"),
    (dict(eval_every_epochs=0), "--eval_every_epochs=0: must be an integer >= 1"),
    (dict(profile_steps=(3.0, 2.0)), "^--profile_steps=3,2: expected A,B: the first and last "
     "global steps to profile, whole numbers with 1 <= A <= B$"),
    (dict(profile_steps=(0.0, 2.0)), "^--profile_steps=0,2: expected A,B"),
    (dict(profile_steps=(2.0,)), "^--profile_steps=2: expected A,B"),
    (dict(profile_steps=(1.0, 2.0, 3.0)), "^--profile_steps=1,2,3: expected A,B"),
    (dict(profile_steps=(2.5, 3.0)), "^--profile_steps=2.5,3: expected A,B"),
    (dict(profile_steps=()), "^--profile_steps=: expected A,B"),
    (dict(cache="ram"), "--cache=ram: must be one of auto, memory, disk, disk_jpeg, none"),
    (dict(augment_on="gpu"), "--augment_on=gpu: must be one of auto, host, device"),
    (dict(mixed_precision_dtype="half"),
     "--mixed_precision_dtype=half: must be one of auto, bfloat16, float16"),
    (dict(class_weight="inverse"), "--class_weight=inverse: must be one of none, balanced"),
    (dict(sampling="over"), "--sampling=over: must be one of uniform, balanced"),
    (dict(lr_schedule="step"),
     "--lr_schedule=step: must be one of exponential_step, polynomial, cosine, constant"),
    (dict(strategy="ps"), "--strategy=ps: must be one of auto, mirrored, multi_worker"),
    # The digits' minigooglenet has ten modules; the folders' googlenet_bn has Table 1's nine.
    (dict(trainable="from:4e"), "^--trainable=from:4e: must be all, head or from:<module>, a "
     "module of --model=minigooglenet: 1a, 1b, down1, 2a, 2b, 2c, 2d, down2, 3a, 3b$"),
    (dict(dataset="folder", trainable="heads"),
     "^--trainable=heads: must be .* --model=googlenet_bn: 3a, 3b, 4a, 4b, 4c, 4d, 4e, 5a, 5b$"),
    (dict(dataset="folder", trainable="from:mixed5"), "--trainable=from:mixed5: must be"),
    (dict(init_from="keras"), "^--init_from=keras: Keras' InceptionV3 weights fit "
     "--model=inception_v3 at --width_multiplier=1 only; this run is --model=minigooglenet at "
     "--width_multiplier=0.25$"),
    (dict(model="inception_v3", width_multiplier=0.5, init_from="imagenet.weights.h5"),
     "^--init_from=imagenet.weights.h5: Keras' InceptionV3 weights fit --model=inception_v3 at "
     "--width_multiplier=1 only; this run is --model=inception_v3 at --width_multiplier=0.5$"),
    (dict(optimizer="adam"), "^--optimizer=adam: must be one of sgd, adamw, lamb$"),
    (dict(optimizer="adamw"), r"^--lr=0.05 \(the digits default\): the recipes' rate is SGD's; "
     r"give --lr with --optimizer=adamw \(e.g. 0.001\)$"),
    (dict(clip_norm=-1.0), "^--clip_norm=-1: must be a number >= 0$"),
    (dict(grad_accum_steps=0), "^--grad_accum_steps=0: must be an integer >= 1$"),
    (dict(batch_size=32, grad_accum_steps=3), r"^--grad_accum_steps=3: --batch_size=32 must "
     r"divide into 3 micro-batches \(per tower too\)$"),
])
def test_settings_that_cannot_train_are_refused(given, message):
    with pytest.raises(ValueError, match=message):
        check(given)


@pytest.mark.parametrize("given", [
    {},
    dict(dataset="imagenet"),
    dict(dataset="imagenet", epochs=50, lr_decay_epochs=(20.0, 40.0)),
    # The recipe's 70,140,210,280 of 300 epochs, scaled to the run (settings/recipes.py).
    dict(dataset="imagenet", epochs=1),
    dict(dataset="imagenet", epochs=50),
    dict(batch_size=33, num_gpus=3, lr=1e-5, epochs=1, warmup_epochs=1.0, momentum=0.0,
         label_smoothing=0.0, aux_weight=0.0, dropout_rate=0.0, keep_checkpoints=0),
    dict(dataset="folder", image_size=32, width_multiplier=4.0, test_fraction=0.5),
    dict(dataset="folder", epochs=1),  # the recipe's 2 warm-up epochs are cut short, not refused
    dict(dataset="tiny_imagenet", crop_area=(0.19, 0.75)),
    dict(crop_area=(1.0, 1.0)),  # no crop: the whole image, resized
    dict(class_weight="balanced", sampling="balanced", trainable="head"),
    dict(dataset="folder", trainable="from:4e", init_from="runs/flowers"),
    dict(model="inception_v3", width_multiplier=1.0, init_from="keras", trainable="from:mixed5"),
    dict(profile_steps=(1.0, 1.0)),
    dict(profile_steps=(100.0, 110.0)),
    dict(optimizer="adamw", lr=0.001, weight_decay=0.05),
    dict(optimizer="lamb", lr=0.01, clip_norm=1.0, batch_size=64, grad_accum_steps=4),
])
def test_settings_that_can_train_pass(given):
    assert check(given).batch_size >= 1


@pytest.mark.parametrize("dataset", ["digits", "folder", "mini_imagenet", "tiny_imagenet",
                                     "cifar10", "imagenet"])
def test_every_dataset_recipe_passes(dataset):
    check(dict(dataset=dataset))


def test_a_setting_the_user_did_not_give_is_named_with_where_it_came_from():
    # The recipe's decay epochs with a run shorter than them (as a config built by hand could
    # hold): the refusal says they are the recipe's, so the user knows which flag to pass.
    config = dataclasses.replace(with_defaults(TrainConfig(dataset="imagenet")), epochs=50)
    with pytest.raises(ValueError, match="^--lr_decay_epochs=70,140,210,280 \\(the imagenet "
                                         "default\\): every decay epoch must fall within the run"):
        check_config(config, {"dataset", "epochs"})
