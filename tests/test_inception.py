"""Tests for inception/: the paper's table, parameter counts, named outputs, every model trains."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import inception
from inception.layers import LocalResponseNormalization

# The paper's Table 1 ("out" and "output size" columns), typed in independently of the code.
PAPER_OUTPUTS_224 = {
    "3a": (28, 256), "3b": (28, 480),
    "4a": (14, 512), "4b": (14, 512), "4c": (14, 512), "4d": (14, 528), "4e": (14, 832),
    "5a": (7, 832), "5b": (7, 1024),
}


@pytest.fixture(scope="module")
def googlenet_1000():
    return inception.build_model("googlenet", num_classes=1000)


def images(batch, size, seed=0):
    return tf.random.stateless_uniform((batch, size, size, 3), (seed, 1), -1.0, 1.0)


def test_googlenet_modules_match_the_paper_table(googlenet_1000):
    endpoints = googlenet_1000.endpoints(images(1, 224))
    for module, (size, channels) in PAPER_OUTPUTS_224.items():
        assert tuple(endpoints[module].shape) == (1, size, size, channels), module
    assert tuple(endpoints["stem"].shape) == (1, 28, 28, 192)


def test_googlenet_parameter_counts_match_reference(googlenet_1000):
    assert googlenet_1000.trunk.count_params() == 6_998_552
    assert googlenet_1000.aux_heads["aux1"].count_params() == 3_188_840
    assert googlenet_1000.aux_heads["aux2"].count_params() == 3_190_888


def test_googlenet_5x5_branch_is_really_5x5(googlenet_1000):
    module = googlenet_1000.trunk.get_layer("inception_3a")
    assert tuple(module.branch5x5.conv.kernel.shape) == (5, 5, 16, 32)
    assert tuple(module.branch_pool_proj.conv.kernel.shape) == (1, 1, 192, 32)
    assert module.branch_pool.pool_size == (3, 3) and module.branch_pool.strides == (1, 1)


def test_googlenet_head_and_aux_heads_follow_the_paper(googlenet_1000):
    assert googlenet_1000.trunk.get_layer("dropout").rate == pytest.approx(0.4)
    aux1 = googlenet_1000.aux_heads["aux1"]
    assert aux1.get_layer("dropout").rate == pytest.approx(0.7)
    # avgpool 5x5/3 turns 4a's 14x14 into 4x4, so FC 1024 sees 4 * 4 * 128 inputs.
    assert tuple(aux1.get_layer("fc").kernel.shape) == (4 * 4 * 128, 1024)
    assert googlenet_1000.aux_sources == {"aux1": "4a", "aux2": "4d"}


def test_lrn_matches_caffe_formula():
    x = np.random.default_rng(0).normal(size=(1, 2, 2, 7)).astype(np.float32)
    expected = np.empty_like(x)
    for c in range(7):
        window = x[..., max(0, c - 2):c + 3]
        expected[..., c] = x[..., c] / (1 + 1e-4 / 5 * (window ** 2).sum(-1)) ** 0.75
    got = LocalResponseNormalization()(x)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_variants_differ_where_they_should():
    plain = inception.build_model("googlenet", 10, 64, width_multiplier=0.25)
    bn = inception.build_model("googlenet_bn", 10, 64, width_multiplier=0.25)
    small = inception.build_model("googlenet_64", 10, 64, width_multiplier=0.25)
    def layer_types(model):
        return {type(layer).__name__ for layer in model.trunk._flatten_layers()}

    def batch_norms(model):
        return [layer for layer in model.trunk._flatten_layers()
                if isinstance(layer, keras.layers.BatchNormalization)]
    assert "LocalResponseNormalization" in layer_types(plain)
    assert not batch_norms(plain)
    assert "LocalResponseNormalization" not in layer_types(bn)
    assert batch_norms(bn)
    assert not bn.trunk.get_layer("inception_4a").branch5x5.conv.use_bias
    first = small.trunk.get_layer("conv1_5x5_s1").conv
    assert first.kernel_size == (5, 5) and first.strides == (1, 1)
    # 64 px: the 5x5/1 stem keeps 5b at 4x4 where the 7x7/2 stem leaves 2x2.
    assert small.endpoints(images(1, 64))["5b"].shape[1] == 4
    assert plain.endpoints(images(1, 64))["5b"].shape[1] == 2


def test_minigooglenet_structure():
    model = inception.build_model("minigooglenet", 10)
    endpoints = model.endpoints(images(1, 32))
    # Channels are K1 + K3 (inception) or K + input channels (downsample), per docs/reference.md.
    expected = {"stem": (32, 96), "1a": (32, 64), "1b": (32, 80), "down1": (15, 160),
                "2a": (15, 160), "2b": (15, 160), "2c": (15, 160), "2d": (15, 144),
                "down2": (7, 240), "3a": (7, 336), "3b": (7, 336)}
    for name, (size, channels) in expected.items():
        assert tuple(endpoints[name].shape) == (1, size, size, channels), name
    assert model.trunk.get_layer("dropout").rate == pytest.approx(0.5)


def test_inception_v3_widths_match_keras_applications():
    ours = inception.build_model("inception_v3", 1000)
    reference = keras.applications.InceptionV3(weights=None, classes=1000)
    # Keras applications use batch norm without a scale (gamma); ours learns one per channel.
    gammas = sum(int(np.prod(w.shape)) for w in ours.trunk.weights if w.path.endswith("gamma"))
    assert ours.trunk.count_params() - gammas == reference.count_params()
    assert tuple(ours.endpoints(images(1, 299))["mixed10"].shape) == (1, 8, 8, 2048)


@pytest.mark.parametrize("name", inception.model_names())
def test_aux_outputs_only_in_training(name):
    size = inception.min_image_size(name)
    model = inception.build_model(name, 5, size, width_multiplier=0.25)
    train_out = model(images(2, size), training=True)
    assert set(train_out) == {"logits", *inception.get_model_spec(name).aux_names}
    assert set(model(images(2, size), training=False)) == {"logits"}
    assert set(model(images(2, size))) == {"logits"}
    for value in train_out.values():
        assert value.shape == (2, 5) and value.dtype == tf.float32
    no_aux = inception.get_model_spec(name).aux_names and inception.build_model(
        name, 5, size, width_multiplier=0.25, aux_logits=False)
    if no_aux:
        assert set(no_aux(images(2, size), training=True)) == {"logits"}


@pytest.mark.parametrize("name", inception.model_names())
def test_the_registry_names_the_trunk_modules_in_order(name):
    # --trainable=from:<module> takes these names (training/finetune.py).
    model = inception.build_model(name, 3, inception.min_image_size(name), width_multiplier=0.125)
    modules = [key for key in model.trunk.output if key not in ("stem", "pool", "logits")]
    assert modules == list(inception.module_names(name))
    assert len(modules) == {"minigooglenet": 10, "inception_v3": 11}.get(name, 9)


def _one_sgd_step(model, x, y):
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    before = [v.numpy().copy() for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        outputs = model(x, training=True)
        loss = sum(keras.losses.sparse_categorical_crossentropy(y, o, from_logits=True)
                   for o in outputs.values())
        loss = tf.reduce_mean(loss)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads), "a variable got no gradient"
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    changed = sum(not np.array_equal(b, v.numpy())
                  for b, v in zip(before, model.trainable_variables))
    return float(loss), changed


@pytest.mark.parametrize("name", inception.model_names())
def test_each_model_takes_an_optimizer_step(name):
    size = inception.min_image_size(name) * 2
    model = inception.build_model(name, 4, size, width_multiplier=0.25)
    loss, changed = _one_sgd_step(model, images(3, size), tf.constant([0, 1, 3]))
    assert np.isfinite(loss)
    assert changed == len(model.trainable_variables)


@pytest.mark.parametrize("size", [64, 96, 300])
def test_googlenet_trains_at_other_input_sizes(size):
    model = inception.build_model("googlenet", 3, size, width_multiplier=0.125)
    loss, _ = _one_sgd_step(model, images(2, size), tf.constant([0, 2]))
    assert np.isfinite(loss)


def test_unknown_batch_size():
    model = inception.build_model("googlenet_bn", 3, 32, width_multiplier=0.125)
    assert model.trunk.inputs[0].shape[0] is None
    for batch in (1, 5):
        assert model(images(batch, 32))["logits"].shape == (batch, 3)
    serve = tf.function(lambda x: model(x)["logits"],
                        input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32)])
    assert serve(images(4, 32)).shape == (4, 3)


def test_outputs_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = inception.build_model("googlenet", 3, 32, width_multiplier=0.125)
        outputs = model(images(2, 32), training=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.trunk.get_layer("inception_3a").compute_dtype == "bfloat16"
    assert all(o.dtype == tf.float32 for o in outputs.values())


def test_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="googlenet_bn.*inception_v3.*minigooglenet"):
        inception.build_model("alexnet", 10)
    with pytest.raises(ValueError, match="image_size >= 32"):
        inception.build_model("googlenet", 10, image_size=16)
    with pytest.raises(ValueError, match="image_size >= 75"):
        inception.build_model("inception_v3", 10, image_size=64)
    with pytest.raises(ValueError, match="num_classes"):
        inception.build_model("googlenet", 1)
    with pytest.raises(ValueError, match="no auxiliary"):
        inception.build_model("minigooglenet", 10, aux_logits=True)
    assert inception.default_image_size("googlenet_64") == 64


def test_checkpoints_hold_every_weight_including_the_aux_heads(tmp_path):
    model = inception.build_model("googlenet", 3, 32, width_multiplier=0.125)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    other = inception.build_model("googlenet", 3, 32, width_multiplier=0.125)
    tf.train.Checkpoint(model=other).restore(path).assert_consumed()
    assert len(other.weights) == len(model.weights) == 128
    for a, b in zip(model.weights, other.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
