"""Batch normalisation through TensorFlow's fused kernel, for every registered model.

Keras 3 normalises with separate moment, subtract, scale and shift ops, each a full pass over the
feature maps and again in the gradient. TensorFlow's FusedBatchNormV3 (oneDNN on CPUs) does it in
one: on 2 CPU cores a training step of two_view_net took 1.26x less time, DenseNet121 1.17x
(float32), and under mixed_bfloat16 1.68x and 2.11x less (bench/bench_batch_norm.py, bench/README.md). `fuse_batch_norm`
swaps the layers of a built model, keras.applications backbones included, for this module's
`BatchNormalization`: the same weights, config and semantics (biased batch variance in the moving
average), and Keras' own ops where the fused kernel does not apply: other backends, masks, renorm,
synchronised statistics, or an axis other than the last of 4-D maps. It keeps Keras' class name
because `.weights.h5` files key variables by it: weights saved with either layer load into the other.
"""
from __future__ import annotations

import keras

from tfbonemet.models.walk import all_layers


@keras.saving.register_keras_serializable(package="tfbonemet")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by one fused TensorFlow op per call."""

    def _fusable(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and mask is None and not self.renorm
                and not self.synchronized and len(inputs.shape) == 4 and self.axis in (-1, 3))

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones((channels,), "float32")
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros((channels,), "float32")
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, epsilon=self.epsilon, is_training=True)
            # The kernel returns the unbiased variance; Keras averages the biased one.
            count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), "float32")
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moving.assign(tf.cast(moving * self.momentum + tf.cast(batch, moving.dtype) * (1.0 - self.momentum),
                                      moving.dtype))
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, mean=tf.cast(self.moving_mean, "float32"),
                variance=tf.cast(self.moving_variance, "float32"), epsilon=self.epsilon, is_training=False)
        return tf.cast(outputs, self.compute_dtype)


def fuse_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of `model` (nested models too) whose BatchNormalization layers are fused, weights kept."""
    if not any(type(layer) is keras.layers.BatchNormalization for layer in all_layers(model)):
        return model

    def clone(layer):
        cls = BatchNormalization if type(layer) is keras.layers.BatchNormalization else type(layer)
        return cls.from_config(layer.get_config())

    fused = keras.models.clone_model(model, clone_function=clone, recursive=True)
    fused.set_weights(model.get_weights())
    return fused
