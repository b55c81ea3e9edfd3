"""`tfbonemet pretrain`: train a model's backbone on chest X-rays, for fine-tuning on bone scans.

Scintigraphy sets are a few hundred patients; a backbone that has first learnt radiograph
structure on a larger chest X-ray set fine-tunes better (the recipe of Guo et al. 2023, two-view). The
pre-training network is the backbone of the chosen registered model with a fresh pooling and
softmax head on one `image` input; its run directory's backbone.keras is what
`tfbonemet fit --init-backbone` (models.finetune.load_backbone_weights) reads.
"""
from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from tfbonemet.config import FitConfig
from tfbonemet.data import datasets
from tfbonemet.errors import ConfigError
from tfbonemet.io.atomic import check_writable
from tfbonemet.models import MODELS, build_model, finetune, input_convention
from tfbonemet.run import preprocessor_for, validate
from tfbonemet.tasks.train.recipe import Recipe
from tfbonemet.tasks.train.plan import make_plan
from tfbonemet.tasks.train.trainer import run_plan

BACKBONE_FILE = "backbone.keras"
CHEST_XRAY = "chest_xray"  # tfds_builders/chest_xray


def pretraining_model(config: FitConfig, num_classes: int) -> keras.Model:
    """The backbone of `config.model` under a new head: the registered single-image model itself, or,
    for a two-view model, its (shared) view backbone on one image input."""
    size = (config.image_height, config.image_width)
    if input_convention(config.model) != "two_view":
        return build_model(config.model, image_size=size, num_classes=num_classes, **config.model_options)
    backbone = finetune.backbone_parts(build_model(config.model, image_size=size, **config.model_options))[0]
    image = keras.Input(shape=(*size, 1), name="image")
    x = layers.GlobalAveragePooling2D(name="pretrain_pool")(backbone(image))
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(image, outputs, name=f"{config.model}_pretrain")


def pretrain(config: FitConfig, log=print) -> Path:
    """Train the backbone of `config.model` on `config.data` (a chest_xray TFDS build); returns the run dir."""
    if (datasets.tfds_name(config.data) or "").split("/")[0] != CHEST_XRAY:
        raise ConfigError(f"pre-training needs a chest X-ray TFDS dataset (tfds:{CHEST_XRAY}), got {config.data!r}")
    if not config.image_height:
        raise ConfigError("pre-training needs an explicit image size (--image-size H W)")
    validate(config)
    check_writable(config.output_dir)  # before the data are read or built
    if not MODELS[config.model].pretrainable:
        raise ConfigError(f"model {config.model!r} has no backbone to pre-train")
    train_split, val_split = datasets.open_split(config, "train"), datasets.open_split(config, "validation")
    recipe = Recipe(lambda: pretraining_model(config, len(train_split.class_names)), "image", None,
                    train_split.class_names, model_file=BACKBONE_FILE)
    preprocessor = preprocessor_for(config, "image", (config.image_height, config.image_width))
    run_dir = run_plan(make_plan(config, recipe, preprocessor, train_split, val_split, log), log)
    log(f"Backbone for `tfbonemet fit --init-backbone`: {run_dir / BACKBONE_FILE}")
    return run_dir
