"""Test-time augmentation (--tta): the views, the evaluation step that scores them, the export
that serves them, and the settings that refuse mirrors for a run trained without flips."""
import io

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from evaluation.export import export_saved_model
from input_pipeline.crops import tta_views
from input_pipeline.preprocessing import decode_image, preprocess_for_eval
from settings.checks import check_config
from settings.config import TrainConfig, settings_with_defaults
from training.heldout import scores, scores_of_views
from training.step import make_eval_step

SIZE, CLASSES = 8, 3


def left_half_model() -> keras.Model:
    """A classifier that sees only the left half of its input, so an image and its mirror get
    different logits; fixed, seeded weights."""
    inputs = keras.Input((SIZE, SIZE, 3))
    left = keras.layers.Cropping2D(((0, 0), (0, SIZE // 2)))(inputs)
    flat = keras.layers.Flatten()(left)
    logits = keras.layers.Dense(CLASSES, kernel_initializer=keras.initializers.RandomNormal(
        stddev=1.0, seed=1))(flat)
    return keras.Model(inputs, {"logits": logits})


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_views_are_the_image_its_mirror_and_both_shifted_a_pixel():
    image = np.arange(9, dtype=np.float32).reshape(1, 3, 3, 1) / 10  # rows .0 .1 .2 / .3 ...
    views = tta_views(tf.constant(image), "mirror_shift").numpy()[0, ..., 0]
    b = -1.0  # the black border, as the training shifts' zero padding is in [-1, 1]
    mirrored = [[.2, .1, .0], [.5, .4, .3], [.8, .7, .6]]
    expected = [
        [[.0, .1, .2], [.3, .4, .5], [.6, .7, .8]],  # the image
        mirrored,
        [[b, b, b], [b, .0, .1], [b, .3, .4]],  # moved down-right
        [[.4, .5, b], [.7, .8, b], [b, b, b]],  # moved up-left
        [[b, b, b], [b, .2, .1], [b, .5, .4]],  # the mirror moved down-right
        [[.4, .3, b], [.7, .6, b], [b, b, b]],  # the mirror moved up-left
    ]
    np.testing.assert_allclose(views, expected, atol=1e-6)
    assert tta_views(tf.constant(image), "mirror").shape == (1, 2, 3, 3, 1)
    assert tta_views(tf.constant(image), "none").shape == (1, 1, 3, 3, 1)
    with pytest.raises(ValueError, match="--tta must be one of"):
        tta_views(tf.constant(image), "rotate")


def test_the_tta_score_is_the_mean_of_the_image_and_its_mirror():
    model = left_half_model()
    images = np.random.default_rng(0).uniform(-1, 1, (5, SIZE, SIZE, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1], np.int32)
    strategy = tf.distribute.get_strategy()
    probs, _ = make_eval_step(model, strategy, "mirror")(tf.constant(images), tf.constant(labels))
    probs = probs[0].numpy()
    assert probs.shape == (5, 2, CLASSES)
    kernel, bias = (w.numpy() for w in model.layers[-1].weights)
    as_is = softmax(images[:, :, :SIZE // 2].reshape(5, -1) @ kernel + bias)
    mirror = softmax(images[:, :, ::-1][:, :, :SIZE // 2].reshape(5, -1) @ kernel + bias)
    assert np.abs(as_is - mirror).max() > 0.05  # the mirror is seen differently
    np.testing.assert_allclose(probs[:, 0], as_is, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(probs[:, 1], mirror, rtol=1e-4, atol=1e-6)
    result = scores_of_views(probs, labels)
    expected = scores((as_is + mirror) / 2, labels)
    assert result["tta"]["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    assert result["tta"]["top1"] == expected["top1"]
    assert result["loss"] == pytest.approx(scores(as_is, labels)["loss"], rel=1e-4)


def png_bytes(rng) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("tta", ["none", "mirror"])
def test_the_export_serves_the_same_test_time_augmentation(tmp_path, tta):
    model = left_half_model()
    rng = np.random.default_rng(3)
    encoded = [png_bytes(rng) for _ in range(3)]
    path = export_saved_model(model, ["a", "b", "c"], SIZE, str(tmp_path / "export"),
                              eval_fraction=1.0, tta=tta)
    served = tf.saved_model.load(path).signatures["serving_default"](
        image_bytes=tf.constant(encoded))["probabilities"].numpy()
    inputs = np.stack([preprocess_for_eval(decode_image(tf.constant(b)), SIZE, 1.0).numpy()
                       for b in encoded])
    kernel, bias = (w.numpy() for w in model.layers[-1].weights)
    as_is = softmax(inputs[:, :, :SIZE // 2].reshape(3, -1) @ kernel + bias)
    mirror = softmax(inputs[:, :, ::-1][:, :, :SIZE // 2].reshape(3, -1) @ kernel + bias)
    np.testing.assert_allclose(served, as_is if tta == "none" else (as_is + mirror) / 2,
                               rtol=1e-4, atol=1e-6)


def test_mirrored_views_are_refused_for_a_run_trained_without_flips():
    def config(dataset, tta):
        return TrainConfig.from_dict(settings_with_defaults(dict(dataset=dataset, tta=tta)))
    with pytest.raises(ValueError, match=r"^--tta=mirror: this run trains without flips"):
        check_config(config("digits", "mirror"), given=("tta",))
    assert check_config(config("digits", "none")).tta == "none"
    assert check_config(config("folder", "mirror_shift")).tta == "mirror_shift"
    assert check_config(config("folder", None)).tta == "none"  # no recipe sets it
