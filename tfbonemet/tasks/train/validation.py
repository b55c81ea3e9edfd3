"""A FitConfig checked before any work is done: unknown choices, wrong types and impossible values."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from tfbonemet.config import FitConfig
from tfbonemet.errors import ConfigError
from tfbonemet.vocab import (CROP_NAMES, INTENSITY_SCALES, JIT_MODES, LOSSES, LR_SCHEDULES, NORMALISATIONS,
                             PHANTOM_DIFFICULTIES, PRECISIONS, SAMPLINGS, STRATEGIES, TASKS, THRESHOLD_RULES)

MIN_IMAGE_SIDE = 32
PHANTOM_MIN_HEIGHT = 64  # tfbonemet.data.phantom draws no whole-body view shorter than this


def choices() -> dict[str, tuple[str, ...]]:
    from tfbonemet.models.registry import MODELS

    return {"task": tuple(TASKS), "precision": PRECISIONS, "jit": JIT_MODES, "strategy": STRATEGIES,
            "loss": LOSSES, "sampling": SAMPLINGS, "lr_schedule": LR_SCHEDULES, "model": tuple(sorted(MODELS)),
            "normalisation": NORMALISATIONS, "crop": CROP_NAMES, "threshold_rule": THRESHOLD_RULES,
            "phantom_difficulty": PHANTOM_DIFFICULTIES}


def check_types(config: FitConfig, where: str) -> None:
    """Each field holds the type its annotation names (a config file can hold anything)."""
    hints = typing.get_type_hints(FitConfig)
    for field in dataclasses.fields(FitConfig):
        value, hint = getattr(config, field.name), hints[field.name]
        allowed = typing.get_args(hint) or (hint,)
        allowed = tuple(typing.get_origin(a) or a for a in allowed)
        if float in allowed:
            allowed += (int,)
        if isinstance(value, bool) and bool not in allowed:
            allowed = ()
        if not isinstance(value, allowed):
            names = " or ".join("null" if a is type(None) else a.__name__ for a in allowed) or "a number"
            raise ConfigError(f"{where}: {field.name} must be {names}, got {value!r}")


def check_intensity_scale(value) -> None:
    if value in INTENSITY_SCALES:
        return
    try:
        positive = float(value) > 0
    except (TypeError, ValueError):
        positive = False
    if not positive:
        raise ConfigError(f"intensity_scale must be {' or '.join(INTENSITY_SCALES)} or a positive full-scale "
                          f"value such as 255, got {value!r}")


def check_referral(config: FitConfig) -> None:
    for name in ("refer_coverage", "refer_sensitivity"):
        value = getattr(config, name)
        if value is not None and not 0 < value <= 1:
            raise ConfigError(f"{name} must be in (0, 1], got {value}")
    if config.refer_coverage is not None and config.refer_sensitivity is not None:
        raise ConfigError("give refer_coverage or refer_sensitivity, not both: one band is chosen on validation")
    if config.task != "binary" and (config.refer_coverage is not None or config.refer_sensitivity is not None):
        raise ConfigError(f"a referral band needs the binary task (a band around the metastasis threshold), "
                          f"not {config.task!r}")
    if not 0 < config.uncertainty_shift <= 0.1:
        raise ConfigError(f"uncertainty_shift must be in (0, 0.1] of a side, got {config.uncertainty_shift}")


def validate(config: FitConfig, where: str = "configuration") -> None:
    check_types(config, where)
    for name, options in choices().items():
        if getattr(config, name) not in options:
            raise ConfigError(f"unknown {name} {getattr(config, name)!r}; choose one of {', '.join(options)}")
    for name in ("epochs", "batch_size", "num_studies"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config, name)}")
    if (config.image_height is None) != (config.image_width is None):
        raise ConfigError("give both image_height and image_width, or neither (the size then comes from the data)")
    for name in ("image_height", "image_width"):
        value = getattr(config, name)
        if value is not None and not MIN_IMAGE_SIDE <= value <= 4096:
            raise ConfigError(f"{name} must be between {MIN_IMAGE_SIDE} and 4096 pixels, got {value}")
    if config.data == "phantom" and config.image_height is not None and config.image_height < PHANTOM_MIN_HEIGHT:
        raise ConfigError(f"image size {config.image_height}x{config.image_width}: the built-in phantom draws "
                          f"whole-body views at least {PHANTOM_MIN_HEIGHT} pixels high; use --image-size "
                          f"{PHANTOM_MIN_HEIGHT} {config.image_width} or more, or your own data")
    for name in ("learning_rate", "finetune_lr_factor", "focal_gamma"):
        if not getattr(config, name) > 0:
            raise ConfigError(f"{name} must be positive, got {getattr(config, name)}")
    if config.learning_rate >= 10:
        raise ConfigError(f"learning_rate {config.learning_rate:g} would diverge; Adam rates are below 1")
    if not 0 < config.target_sensitivity <= 1:
        raise ConfigError(f"target_sensitivity must be in (0, 1], got {config.target_sensitivity}")
    check_referral(config)
    check_intensity_scale(config.intensity_scale)
    if not 0 <= config.weight_ema < 1:
        raise ConfigError(f"weight_ema must be in [0, 1) (0 = off; e.g. 0.99), got {config.weight_ema}")
    if config.early_stopping < 0 or config.head_epochs < 0:
        raise ConfigError("early_stopping and head_epochs must not be negative")
    if config.head_epochs >= config.epochs and config.init_backbone:
        raise ConfigError(f"head_epochs ({config.head_epochs}) must be below epochs ({config.epochs}) "
                          f"to leave epochs for fine-tuning the unfrozen backbone")
    if config.init_backbone and not Path(config.init_backbone).is_file():
        raise ConfigError(f"backbone weight file {config.init_backbone} does not exist")
    if config.run_name is not None and (not config.run_name or Path(config.run_name).name != config.run_name
                                        or config.run_name in (".", "..")):
        raise ConfigError(f"run name {config.run_name!r} must be a plain folder name (no '/' or '..')")
    from tfbonemet.data import datasets
    from tfbonemet.models.registry import check_options
    from tfbonemet.preprocessing.augment import make_augment

    check_options(config.model, config.model_options)
    datasets.check_source(config.data)
    make_augment(config.augmentation, config.normalisation)
