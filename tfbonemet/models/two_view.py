"""Two-view aggregation network (Guo et al. 2023): one CNN backbone per view, features fused, one head.

The self-defined backbone is small enough to pre-train on chest X-rays and fine-tune on scans of a
few hundred patients; its weights can be loaded into both branches (`load_backbone_weights`).
"""
from __future__ import annotations

import keras
from keras import layers

from tfbonemet.models.layers import AGGREGATIONS, ViewAggregation
from tfbonemet.vocab import VIEWS

POOLINGS = ("avg", "max", "avgmax")


def conv_bn_relu(x, filters, kernel_size=3, strides=1, name="conv"):
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


FULL_RESOLUTION_PIXELS = 128 * 128  # inputs up to this size (regional crops) keep every pixel in the stem
STEM_STRIDES = (1, 2, 4, "auto")


def stem_stride_for(stem_stride, input_shape) -> int:
    """"auto": 1 for regional crops (a metastasis is a few pixels across), 4 for whole-body views.

    Stage 1 then runs on a quarter of a crop's pixels and a sixteenth of a whole-body view's, so
    a study costs about the same either way and a default fit stays within its CPU budget.
    """
    if stem_stride not in STEM_STRIDES:
        raise ValueError(f"stem_stride must be one of {', '.join(map(str, STEM_STRIDES))}, got {stem_stride!r}")
    if stem_stride != "auto":
        return stem_stride
    return 1 if input_shape[0] * input_shape[1] <= FULL_RESOLUTION_PIXELS else 4


def build_scint_backbone(input_shape=(512, 128, 1), filters=(16, 32, 64, 128), convs_per_stage=2,
                         stem_stride="auto", name="scint_backbone"):
    """Self-defined CNN: a stem, then stages of `convs_per_stage` 3x3 convs + max-pool; outputs the last maps.

    Stem: `stem_stride` 1 is a full-resolution stage (convs + pool); 2 a 5x5 strided conv; 4 that
    conv followed by a pool (see `stem_stride_for`). Two convs per stage, as in the plain nets that
    learn real BS-80K chest crops (0.93 ROC AUC against 0.74 with one; bench/README.md). Max pooling keeps small
    hot spots alive through the downsampling, which average pooling would blur into the skeleton's
    uptake. The last convolution is named `last_conv` for Grad-CAM.
    """
    if len(filters) < 2:
        raise ValueError("the backbone needs at least two filter stages")
    if convs_per_stage < 1:
        raise ValueError(f"convs_per_stage must be at least 1, got {convs_per_stage}")
    stride = stem_stride_for(stem_stride, input_shape)
    image = keras.Input(shape=input_shape, name="image")
    if stride == 1:
        x = conv_bn_relu(image, filters[0], name="stem")
        for conv in range(1, convs_per_stage):
            x = conv_bn_relu(x, filters[0], name=f"stem_conv{conv + 1}")
        x = layers.MaxPooling2D(2, name="stem_pool")(x)
    else:
        x = conv_bn_relu(image, filters[0], kernel_size=5, strides=2, name="stem")
        if stride == 4:
            x = layers.MaxPooling2D(2, name="stem_pool")(x)
    for stage, width in enumerate(filters[1:-1], start=1):
        for conv in range(convs_per_stage):
            x = conv_bn_relu(x, width, name=f"stage{stage}_conv" + (f"{conv + 1}" if convs_per_stage > 1 else ""))
        x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
    for conv in range(convs_per_stage - 1):
        x = conv_bn_relu(x, filters[-1], name=f"last_stage_conv{conv + 1}")
    x = conv_bn_relu(x, filters[-1], name="last_conv")
    return keras.Model(image, x, name=name)


def pool_features(x, pooling, name):
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=f"{name}_avgpool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name=f"{name}_maxpool")(x)
    return layers.Concatenate(name=f"{name}_pool")([
        layers.GlobalAveragePooling2D(name=f"{name}_avgpool")(x),
        layers.GlobalMaxPooling2D(name=f"{name}_maxpool")(x)])


def classifier_head(x, num_classes, hidden_units=64, dropout=0.2):
    """Dense head whose softmax runs in float32, so mixed-precision models output float32 probabilities."""
    x = layers.Dropout(dropout, name="head_dropout")(x)
    if hidden_units:
        x = layers.Dense(hidden_units, activation="relu", name="head_dense")(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)


def build_two_view_net(image_size=(512, 128), num_classes=2, filters=(16, 32, 64, 128), convs_per_stage=2,
                       stem_stride="auto", shared_backbone=True, aggregation="concat", pooling="avgmax", hidden_units=64,
                       dropout=0.2, name="two_view_net"):
    """Inputs `anterior` and `posterior` (H, W, 1, posterior already mirrored); output `probabilities`.

    The feature maps of each view pass through an identity layer named `<view>_features`, the
    target layer for per-view Grad-CAM.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    input_shape = (*image_size, 1)
    inputs = {view: keras.Input(shape=input_shape, name=view) for view in VIEWS}
    def backbone(name):
        return build_scint_backbone(input_shape, filters, convs_per_stage, stem_stride, name=name)
    shared = backbone("backbone") if shared_backbone else None
    pooled = []
    for view in VIEWS:
        branch = shared or backbone(f"{view}_backbone")
        maps = layers.Identity(name=f"{view}_features")(branch(inputs[view]))
        pooled.append(pool_features(maps, pooling, view))
    fused = ViewAggregation(aggregation, name="view_aggregation")(pooled)
    outputs = classifier_head(fused, num_classes, hidden_units, dropout)
    return keras.Model(inputs, outputs, name=name)


def backbones(model: keras.Model) -> list[keras.Model]:
    """The backbone sub-models of a two-view net (one if shared, one per view otherwise)."""
    return [layer for layer in model.layers if isinstance(layer, keras.Model)]
