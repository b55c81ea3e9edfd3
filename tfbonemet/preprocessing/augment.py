"""Training-time augmentation as batched tensor ops: one fused affine warp per batch, then intensity and noise.

A chain of Keras Random* layers resamples the image once per layer and costs more than the rest
of the pipeline (measured: RandomFlip + RandomRotation 519 img/s against 4151 img/s without).
Here rotation, scaling, translation and the left-right flip compose into one 3x3 matrix per
example and a single `ImageProjectiveTransformV3` call warps every view of the batch at once, so
the anterior and posterior views of a study always receive the same geometry (a flip flips both).
Without rotation or zoom (the fit default: mirror + whole-pixel shift) the same matrices become a row
and a column index per example and two gathers copy the pixels: bit-identical to the warp's
nearest-neighbour result at a fraction of its cost.
Randomness is stateless, keyed by (seed, batch index), so a resumed run replays the same batches.
"""
from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from tfbonemet.errors import ConfigError
from tfbonemet.preprocessing.scan_preprocessor import compress, expand


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transformations; zero (or False) turns one off."""

    rotation: float = 0.0  # degrees, uniform in [-rotation, rotation]
    translation: float = 0.0  # fraction of height/width, uniform in [-t, t]
    scale: float = 0.0  # zoom factor uniform in [1 - scale, 1 + scale]
    flip_left_right: bool = False  # the skeleton is near-symmetric; both views flip together
    flip_up_down: bool = False  # only for views without head/foot orientation (not whole-body)
    intensity: float = 0.0  # per-example gain uniform in [1 - intensity, 1 + intensity]
    noise_counts: float = 0.0  # re-noise as if the robust max had this many counts (0 = off)

    @classmethod
    def from_dict(cls, values: dict) -> "AugmentConfig":
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown augmentation keys: {', '.join(sorted(unknown))}")
        config = cls(**values)
        for name in ("rotation", "translation", "scale", "intensity", "noise_counts"):
            if getattr(config, name) < 0:
                raise ConfigError(f"augmentation {name} must be non-negative, got {getattr(config, name)}")
        if config.scale >= 1 or config.intensity >= 1:
            raise ConfigError("augmentation scale and intensity must be below 1")
        return config

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def geometric(self) -> bool:
        return bool(self.rotation or self.translation or self.scale or self.flip_left_right or self.flip_up_down)

    @property
    def needs_interpolation(self) -> bool:
        """Only rotation and zoom move pixels off the grid; flips and whole-pixel shifts do not."""
        return bool(self.rotation or self.scale)

    @property
    def active(self) -> bool:
        return self.geometric or bool(self.intensity or self.noise_counts)


# The published systems' set (the guo2023-two-view preset's): small rotations and shifts, mild zoom, mirrored
# skeleton, count-level jitter.
STANDARD = AugmentConfig(rotation=5.0, translation=0.05, scale=0.1, flip_left_right=True, intensity=0.1,
                         noise_counts=200.0)


def affine_transforms(batch_size, height, width, config: AugmentConfig, seed) -> tf.Tensor:
    """Per-example (B, 8) projective transforms mapping output pixel (x, y) to input pixel.

    The forward map rotates, scales and flips about the image centre and then shifts; its
    inverse is written out directly so no matrix inversion runs in the graph.
    """
    seeds = tf.random.experimental.stateless_split(seed, 5)
    uniform = lambda i, lo, hi: tf.random.stateless_uniform([batch_size], seeds[i], lo, hi)  # noqa: E731
    angle = uniform(0, -1.0, 1.0) * (config.rotation * math.pi / 180.0)
    scale = uniform(1, 1.0 - config.scale, 1.0 + config.scale)
    flip_x = tf.where(uniform(2, 0.0, 1.0) < 0.5, -1.0, 1.0) if config.flip_left_right else tf.ones([batch_size])
    flip_y = tf.where(uniform(3, 0.0, 1.0) < 0.5, -1.0, 1.0) if config.flip_up_down else tf.ones([batch_size])
    shift = tf.random.stateless_uniform([batch_size, 2], seeds[4], -config.translation, config.translation)
    width_f, height_f = tf.cast(width, tf.float32), tf.cast(height, tf.float32)
    tx, ty = shift[:, 0] * width_f, shift[:, 1] * height_f
    if not config.needs_interpolation:
        tx, ty = tf.round(tx), tf.round(ty)  # whole-pixel shifts: the warp is an exact copy
    cos, sin = tf.cos(angle) / scale, tf.sin(angle) / scale
    # inverse linear part: flip * rotate(-angle) / scale
    a0, a1 = flip_x * cos, flip_x * sin
    b0, b1 = -flip_y * sin, flip_y * cos
    cx, cy = (width_f - 1.0) / 2.0, (height_f - 1.0) / 2.0
    ox, oy = cx + tx, cy + ty  # where the input centre lands in the output
    a2 = cx - (a0 * ox + a1 * oy)
    b2 = cy - (b0 * ox + b1 * oy)
    zeros = tf.zeros([batch_size])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def copy_whole_pixels(x: tf.Tensor, transforms: tf.Tensor) -> tf.Tensor:
    """Apply axis-aligned transforms with whole-pixel offsets (flips, integer shifts) to (B, H, W, C).

    Input column a0 * x + a2 and row b1 * y + b2 are exact small integers in float32, so gathering
    them, with zeros where they fall outside, is what the nearest-neighbour warp computes, pixel for
    pixel. Columns are gathered as rows of the transposed batch: TensorFlow copies whole rows fast
    and single elements slowly (see bench/README.md, "Training speed").
    """
    shape = tf.shape(x)

    def source(scale, offset, size):  # (B, size) input indices, and whether each lies inside the image
        index = tf.round(scale[:, None] * tf.range(size, dtype=tf.float32)[None, :] + offset[:, None])
        index = tf.cast(index, tf.int32)
        inside = (index >= 0) & (index < size)
        return tf.where(inside, index, 0), inside

    rows, rows_inside = source(transforms[:, 4], transforms[:, 5], shape[1])
    cols, cols_inside = source(transforms[:, 0], transforms[:, 2], shape[2])
    x = tf.gather(x, rows, axis=1, batch_dims=1)
    x = tf.transpose(tf.gather(tf.transpose(x, [0, 2, 1, 3]), cols, axis=1, batch_dims=1), [0, 2, 1, 3])
    inside = rows_inside[:, :, None, None] & cols_inside[:, None, :, None]
    return tf.where(inside, x, tf.zeros([], x.dtype))


def augment_batch(features: dict, seed, config: AugmentConfig, normalisation: str = "sqrt") -> dict:
    """Augment a batch of normalised views {name: (B, H, W, C)}; every view of a study shares its geometry and gain.

    The views are stacked along the batch axis (a contiguous copy; stacking them as channels
    interleaves every pixel and cost more than the warp) and every per-example draw is tiled to match.
    Noise is Poisson counting noise with its variance (equal to the mean, in linear count units),
    drawn as a sum of two uniforms: a bell-shaped stand-in for the normal approximation of Poisson
    noise that costs a quarter of `stateless_normal` (measured 32 ms against 127 ms per batch of
    16 x 512 x 128 x 2) and far less than Poisson sampling.
    """
    names = sorted(features)
    x = tf.concat([features[name] for name in names], axis=0)  # (views * B, H, W, C)
    batch, views, shape = tf.shape(features[names[0]])[0], len(names), tf.shape(x)
    per_view = lambda tensor: tf.tile(tensor, [views] + [1] * (tensor.shape.rank - 1))  # noqa: E731
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    if config.geometric:
        transforms = per_view(affine_transforms(batch, shape[1], shape[2], config, seeds[0]))
        if config.needs_interpolation:
            x = tf.raw_ops.ImageProjectiveTransformV3(images=x, transforms=transforms, output_shape=shape[1:3],
                                                      fill_value=0.0, interpolation="BILINEAR",
                                                      fill_mode="CONSTANT")
        else:
            x = copy_whole_pixels(x, transforms)
    if config.intensity or config.noise_counts:
        linear = expand(x, normalisation)  # back to scaled counts, where gain and counting noise act
        if config.intensity:
            gain = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[1], 1.0 - config.intensity,
                                               1.0 + config.intensity)
            linear = linear * per_view(gain)
        if config.noise_counts:
            std = tf.sqrt(tf.maximum(linear, 0.0) / config.noise_counts)
            # U(-1, 1) + U(-1, 1) has variance 2/3
            pair = tf.random.stateless_uniform(tf.concat([[2], shape], 0), seeds[2], -1.0, 1.0)
            linear = linear + std * (math.sqrt(1.5) * (pair[0] + pair[1]))
        x = compress(linear, normalisation)
    return dict(zip(names, tf.split(x, views, axis=0)))


def make_augment(values: dict, normalisation: str):
    """A `(features, seed) -> features` function for the pipeline, or None when nothing is enabled."""
    config = AugmentConfig.from_dict(values)
    if not config.active:
        return None
    return lambda features, seed: augment_batch(features, seed, config, normalisation)
