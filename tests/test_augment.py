"""Fused batch augmentation: one warp per batch, both views share geometry, stateless and reproducible."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfbonemet.preprocessing.augment import (STANDARD, AugmentConfig, affine_transforms, augment_batch,
                                            copy_whole_pixels, make_augment)
from tfbonemet.errors import ConfigError

SEED = tf.constant([7, 3], tf.int64)


def asymmetric_batch(batch=8, height=64, width=32):
    """Each example lit in one off-centre block: left/right and up/down are told apart."""
    x = np.zeros((batch, height, width, 1), np.float32)
    x[:, 8:20, 4:10] = 1.0
    return {"anterior": tf.constant(x), "posterior": tf.constant(x * 0.5)}


def centroid(images):
    images = np.asarray(images)[..., 0]
    ys, xs = np.mgrid[:images.shape[1], :images.shape[2]]
    mass = images.sum(axis=(1, 2))
    return (images * ys).sum(axis=(1, 2)) / mass, (images * xs).sum(axis=(1, 2)) / mass


def test_disabled_augmentation_is_identity_and_make_augment_returns_none():
    batch = asymmetric_batch()
    out = augment_batch(batch, SEED, AugmentConfig())
    np.testing.assert_array_equal(out["anterior"], batch["anterior"])
    assert make_augment({}, "sqrt") is None


def test_left_right_flip_flips_both_views_together():
    batch = asymmetric_batch(batch=32)
    out = augment_batch(batch, SEED, AugmentConfig(flip_left_right=True))
    flipped = np.asarray(batch["anterior"])[:, :, ::-1]
    ant, post = np.asarray(out["anterior"]), np.asarray(out["posterior"])
    ant_flipped = [np.allclose(ant[i], flipped[i], atol=1e-5) for i in range(32)]
    ant_kept = [np.allclose(ant[i], batch["anterior"][i], atol=1e-5) for i in range(32)]
    assert all(f or k for f, k in zip(ant_flipped, ant_kept))
    assert 0 < sum(ant_flipped) < 32  # both outcomes occur
    np.testing.assert_allclose(post, ant * 0.5, atol=1e-5)  # the posterior got the same transform
    up, _ = centroid(ant)
    assert np.all(up < 32)  # whole-body anatomy: never flipped head to foot


def test_translation_and_rotation_move_the_content_within_the_configured_range():
    batch = asymmetric_batch(batch=16)
    y0, x0 = centroid(batch["anterior"])
    out = augment_batch(batch, SEED, AugmentConfig(translation=0.1))
    y1, x1 = centroid(out["anterior"])
    assert np.all(np.abs(y1 - y0) <= 0.1 * 64 + 0.5) and np.all(np.abs(x1 - x0) <= 0.1 * 32 + 0.5)
    assert np.abs(y1 - y0).max() > 1.0
    central = np.zeros((16, 64, 32, 1), np.float32)
    central[:, 26:38, 12:20] = 1.0
    rotated = np.asarray(augment_batch({"image": tf.constant(central)}, SEED, AugmentConfig(rotation=20.0))["image"])
    np.testing.assert_allclose(rotated.sum(axis=(1, 2, 3)), central.sum(axis=(1, 2, 3)), rtol=0.05)
    np.testing.assert_allclose(centroid(rotated), centroid(central), atol=0.5)  # turned about the centre
    assert not np.allclose(rotated, central)


def test_same_seed_same_batch_other_seed_other_batch():
    batch = asymmetric_batch()
    a = augment_batch(batch, SEED, STANDARD)
    b = augment_batch(batch, SEED, STANDARD)
    c = augment_batch(batch, tf.constant([7, 4], tf.int64), STANDARD)
    np.testing.assert_array_equal(a["anterior"], b["anterior"])
    assert not np.allclose(a["anterior"], c["anterior"])


def test_counting_noise_has_poisson_variance_in_count_units():
    level, counts = 0.25, 400.0
    batch = {"image": tf.fill([4, 64, 64, 1], np.sqrt(level).astype(np.float32))}  # sqrt-normalised
    out = augment_batch(batch, SEED, AugmentConfig(noise_counts=counts), normalisation="sqrt")
    linear = np.asarray(out["image"]) ** 2
    assert linear.mean() == pytest.approx(level, rel=0.02)
    assert linear.std() == pytest.approx(np.sqrt(level / counts), rel=0.05)


def test_intensity_gain_stays_in_range_and_is_shared_by_the_views():
    batch = {"image": tf.fill([64, 8, 8, 1], 0.5), "other": tf.fill([64, 8, 8, 1], 0.25)}
    out = augment_batch(batch, SEED, AugmentConfig(intensity=0.2), normalisation="linear")
    gains = np.asarray(out["image"])[:, 0, 0, 0] / 0.5
    assert gains.min() >= 0.8 - 1e-6 and gains.max() <= 1.2 + 1e-6 and gains.std() > 0.05
    np.testing.assert_allclose(np.asarray(out["other"])[:, 0, 0, 0] / 0.25, gains, rtol=1e-6)  # a study's views alike


def test_one_projective_transform_per_batch():
    config = STANDARD
    fn = tf.function(lambda x, seed: augment_batch(x, seed, config))
    spec = tf.TensorSpec([None, 64, 32, 1], tf.float32)
    graph = fn.get_concrete_function({"anterior": spec, "posterior": spec}, tf.TensorSpec([2], tf.int64)).graph
    ops = [op.type for op in graph.get_operations()]
    assert ops.count("ImageProjectiveTransformV3") == 1
    default = tf.function(lambda x, seed: augment_batch(x, seed, AugmentConfig(flip_left_right=True, translation=0.03)))
    graph = default.get_concrete_function({"anterior": spec, "posterior": spec}, tf.TensorSpec([2], tf.int64)).graph
    assert "ImageProjectiveTransformV3" not in [op.type for op in graph.get_operations()]  # flips and shifts gather


@pytest.mark.parametrize("values", [{"spin": 1}, {"rotation": -1}, {"scale": 1.5}])
def test_bad_augmentation_settings_are_config_errors(values):
    with pytest.raises(ConfigError):
        AugmentConfig.from_dict(values)


def test_flips_and_shifts_alone_copy_whole_pixels():
    batch = asymmetric_batch(batch=16)
    out = np.asarray(augment_batch(batch, SEED, AugmentConfig(translation=0.1, flip_left_right=True))["anterior"])
    assert set(np.unique(out)) <= {0.0, 1.0}  # no interpolated values
    np.testing.assert_array_equal(out.sum(axis=(1, 2, 3)), np.asarray(batch["anterior"]).sum(axis=(1, 2, 3)))


@pytest.mark.parametrize("height, width", [(64, 32), (33, 17)])
@pytest.mark.parametrize("config", [AugmentConfig(translation=0.2, flip_left_right=True),
                                    AugmentConfig(translation=0.1, flip_up_down=True, flip_left_right=True),
                                    AugmentConfig(translation=0.45), AugmentConfig(flip_left_right=True)])
def test_whole_pixel_copy_is_bit_identical_to_the_nearest_neighbour_warp(config, height, width):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(32, height, width, 2)).astype(np.float32))
    for seed in range(3):
        transforms = affine_transforms(32, height, width, config, tf.constant([seed, 1], tf.int64))
        warped = tf.raw_ops.ImageProjectiveTransformV3(images=x, transforms=transforms, output_shape=[height, width],
                                                       fill_value=0.0, interpolation="NEAREST", fill_mode="CONSTANT")
        copied = copy_whole_pixels(x, transforms)
        assert np.asarray(copied).tobytes() == np.asarray(warped).tobytes()
        assert not np.array_equal(np.asarray(copied), np.asarray(x))  # something moved
