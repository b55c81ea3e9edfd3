"""Builder functions shared by the single-view families (Dscint, transfer classifiers)."""
from __future__ import annotations

from keras import layers


def dense_head(x, num_classes, hidden_units=0, dropout=0.0):
    """Optional hidden layer `fc1`, dropout, then `probabilities`.

    The softmax layer runs in float32 so mixed-precision models still output float32
    probabilities (and the loss sees no float16 underflow).
    """
    if hidden_units:
        x = layers.Dense(hidden_units, activation="relu", name="fc1")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
