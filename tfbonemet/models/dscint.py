"""Dscint (Lin et al. 2021, Med. Phys. 48:5782): a self-defined CNN with hybrid attention for whole-body scans.

The paper names its parts: eight weight layers, one hybrid (channel + spatial) attention module,
two normalisation modules, two fully connected layers and a softmax over normal / metastasis /
arthritis / thyroid carcinoma. Read AlexNet-style, eight weight layers = six convolutions + the two
fully connected layers, with a normalisation after each of the first two convolutions. Filter
widths and kernel sizes are not given in the abstract; the defaults here are ours.
"""
from __future__ import annotations

import keras
from keras import layers

from tfbonemet.models.blocks import dense_head
from tfbonemet.models.layers import HybridAttention

LAST_CONV = "conv6"


def conv_block(x, filters, kernel_size, strides=1, normalise=False, pool=False, name="conv"):
    """Convolution (ReLU), optionally batch normalisation, optionally 2x2 max pooling."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", activation="relu", name=name)(x)
    if normalise:
        x = layers.BatchNormalization(name=f"{name}_norm")(x)
    if pool:
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    return x


def build_dscint(image_size=(512, 128), num_classes=4, channels=1, filters=(32, 64, 128, 128, 256, 256),
                 attention_reduction=8, attention_kernel=7, hidden_units=256, dropout=0.5, name="dscint"):
    """Input `image` (H, W, channels); output `probabilities`; Grad-CAM target `conv6`.

    The attention sits after the second (normalised, pooled) stage: early enough that the
    spatial map still resolves single vertebrae, late enough that channels mean something.
    """
    if len(filters) != 6:
        raise ValueError(f"Dscint has six convolutions; got {len(filters)} filter widths")
    image = keras.Input(shape=(*image_size, channels), name="image")
    x = conv_block(image, filters[0], 7, strides=2, normalise=True, pool=True, name="conv1")
    x = conv_block(x, filters[1], 5, normalise=True, pool=True, name="conv2")
    x = HybridAttention(attention_reduction, attention_kernel, name="hybrid_attention")(x)
    x = conv_block(x, filters[2], 3, name="conv3")
    x = conv_block(x, filters[3], 3, pool=True, name="conv4")
    x = conv_block(x, filters[4], 3, name="conv5")
    x = conv_block(x, filters[5], 3, name=LAST_CONV)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = dense_head(x, num_classes, hidden_units, dropout)
    return keras.Model(image, outputs, name=name)
