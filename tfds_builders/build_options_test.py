"""png16 round-trips 16-bit counts through TensorFlow's PNG decoder exactly."""
import numpy as np
import pytest
import tensorflow as tf

from tfds_builders.build_options import png16


def test_png16_round_trip_is_exact():
    counts = np.random.default_rng(0).integers(0, 65536, (37, 11), dtype=np.uint16)
    decoded = tf.io.decode_png(png16(counts), dtype=tf.uint16).numpy()
    assert decoded.shape == (37, 11, 1)
    np.testing.assert_array_equal(decoded[..., 0], counts)


@pytest.mark.parametrize("image", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 1), np.uint16)])
def test_png16_rejects_other_layouts(image):
    with pytest.raises(ValueError, match="expected a uint16 H x W image"):
        png16(image)
