"""The test-time shifts behind the per-study uncertainty (tfbonemet.models.tta), on hand-built models."""
from __future__ import annotations

import keras
import numpy as np

from tfbonemet.models.tta import shift_layer, shifts, with_uncertainty

SIZE = (16, 8)


def two_view(head):
    """A two-view model whose evidence is `head` applied to the concatenated views."""
    inputs = {v: keras.Input((*SIZE, 1), name=v) for v in ("anterior", "posterior")}
    both = keras.layers.Concatenate()([inputs["anterior"], inputs["posterior"]])
    return keras.Model(inputs, head(both))


def softmax_of(score):
    """Two-class probabilities from one score: softmax(-s, s)."""
    def head(x):
        s = score(x)
        return keras.layers.Softmax()(keras.layers.Concatenate()([keras.layers.Lambda(lambda t: -t)(s), s]))
    return head


def studies(n=4, seed=0):
    """Hot spots away from the border, so a shift of a pixel or two moves them without cutting them off."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, *SIZE, 1), np.float32)
    x[:, 4:12, 2:6] = rng.random((n, 8, 4, 1))
    return {"anterior": x, "posterior": x[:, :, ::-1]}


def test_shifts_are_half_the_training_shift_in_whole_pixels_at_least_one():
    assert shifts((168, 64), 0.015) == ((-3, 0), (3, 0), (0, -1), (0, 1))
    assert shifts((16, 8), 0.015) == ((-1, 0), (1, 0), (0, -1), (0, 1))


def test_a_shift_moves_pixels_and_fills_with_zero_counts():
    image = np.arange(1, 13, dtype=np.float32).reshape(1, 3, 4, 1)
    down_left = shift_layer(1, -1, "s")(image)[0, ..., 0].numpy()
    np.testing.assert_array_equal(down_left, [[0, 0, 0, 0], [2, 3, 4, 0], [6, 7, 8, 0]])


def test_probability_is_the_model_alone_and_a_shift_invariant_model_is_certain():
    pooled = two_view(softmax_of(lambda x: keras.layers.Dense(1)(keras.layers.GlobalMaxPooling2D()(x))))
    x = studies()
    out = with_uncertainty(pooled, SIZE, 0.015).predict(x, verbose=0)
    np.testing.assert_array_equal(out["probabilities"], pooled.predict(x, verbose=0))
    np.testing.assert_allclose(out["uncertainty"], 0.0, atol=1e-6)  # the maximum does not move with the spot


def test_a_model_that_reads_position_is_uncertain_under_shifts():
    placed = two_view(softmax_of(lambda x: keras.layers.Dense(1, kernel_initializer="random_normal")(
        keras.layers.Flatten()(x))))
    x = studies()
    out = with_uncertainty(placed, SIZE, 0.015).predict(x, verbose=0)
    probabilities = out["probabilities"]
    np.testing.assert_allclose(probabilities, placed.predict(x, verbose=0), atol=1e-6)  # not the copies' mean
    assert out["uncertainty"].shape == (4,) and (out["uncertainty"] > 1e-4).all()
    assert (out["uncertainty"] <= 1).all() and np.allclose(probabilities.sum(1), 1, atol=1e-6)
