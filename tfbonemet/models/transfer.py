"""Transfer-learning classifiers on keras.applications backbones (Lin 2021 Sci. Rep.; Yim 2022; Wang 2018).

The backbone is built flat on the model's own input (`input_tensor=`), not nested as one layer,
so Grad-CAM can reach its inner convolutions. Its ImageNet (or chest X-ray) weights come from a
local file through `finetune.load_backbone_weights`; nothing is downloaded (`weights=None`).

Layout: image (H, W, channels) in [0, 1] -> channel adapter (to 3 channels) -> `backbone_input`
(rescales to the range the backbone's ImageNet weights expect) -> backbone -> `backbone_features`
-> pooling -> dense head -> `probabilities`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import keras
from keras import layers

from tfbonemet.models.blocks import dense_head

BACKBONE_INPUT = "backbone_input"
BACKBONE_FEATURES = "backbone_features"
ADAPTERS = ("auto", "repeat", "conv")
POOLINGS = ("avg", "max", "flatten")

# keras.applications preprocessing modes, as Rescaling(scale, offset) of [0, 1] images.
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SCALINGS = {
    "caffe": (255.0, [-103.939, -116.779, -123.68]),  # BGR mean subtraction on 0-255 (VGG, ResNet)
    "torch": ([1 / s for s in _IMAGENET_STD], [-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD)]),
    "tf": (2.0, -1.0),  # [-1, 1] (Xception, Inception)
    "raw": (255.0, 0.0),  # 0-255; the backbone rescales itself (EfficientNetV2)
}


@dataclasses.dataclass(frozen=True)
class Backbone:
    application: Callable[..., keras.Model]
    scaling: str  # key of SCALINGS
    last_conv: str  # Grad-CAM target: the last spatial feature layer
    min_size: int  # smallest input side keras.applications accepts


BACKBONES = {
    "vgg16": Backbone(keras.applications.VGG16, "caffe", "block5_conv3", 32),
    "resnet50": Backbone(keras.applications.ResNet50, "caffe", "conv5_block3_out", 32),
    "densenet121": Backbone(keras.applications.DenseNet121, "torch", "relu", 32),
    "xception": Backbone(keras.applications.Xception, "tf", "block14_sepconv2_act", 71),
    "inception_v3": Backbone(keras.applications.InceptionV3, "tf", "mixed10", 75),
    "efficientnetv2_s": Backbone(keras.applications.EfficientNetV2S, "raw", "top_activation", 32),
}


def adapt_channels(image, channels, adapter="auto"):
    """N-channel input -> the 3 channels ImageNet backbones take.

    `repeat` copies a single channel three times (the pre-trained first layer sees a grey image);
    `conv` is a learned 1x1 convolution, initialised to the channel mean in every output, so N
    stacked phases of multi-phase CT start as a grey image too and the mix is learned from there.
    `auto`: repeat for 1 channel, pass-through for 3, conv otherwise.
    """
    if adapter not in ADAPTERS:
        raise ValueError(f"unknown channel adapter {adapter!r}; choose one of {', '.join(ADAPTERS)}")
    if adapter == "auto":
        adapter = {1: "repeat", 3: None}.get(channels, "conv")
    if adapter == "repeat":
        if channels != 1:
            raise ValueError(f"the repeat adapter needs 1 input channel, got {channels}; use 'conv'")
        return layers.Concatenate(name="channel_repeat")([image] * 3)
    if adapter == "conv":
        return layers.Conv2D(3, 1, kernel_initializer=keras.initializers.Constant(1.0 / channels),
                             name="channel_adapter")(image)
    return image


def pool_features(x, pooling):
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="head_avgpool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="head_maxpool")(x)
    return layers.Flatten(name="head_flatten")(x)


def build_transfer_classifier(backbone="resnet50", image_size=(512, 128), num_classes=2, channels=1,
                              channel_adapter="auto", pooling="avg", hidden_units=0, dropout=0.2, name=None):
    """Input `image` (H, W, channels) in [0, 1]; output `probabilities`.

    Load pre-trained weights with `finetune.load_backbone_weights(model, path)` (or
    `build_model(..., backbone_weights=path)`), then follow the freeze / unfreeze plan in finetune.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    spec = BACKBONES[backbone]
    if min(image_size) < spec.min_size:
        raise ValueError(f"{backbone} needs inputs of at least {spec.min_size}x{spec.min_size}, got {image_size}")
    image = keras.Input(shape=(*image_size, channels), name="image")
    x = adapt_channels(image, channels, channel_adapter)
    scale, offset = SCALINGS[spec.scaling]
    x = layers.Rescaling(scale, offset, name=BACKBONE_INPUT)(x)
    features = spec.application(include_top=False, weights=None, input_tensor=x).output
    x = layers.Identity(name=BACKBONE_FEATURES)(features)
    outputs = dense_head(pool_features(x, pooling), num_classes, hidden_units, dropout)
    return keras.Model(image, outputs, name=name or f"transfer_{backbone}")


def build_yim_vgg16(image_size=(512, 128), num_classes=2, channels=1, hidden_units=256, dropout=0.5,
                    name="yim_vgg16", **options):
    """Yim et al. 2022: the VGG16 convolutional base with a new fully connected head (flatten, FC, dropout)."""
    return build_transfer_classifier("vgg16", image_size, num_classes, channels, pooling="flatten",
                                     hidden_units=hidden_units, dropout=dropout, name=name, **options)


def backbone_part(model: keras.Model) -> keras.Model | None:
    """The backbone of a transfer classifier as a functional view sharing the model's layers (None if absent)."""
    names = {layer.name for layer in model.layers}
    if BACKBONE_INPUT not in names or BACKBONE_FEATURES not in names:
        return None
    return keras.Model(model.get_layer(BACKBONE_INPUT).output, model.get_layer(BACKBONE_FEATURES).output,
                       name=f"{model.name}_backbone")
