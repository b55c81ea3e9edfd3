"""Count-image preprocessing as TensorFlow ops, shared by the tf.data pipeline and the exported model.

One implementation serves training and serving, so a served model sees exactly what the trained
model saw. Every function takes images shaped (H, W, 1) or (B, H, W, 1).
"""
from __future__ import annotations

import tensorflow as tf

NORMALISATIONS = ("sqrt", "linear", "log")


def mirror_posterior(posterior: tf.Tensor) -> tf.Tensor:
    """Flip the posterior view left-right so the patient's right lies on the same side as in the anterior."""
    return tf.reverse(posterior, axis=[-2])


def robust_max(images: tf.Tensor, percentile: float = 99.5) -> tf.Tensor:
    """Per-image count at `percentile`, shaped to broadcast against the images.

    Uses the smallest of the top-k pixels instead of a full sort: the bladder and injection
    site are the hottest few pixels, and clipping at a high percentile keeps them from
    flattening the skeleton into the noise floor.
    """
    images = tf.convert_to_tensor(images)
    batched = images.shape.rank == 4
    x = images if batched else images[tf.newaxis]
    flat = tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])
    n = tf.shape(flat)[1]
    k = tf.maximum(1, tf.cast(tf.math.ceil(tf.cast(n, tf.float32) * (1.0 - percentile / 100.0)), tf.int32))
    top = tf.math.top_k(flat, k=k, sorted=False).values
    value = tf.maximum(tf.reduce_min(top, axis=1), 1.0)
    value = tf.reshape(value, [-1, 1, 1, 1])
    return value if batched else value[0]


def normalise_counts(images: tf.Tensor, percentile: float = 99.5, transform: str = "sqrt") -> tf.Tensor:
    """Counts -> [0, 1] float32: divide by the robust max, clip, then compress the range.

    `sqrt` stabilises Poisson noise (its variance equals its mean), `log` compresses harder,
    `linear` keeps counts proportional.
    """
    if transform not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {transform!r}; choose one of {', '.join(NORMALISATIONS)}")
    x = tf.cast(images, tf.float32)
    x = tf.clip_by_value(tf.maximum(x, 0.0) / robust_max(x, percentile), 0.0, 1.0)
    if transform == "sqrt":
        return tf.sqrt(x)
    if transform == "log":
        return tf.math.log1p(x * 99.0) / tf.math.log(100.0)
    return x


def resize_with_pad(images: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Resize keeping the aspect ratio, padding with zero counts (area filter keeps count totals smooth)."""
    x = tf.cast(images, tf.float32)
    static = x.shape[-3:-1]
    if static[0] == height and static[1] == width:
        return x
    return tf.image.resize_with_pad(x, height, width, method="area")


# Rows of a whole-body view (head at the top, 2 m field) that hold the thorax, from the clavicles to
# the lowest ribs, with a margin for body height and table position (phantom thorax: 0.14-0.38).
THORAX_ROWS = (0.10, 0.42)


def crop_box(images: tf.Tensor, box) -> tf.Tensor:
    """Crop to one box (ymin, xmin, ymax, xmax) given as fractions of height and width.

    Fractions keep a box valid at any resolution; edges are rounded outwards so a box never
    loses the pixels it touches. One box per call: per-study boxes apply before batching.
    """
    x = tf.convert_to_tensor(images)
    box = tf.cast(tf.convert_to_tensor(box), tf.float32)
    height = tf.cast(tf.shape(x)[-3], tf.float32)
    width = tf.cast(tf.shape(x)[-2], tf.float32)
    y0 = tf.cast(tf.floor(box[0] * height), tf.int32)
    x0 = tf.cast(tf.floor(box[1] * width), tf.int32)
    y1 = tf.maximum(tf.cast(tf.math.ceil(box[2] * height), tf.int32), y0 + 1)
    x1 = tf.maximum(tf.cast(tf.math.ceil(box[3] * width), tf.int32), x0 + 1)
    return x[..., y0:y1, x0:x1, :]


def thoracic_crop(images: tf.Tensor, rows=THORAX_ROWS, cols=(0.0, 1.0)) -> tf.Tensor:
    """The thoracic region of whole-body views by anatomical fraction, for the thoracic (SPECT) workflow."""
    return crop_box(images, (rows[0], cols[0], rows[1], cols[1]))
