"""Per-study uncertainty by test-time augmentation: the model on its input and on whole-pixel shifts of it.

The shifts are the geometric augmentation training already applies (tfbonemet.preprocessing.augment:
whole-pixel translation of both views together, no interpolation), at half the default training range
(FitConfig.uncertainty_shift), so every shifted copy is an input the model was trained to read the
same way. No flips: a flipped copy shows a lesion on the other side of the patient, a different
study. The probability stays the model's own on the unshifted input (the number the threshold was
chosen on, and every path's parity is checked on); the uncertainty is how far any class
probability moves across the copies (max - min), in the units of the probability itself. Max and
min, not a standard deviation: they quantise to int8 like the probabilities, so the full-integer
TFLite file carries the same output.
"""
from __future__ import annotations

OUTPUTS = ("probabilities", "uncertainty")


def shifts(image_size, fraction: float) -> tuple[tuple[int, int], ...]:
    """(dy, dx) whole-pixel shifts: up, down, left and right by `fraction` of the side, at least one pixel."""
    dy, dx = (max(1, round(fraction * side)) for side in image_size)
    return (-dy, 0), (dy, 0), (0, -dx), (0, dx)


def shift_layer(dy: int, dx: int, name: str):
    """Moves a (B, H, W, C) image by (dy, dx) whole pixels, zero (no counts) filling what moves in."""
    import keras

    pad = ((max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0)))
    crop = ((max(-dy, 0), max(dy, 0)), (max(-dx, 0), max(dx, 0)))
    return keras.Sequential([keras.layers.ZeroPadding2D(pad), keras.layers.Cropping2D(crop)], name=name)


def with_uncertainty(model, image_size, fraction: float):
    """A model taking `model`'s inputs and returning {"probabilities", "uncertainty"} (see the module doc).

    The shifted copies go through the same layers (shared weights) one at a time, so the unshifted
    probability is computed exactly as `model` computes it alone.
    """
    import keras
    from keras import ops

    from tfbonemet.vocab import tensor_name

    inputs = keras.tree.map_structure(lambda t: keras.Input(t.shape[1:], name=tensor_name(t), dtype=t.dtype),
                                      model.input)
    probabilities = model(inputs)
    copies = [probabilities]
    for i, (dy, dx) in enumerate(shifts(image_size, fraction)):
        move = shift_layer(dy, dx, f"tta_shift_{i}")
        copies.append(model(keras.tree.map_structure(move, inputs)))
    stacked = ops.stack(copies, axis=1)  # (B, copies, classes)
    spread = ops.max(ops.max(stacked, axis=1) - ops.min(stacked, axis=1), axis=-1)
    return keras.Model(inputs, {"probabilities": probabilities, "uncertainty": spread},
                       name=f"{model.name}_with_uncertainty")
