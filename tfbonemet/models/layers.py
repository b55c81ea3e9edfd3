"""Serializable custom layers shared by the model families (no Lambda layers: safe-mode loading works)."""
from __future__ import annotations

import keras
from keras import layers, ops

AGGREGATIONS = ("concat", "sum", "mean", "max", "attention")


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
