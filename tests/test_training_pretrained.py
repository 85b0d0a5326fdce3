"""Tests for training/pretrained.py: our inception_v3 started from Keras InceptionV3 weights
computes what the Keras model computes, and says what it loaded and what it left new.

There is no internet here, so the Keras weights are a random InceptionV3's, saved to a file as
`--init_from=keras` would find them. Random weights alone would make the test vacuous: a freshly
built InceptionV3's batch norm has mean 0 and variance 1, so each ReLU layer shrinks the signal and
its logits are ~1e-3, inside any tolerance. The reference's batch-norm statistics are therefore set
to those of a real forward pass and its offsets made random, so that every layer carries signal.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

import inception
from training import finetune
from training.pretrained import init_from_keras_inception_v3

TOLERANCE = 1e-4


def images(batch, seed):
    """Random images already in [-1, 1], the input range of both models (Keras' preprocess_input
    for InceptionV3 is x / 127.5 - 1, as is our pipeline's)."""
    return tf.random.stateless_uniform((batch, 299, 299, 3), (seed, 7), -1.0, 1.0)


@pytest.fixture(scope="module")
def reference():
    """A Keras InceptionV3 with logits at its top and batch-norm statistics that keep the signal."""
    model = keras.applications.InceptionV3(weights=None, classifier_activation=None)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    rng = np.random.default_rng(0)
    for bn in bns:
        bn.beta.assign(rng.normal(0.0, 0.5, bn.beta.shape).astype(np.float32))
        # Momentum 0 for one training-mode pass: the moving statistics become that batch's,
        # measured after the offsets above, so every layer's input is normalised at inference.
        bn.momentum = 0.0
    model(images(2, seed=1), training=True)
    for bn in bns:
        bn.momentum = 0.99
    return model


@pytest.fixture(scope="module")
def weights_file(reference, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("keras") / "inception_v3.weights.h5")
    reference.save_weights(path)
    return path


def test_mapped_model_gives_the_keras_logits(reference, weights_file):
    ours = inception.build_model("inception_v3", num_classes=1000)
    # Keras' batch norm has no scale; ours must end at exactly 1, whatever it held before.
    for weight in ours.trunk.weights:
        if weight.path.endswith("/gamma"):
            weight.assign(np.full(weight.shape, 2.0, np.float32))
    report = init_from_keras_inception_v3(ours, weights_file)

    x = images(3, seed=2)
    expected = reference(x, training=False).numpy()
    got = ours(x, training=False)["logits"].numpy()
    # The logits are large and differ between images, so agreement is not a matter of scale.
    assert expected.std() > 0.1 and np.abs(expected[0] - expected[1]).max() > 0.1
    assert np.abs(got - expected).max() <= TOLERANCE

    # Keras' InceptionV3 has 94 convs, each with a kernel and a scale-less batch norm (offset,
    # mean, variance), and a 1000-class top: every one of its values goes somewhere.
    convs = [layer for layer in reference.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 94
    assert len(report.loaded) == 94 * 4 + 2 and len(report.scales_set_to_one) == 94
    assert report.loaded_values == reference.count_params()
    assert report.unmatched == ()
    assert {"logits/kernel", "logits/bias"} <= set(report.loaded)
    # Keras has no auxiliary head; ours stays as built.
    assert report.initialised and all(p.startswith("aux/") for p in report.initialised)
    assert "aux/logits/kernel" in report.initialised


def test_other_class_count_keeps_its_new_classifier(reference):
    ours = inception.build_model("inception_v3", num_classes=10)
    head = ours.trunk.get_layer("logits")
    new_kernel, new_bias = head.kernel.numpy().copy(), head.bias.numpy().copy()
    report = init_from_keras_inception_v3(ours, reference)

    # The whole trunk is Keras': the pooled features the classifier reads are the same.
    x = images(2, seed=3)
    keras_features = keras.Model(reference.input, reference.get_layer("avg_pool").output)
    expected = keras_features(x, training=False).numpy()
    got = ours.endpoints(x, training=False)["pool"].numpy()
    assert expected.std() > 0.1
    assert np.abs(got - expected).max() <= TOLERANCE

    np.testing.assert_array_equal(head.kernel.numpy(), new_kernel)
    np.testing.assert_array_equal(head.bias.numpy(), new_bias)
    assert {"logits/kernel", "logits/bias", "aux/logits/kernel"} <= set(report.initialised)
    assert not {"logits/kernel", "logits/bias"} & set(report.loaded)
    assert set(report.unmatched) == {"predictions/kernel", "predictions/bias"}
    assert report.loaded_values == reference.count_params() - (2048 * 1000 + 1000)
    summary = report.summary()
    assert "new: aux/conv_1x1/bn" in summary and "logits" in summary
    assert summary.endswith("not used from the source: predictions")


def test_a_model_of_another_shape_is_refused_untouched(reference):
    narrow = inception.build_model("inception_v3", num_classes=1000, image_size=75,
                                   width_multiplier=0.25)
    before = [w.numpy().copy() for w in narrow.weights]
    # The first conv: 32 filters in Keras, 8 at width 0.25.
    with pytest.raises(ValueError, match=r"conv unit 1 .*kernel \(3, 3, 3, 8\) here, "
                                         r"\(3, 3, 3, 32\) in Keras"):
        init_from_keras_inception_v3(narrow, reference)
    for old, new in zip(before, narrow.weights):
        np.testing.assert_array_equal(old, new.numpy())


def test_init_from_a_keras_weights_file_maps_that_file(reference, weights_file):
    # --init_from=<file>.h5 with --model=inception_v3 (training/finetune.py): that file, mapped
    # as above, at the run's own image size and class count.
    ours = inception.build_model("inception_v3", num_classes=10, image_size=75)
    source = finetune.find_init_source(weights_file)
    report = finetune.initialise(ours, source, class_names=[str(i) for i in range(10)])
    assert report.source == f"Keras InceptionV3 ({weights_file!r} weights)"
    assert len(report.loaded) == 94 * 4 and len(report.scales_set_to_one) == 94
    assert report.loaded_values == reference.count_params() - (2048 * 1000 + 1000)
