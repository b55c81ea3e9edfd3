"""The training recipe: what is trained on what, at which input size, with which optimiser, schedule and loss.

Kept apart from the training loop (trainer.py), so choosing a recipe and running it on one or many
workers are separate concerns.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import keras

from tfbonemet.config import MIN_IMAGE_SIDE, FitConfig
from tfbonemet.data import datasets
from tfbonemet.models import build_model, input_convention
from tfbonemet.preprocessing import cropped_shape
from tfbonemet.vocab import DISPLAY_FULL_SCALE, TASKS, VIEW_SETS

MAX_INPUT_PIXELS = 512 * 128  # per view: larger studies are read downsampled (fits 2 CPU cores)
SIZE_MULTIPLE = 8  # three 2x poolings divide the input evenly


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What is trained on what: the model builder, the inputs it takes and the classes it predicts.

    `task` None keeps a dataset's own classes (pre-training on chest X-rays).
    """

    build: Callable[[], keras.Model]
    views: str  # key of vocab.VIEW_SETS
    task: str | None
    class_names: tuple[str, ...]
    model_file: str = "model.keras"


def fit_recipe(config: FitConfig) -> Recipe:
    """The recipe of `tfbonemet fit`: the registered model on the scans, for the configured task."""
    class_names = tuple(TASKS[config.task])

    def build():
        return build_model(config.model, image_size=(config.image_height, config.image_width),
                           num_classes=len(class_names), **config.model_options)
    views = "two_view" if input_convention(config.model) == "two_view" else "anterior"
    return Recipe(build, views, config.task, class_names)


def input_size(config: FitConfig, train_split: datasets.Split, log=print) -> tuple[int, int]:
    """The model input size: as configured, else the data's typical (cropped) study size, never upsampled.

    Studies larger than MAX_INPUT_PIXELS are read downsampled with their aspect ratio kept; sides
    are rounded down to a multiple of SIZE_MULTIPLE.
    """
    if config.image_height:
        return config.image_height, config.image_width
    height, width = cropped_shape(config.crop, train_split.typical_size())
    shrink = min(1.0, math.sqrt(MAX_INPUT_PIXELS / (height * width)))
    size = tuple(max(MIN_IMAGE_SIDE, int(side * shrink) // SIZE_MULTIPLE * SIZE_MULTIPLE) for side in (height, width))
    log(f"Input size {size[0]}x{size[1]} per view, from the data's typical study size "
        f"{height}x{width}{' after the crop' if config.crop != 'none' else ''} "
        f"(set --image-size to override)")
    return size


def intensity_scale(config: FitConfig, recipe: Recipe, train_split: datasets.Split, log=print) -> str:
    """The resolved `intensity_scale`: as configured, else from the training studies' brightest pixel.

    8-bit display-scaled images (every sampled study at most 255, as JPEG/PNG crops are) keep their
    fixed scale: on real BS-80K chest crops a per-view 99.5th-percentile scale lifts a healthy
    patient's hottest bone to the level of a lesion. Counts (DICOM) keep the per-view percentile.
    """
    if config.intensity_scale != "auto":
        return str(config.intensity_scale)
    peak = train_split.peak_value(VIEW_SETS[recipe.views])
    if peak <= DISPLAY_FULL_SCALE:
        log(f"Intensity: 8-bit display-scaled images (brightest sampled pixel {peak:g}), read at the fixed "
            f"scale {DISPLAY_FULL_SCALE} (set --intensity-scale percentile to scale each view by its own counts)")
        return str(DISPLAY_FULL_SCALE)
    log(f"Intensity: counts (brightest sampled pixel {peak:g}), each view scaled by its 99.5th percentile")
    return "percentile"


@dataclasses.dataclass
class Stage:
    """A contiguous range of epochs trained with one compiled optimizer (head-only, or all layers)."""

    name: str
    first_epoch: int
    last_epoch: int  # exclusive
    learning_rate: float
    frozen_backbone: bool


def stages(config: FitConfig) -> list[Stage]:
    """Plain training is one stage; fine-tuning a pre-trained backbone is head-first, then all at a lower rate."""
    if not config.init_backbone or not config.head_epochs:
        return [Stage("train", 0, config.epochs, config.learning_rate, False)]
    return [Stage("head", 0, config.head_epochs, config.learning_rate, True),
            Stage("finetune", config.head_epochs, config.epochs, config.learning_rate * config.finetune_lr_factor,
                  False)]


MIN_AVERAGED_STEPS = 32  # an epoch shorter than this has too few steps to average over


def weight_average_momentum(config: FitConfig, steps_per_epoch: int) -> float:
    """The weight average's momentum, 0 when off: it spans at most about one epoch, so a run is not
    averaged with its first steps, and runs with epochs shorter than MIN_AVERAGED_STEPS train without it."""
    if not config.weight_ema or steps_per_epoch < MIN_AVERAGED_STEPS:
        return 0.0
    return min(config.weight_ema, 1.0 - 1.0 / steps_per_epoch)


def compile_model(model: keras.Model, config: FitConfig, stage: Stage, steps_per_epoch: int, jit: bool) -> None:
    rate = stage.learning_rate
    if config.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, (stage.last_epoch - stage.first_epoch) * steps_per_epoch)
    if config.loss == "focal":
        loss = keras.losses.CategoricalFocalCrossentropy(gamma=config.focal_gamma)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    else:
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    momentum = weight_average_momentum(config, steps_per_epoch)
    averaging = {"use_ema": True, "ema_momentum": momentum} if momentum else {}
    model.compile(optimizer=keras.optimizers.Adam(rate, **averaging), loss=loss, metrics=metrics, jit_compile=jit)
