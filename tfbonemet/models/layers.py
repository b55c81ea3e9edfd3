"""Serializable custom layers shared by the model families (no Lambda layers: safe-mode loading works).

Importing this module registers every custom layer a saved tfbonemet model can hold, the fused
BatchNormalization of batch_norm included.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from tfbonemet.models.batch_norm import BatchNormalization  # noqa: F401  (registered on import)
from tfbonemet.vocab import AGGREGATIONS  # noqa: E402


@keras.saving.register_keras_serializable(package="tfbonemet")
class ViewAggregation(layers.Layer):
    """Fuses per-view feature vectors (B, D) into one study vector.

    `attention` learns a score per view from its own features and takes the softmax-weighted
    sum, so a view where the finding is clearer (a posterior spine lesion, say) can dominate.
    """

    def __init__(self, mode: str = "concat", **kwargs):
        super().__init__(**kwargs)
        if mode not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {mode!r}; choose one of {', '.join(AGGREGATIONS)}")
        self.mode = mode

    def build(self, input_shape):
        if self.mode == "attention":
            dim = input_shape[0][-1]
            self.score = layers.Dense(1, name="view_score", dtype=self.dtype_policy)
            self.score.build((None, dim))

    def call(self, views):
        if self.mode == "concat":
            return ops.concatenate(views, axis=-1)
        stacked = ops.stack(views, axis=1)  # (B, V, D)
        if self.mode == "sum":
            return ops.sum(stacked, axis=1)
        if self.mode == "mean":
            return ops.mean(stacked, axis=1)
        if self.mode == "max":
            return ops.max(stacked, axis=1)
        weights = ops.softmax(self.score(stacked), axis=1)  # (B, V, 1)
        return ops.sum(stacked * weights, axis=1)

    def compute_output_shape(self, input_shape):
        dim = input_shape[0][-1]
        if self.mode == "concat":
            dim = sum(shape[-1] for shape in input_shape)
        return (input_shape[0][0], dim)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="tfbonemet")
class ChannelAttention(layers.Layer):
    """CBAM channel attention: reweights feature channels by a shared MLP over their mean and max.

    Both statistics are used because a small hot spot moves a channel's max far more than its
    mean; the mean alone would let focal uptake vanish in a whole-body field.
    """

    def __init__(self, reduction: int = 8, **kwargs):
        super().__init__(**kwargs)
        if reduction < 1:
            raise ValueError(f"reduction must be at least 1, got {reduction}")
        self.reduction = reduction

    def build(self, input_shape):
        channels = input_shape[-1]
        units = max(channels // self.reduction, 1)
        self.hidden = layers.Dense(units, activation="relu", name="mlp_hidden", dtype=self.dtype_policy)
        self.hidden.build((None, channels))
        self.project = layers.Dense(channels, name="mlp_out", dtype=self.dtype_policy)
        self.project.build((None, units))

    def call(self, x):
        mean = self.project(self.hidden(ops.mean(x, axis=(1, 2))))
        peak = self.project(self.hidden(ops.max(x, axis=(1, 2))))
        weights = ops.sigmoid(mean + peak)  # (B, C)
        return x * weights[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="tfbonemet")
class SpatialAttention(layers.Layer):
    """CBAM spatial attention: a sigmoid map from a convolution over the channel mean and max.

    It tells the network *where* in the skeleton to look, the same question a reader asks.
    """

    def __init__(self, kernel_size: int = 7, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size
        self.conv = layers.Conv2D(1, kernel_size, padding="same", activation="sigmoid", name="attention_conv",
                                  dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build((*input_shape[:-1], 2))

    def call(self, x):
        stats = ops.concatenate([ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1)
        return x * self.conv(stats)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="tfbonemet")
class HybridAttention(layers.Layer):
    """Channel attention then spatial attention (CBAM order), the hybrid module of Dscint."""

    def __init__(self, reduction: int = 8, kernel_size: int = 7, **kwargs):
        super().__init__(**kwargs)
        self.reduction = reduction
        self.kernel_size = kernel_size
        self.channel = ChannelAttention(reduction, name="channel_attention", dtype=self.dtype_policy)
        self.spatial = SpatialAttention(kernel_size, name="spatial_attention", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.channel.build(input_shape)
        self.spatial.build(input_shape)

    def call(self, x):
        return self.spatial(self.channel(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction, "kernel_size": self.kernel_size}
