"""Custom layers: behaviour, serialisation, and dtype policies."""
import keras
import numpy as np
import pytest

from tfbonemet.models.layers import AGGREGATIONS, ChannelAttention, HybridAttention, SpatialAttention, ViewAggregation

RNG = np.random.default_rng(0)
MAPS = RNG.random((2, 8, 6, 16)).astype("float32")


def test_channel_attention_scales_each_channel_uniformly():
    """One weight per (image, channel) in (0, 1): out/in is constant over space."""
    layer = ChannelAttention(reduction=4)
    ratio = np.asarray(layer(MAPS)) / MAPS
    np.testing.assert_allclose(ratio, ratio[:, :1, :1, :] * np.ones_like(ratio), rtol=1e-5)
    assert np.all((ratio > 0) & (ratio < 1))
    assert layer.hidden.units == 4  # 16 channels / reduction 4


def test_spatial_attention_scales_each_pixel_uniformly():
    """One weight per (image, pixel): out/in is constant over channels, and varies over space."""
    ratio = np.asarray(SpatialAttention(kernel_size=3)(MAPS)) / MAPS
    np.testing.assert_allclose(ratio, ratio[..., :1] * np.ones_like(ratio), rtol=1e-5)
    assert np.all((ratio > 0) & (ratio < 1)) and ratio[..., 0].std() > 0


def test_hybrid_attention_is_channel_then_spatial():
    layer = HybridAttention(reduction=4, kernel_size=3)
    out = np.asarray(layer(MAPS))
    np.testing.assert_allclose(out, np.asarray(layer.spatial(layer.channel(MAPS))), rtol=1e-6)
    assert out.shape == MAPS.shape


@pytest.mark.parametrize("layer", [ChannelAttention(reduction=2), SpatialAttention(kernel_size=5),
                                   HybridAttention(reduction=2, kernel_size=5), ViewAggregation("attention")],
                         ids=lambda layer: type(layer).__name__)
def test_serialisation_round_trip(layer, tmp_path):
    """get_config carries every argument, and weights survive a safe-mode .keras round trip."""
    restored = type(layer).from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
    is_views = isinstance(layer, ViewAggregation)
    inputs = [keras.Input((4,)), keras.Input((4,))] if is_views else keras.Input(MAPS.shape[1:])
    model = keras.Model(inputs, layer(inputs))
    data = [RNG.random((2, 4)), RNG.random((2, 4))] if is_views else MAPS
    model.save(tmp_path / "layer.keras")
    loaded = keras.models.load_model(tmp_path / "layer.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(data)), np.asarray(model(data)), rtol=1e-6)
    assert type(loaded.layers[-1]) is type(layer)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_attention_under_mixed_precision(policy):
    """Computes in the low-precision dtype, keeps float32 variables."""
    layer = HybridAttention(reduction=4, dtype=policy)
    out = layer(MAPS)
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
    assert {v.dtype for v in layer.weights} == {"float32"}
    assert np.isfinite(np.asarray(keras.ops.cast(out, "float32"))).all()


def test_view_aggregation_modes():
    a, b = np.array([[1.0, 4.0]]), np.array([[3.0, 0.0]])
    expected = {"concat": [[1, 4, 3, 0]], "sum": [[4, 4]], "mean": [[2, 2]], "max": [[3, 4]]}
    for mode in AGGREGATIONS:
        out = np.asarray(ViewAggregation(mode)([a, b]))
        if mode == "attention":  # a convex combination of the two views
            assert np.all(out >= np.minimum(a, b) - 1e-6) and np.all(out <= np.maximum(a, b) + 1e-6)
        else:
            np.testing.assert_allclose(out, expected[mode])


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="unknown aggregation"):
        ViewAggregation("median")
    with pytest.raises(ValueError, match="reduction"):
        ChannelAttention(reduction=0)


def test_a_plain_keras_load_names_the_module_to_import(tmp_path):
    """Keras imports a saved custom class's module by itself only for its own packages (keras, keras_hub,
    keras_cv, keras_nlp): in a fresh process `keras.models.load_model` cannot find tfbonemet's layers, and
    its error names the module; after `import tfbonemet.models.layers` the same call loads the model."""
    import subprocess
    import sys

    from tfbonemet.models import build_model

    path = tmp_path / "model.keras"
    build_model("two_view_net", image_size=(64, 32), num_classes=2, filters=(8, 16, 16)).save(path)
    script = (f"import keras\ntry:\n    keras.models.load_model({str(path)!r})\nexcept TypeError as exc:\n"
              f"    print('plain load:', 'tfbonemet.models' in str(exc))\n"
              f"import tfbonemet.models.layers\nprint('after import:', keras.models.load_model({str(path)!r}).name)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "plain load: True" in result.stdout, result.stdout + result.stderr
    assert "after import: two_view_net" in result.stdout, result.stdout + result.stderr
