"""tfbonemet's fused BatchNormalization computes what keras.layers.BatchNormalization computes, in every mode."""
import keras
import numpy as np
import pytest

from tfbonemet.models import build_model
from tfbonemet.models.batch_norm import BatchNormalization as Fused
from tfbonemet.models.batch_norm import fuse_batch_norm


def small_net(**bn_options):
    """Conv + BN twice through a nested block used for two inputs (as two_view_net's shared backbone)."""
    image = keras.Input((12, 10, 1))
    x = keras.layers.Conv2D(6, 3, padding="same")(image)
    x = keras.layers.BatchNormalization(**bn_options)(x)
    block = keras.Model(image, keras.layers.ReLU()(x), name="block")
    a, b = keras.Input((12, 10, 1), name="a"), keras.Input((12, 10, 1), name="b")
    merged = keras.layers.Concatenate()([block(a), block(b)])
    merged = keras.layers.BatchNormalization(momentum=0.5)(merged)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(merged))
    return keras.Model({"a": a, "b": b}, out)


def inputs(seed=0, n=5):
    rng = np.random.default_rng(seed)
    return {k: (rng.random((n, 12, 10, 1)) * 4 - 1).astype("float32") for k in "ab"}


def bn_layers(model):
    found = []
    for layer in model.layers:
        found += bn_layers(layer) if isinstance(layer, keras.Model) else [layer]
    return [layer for layer in found if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("options", [{}, {"center": False}, {"scale": False}, {"momentum": 0.3, "epsilon": 1e-5}])
def test_fused_net_matches_keras_in_training_and_inference(options):
    plain = small_net(**options)
    fused = fuse_batch_norm(plain)
    assert [type(layer) for layer in bn_layers(fused)] == [Fused] * 2
    assert fused.count_params() == plain.count_params()
    x = inputs()
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), atol=1e-5)
    for step in range(3):  # moving statistics follow the same average, call after call
        np.testing.assert_allclose(fused(inputs(step), training=True), plain(inputs(step), training=True), atol=1e-4)
    for a, b in zip(plain.non_trainable_weights, fused.non_trainable_weights):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain.non_trainable_weights[0], 0.0)  # the statistics did move


def test_gradients_match():
    import tensorflow as tf

    plain = small_net()
    fused = fuse_batch_norm(plain)
    grads = []
    for model in (plain, fused):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(inputs(), training=True) ** 2)
        grads.append(tape.gradient(loss, model.trainable_weights))
    for a, b in zip(*grads):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)


def test_frozen_layer_uses_moving_statistics_while_training():
    plain = small_net()
    for layer in bn_layers(plain):
        layer.trainable = False
    fused = fuse_batch_norm(plain)
    before = [w.numpy() for w in fused.non_trainable_weights]
    np.testing.assert_allclose(fused(inputs(), training=True), fused(inputs(), training=False), atol=1e-6)
    for a, b in zip(before, fused.non_trainable_weights):
        np.testing.assert_array_equal(a, b)


def test_falls_back_where_the_kernel_does_not_apply():
    vectors = keras.Input((7,))
    plain = keras.Model(vectors, keras.layers.BatchNormalization()(vectors))  # 2-D: Keras' own ops
    channels_first = keras.Input((4, 6, 6))
    plain_cf = keras.Model(channels_first, keras.layers.BatchNormalization(axis=1)(channels_first))
    rng = np.random.default_rng(1)
    for model, shape in ((plain, (8, 7)), (plain_cf, (3, 4, 6, 6))):
        fused = fuse_batch_norm(model)
        x = rng.random(shape).astype("float32")
        np.testing.assert_allclose(fused(x, training=True), model(x, training=True), atol=1e-5)


def test_mixed_bfloat16_outputs_compute_dtype_close_to_keras():
    from tfbonemet.execution import dtype_policy

    with dtype_policy("mixed_bfloat16"):
        plain = small_net()
    fused = fuse_batch_norm(plain)
    layer = bn_layers(fused)[0]
    assert layer.compute_dtype == "bfloat16" and layer.moving_mean.dtype == "float32"
    x = inputs()
    np.testing.assert_allclose(np.asarray(fused(x, training=True), "float32"),
                               np.asarray(plain(x, training=True), "float32"), atol=0.1)


def test_registered_models_are_fused_and_round_trip_through_keras_file(tmp_path):
    model = build_model("two_view_net", image_size=(64, 32))
    assert bn_layers(model) and all(type(layer) is Fused for layer in bn_layers(model))
    x = {view: np.random.default_rng(2).random((2, 64, 32, 1), "float32") for view in ("anterior", "posterior")}
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert all(type(layer) is Fused for layer in bn_layers(loaded))
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-6)


def test_model_without_batch_norm_is_returned_unchanged():
    model = build_model("vgg16", image_size=(32, 32))
    assert fuse_batch_norm(model) is model


def test_weight_files_load_across_plain_and_fused_layers(tmp_path):
    """`.weights.h5` keys variables by class name: pre-trained plain-Keras backbones load into fused models."""
    plain, fused = small_net(), fuse_batch_norm(small_net())
    plain(inputs(), training=True)  # moving statistics away from their initial values
    plain.save_weights(tmp_path / "plain.weights.h5")
    fused.load_weights(tmp_path / "plain.weights.h5")
    np.testing.assert_allclose(fused(inputs(3), training=False), plain(inputs(3), training=False), atol=1e-5)
    fused.save_weights(tmp_path / "fused.weights.h5")
    again = small_net()
    again.load_weights(tmp_path / "fused.weights.h5")
    np.testing.assert_allclose(again(inputs(3), training=False), plain(inputs(3), training=False), atol=1e-5)
