"""Run configuration: dataclass defaults, then a named preset, then explicit command-line options."""
from __future__ import annotations

import dataclasses
import json
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tfbonemet.errors import ConfigError
from tfbonemet.vocab import (CROP_NAMES, INTENSITY_SCALES, JIT_MODES, LOSSES, LR_SCHEDULES, NORMALISATIONS,
                             PHANTOM_DIFFICULTIES, PRECISIONS, SAMPLINGS, STRATEGIES, TASKS, THRESHOLD_RULES)


@dataclasses.dataclass
class FitConfig:
    """Everything a training run depends on; saved as config.json in the run directory."""

    model: str = "two_view_net"
    model_options: dict = dataclasses.field(default_factory=dict)  # extra builder arguments
    task: str = "binary"  # binary (metastasis or not) | multiclass (4 classes)
    data: str = "phantom"  # "phantom" (built-in synthetic set) or "tfds:NAME[/CONFIG]" (a TFDS build)
    data_dir: str | None = None  # TFDS data_dir holding the prepared dataset
    manual_dir: str | None = None  # TFDS manual_dir: prepare the dataset from these files if not built yet
    num_studies: int = 320  # size of the synthetic set
    phantom_difficulty: str = "realistic"  # vocab.PHANTOM_DIFFICULTIES: finding contrast, mimics, counts, blur
    # model input per view; None: the data's typical study size, never upsampled (tasks.train.recipe.input_size)
    image_height: int | None = None
    image_width: int | None = None
    normalisation: str = "sqrt"
    # counts -> [0, 1]: "auto" reads 8-bit display-scaled images (JPEG/PNG crops) at their fixed full
    # scale 255 and counts (DICOM) per view at their 99.5th percentile; "percentile"; or a full-scale number
    intensity_scale: str | float = "auto"
    crop: str = "none"  # "thorax": keep the thoracic region of whole-body views (Lin et al. 2021)
    epochs: int = 30  # 10 -> 20 -> 30 epochs: pooled out-of-fold ROC AUC 0.922 -> 0.939 -> 0.949 on real crops
    batch_size: int = 16
    learning_rate: float = 1e-3
    class_weighting: bool = True
    loss: str = "crossentropy"  # crossentropy | focal (down-weights easy examples)
    focal_gamma: float = 2.0
    sampling: str = "natural"  # natural | balanced (equal class frequency per batch, no class weights)
    # tfbonemet.preprocessing.augment.AugmentConfig fields: mirror + small shift, the geometric
    # augmentation the published papers use for planar views; rotation, zoom, gain and re-noising are off
    # (opt in with --config or augmentation keys)
    augmentation: dict = dataclasses.field(default_factory=lambda: {"flip_left_right": True, "translation": 0.03})
    # momentum of an exponential moving average of the weights (Polyak averaging; 0 = off): validation,
    # the best-epoch choice and the saved model use the averaged weights (real BS-80K crops, 3-fold CV:
    # higher test ROC AUC than the raw weights in every fold measured; bench/README.md)
    weight_ema: float = 0.99
    lr_schedule: str = "cosine"  # cosine (decays to 0 over the epochs) | constant
    early_stopping: int = 8  # patience in epochs on validation AUC (0 = off): stops a run that has stalled
    threshold_rule: str = "max_f1"  # metrics.THRESHOLD_RULES: how the stored decision threshold is chosen
    target_sensitivity: float = 0.9  # with threshold_rule "sensitivity"
    # a referral band chosen on validation (tfbonemet.referral), at most one of: the share of studies answered,
    # or the sensitivity among the answered; studies inside it are labelled "refer". None: no band
    refer_coverage: float | None = None
    refer_sensitivity: float | None = None
    # test-time shift for the per-study uncertainty, a fraction of each side (tfbonemet.models.tta)
    uncertainty_shift: float = 0.015
    init_backbone: str | None = None  # pretrained backbone weights (`tfbonemet pretrain`) to fine-tune from
    head_epochs: int = 0  # with init_backbone: epochs training the head with the backbone frozen
    finetune_lr_factor: float = 0.1  # learning rate multiplier once the backbone is unfrozen
    precision: str = "auto"  # float32 | mixed_float16 | mixed_bfloat16 | auto (the fastest, timed; see execution)
    jit: str = "auto"  # on | off | auto (XLA on GPUs; on CPUs probed when precision is auto, else off)
    strategy: str = "default"  # default | mirrored | multi-worker (tf.distribute; batch_size is per replica)
    deterministic: bool = True  # deterministic tf.data order (reproducible runs)
    seed: int = 0
    output_dir: str = "runs"
    run_name: str | None = None

    def to_json(self) -> str:
        """config.json: everything but `manual_dir`, a source folder that may be named after a patient
        (once built, the dataset is found in `data_dir`, which the CLI records as an absolute path)."""
        values = dataclasses.asdict(self)
        values.pop("manual_dir")
        return json.dumps(values, indent=2, sort_keys=True)


FIELDS = {f.name for f in dataclasses.fields(FitConfig)}
DICT_FIELDS = ("model_options", "augmentation")  # merged key by key rather than replaced


def preset_names() -> list[str]:
    files = resources.files("tfbonemet") / "presets"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def preset_description(name: str) -> str:
    return str(_read_preset(name).get("description", "")).strip()


def _read_preset(name: str) -> dict[str, Any]:
    path = resources.files("tfbonemet") / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names()) or 'none'}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"preset file {path} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"preset file {path} must hold a mapping of FitConfig fields")
    return values


def load_preset(name: str) -> dict[str, Any]:
    """A preset's FitConfig values (its `description` removed)."""
    values = dict(_read_preset(name))
    values.pop("description", None)
    unknown = set(values) - FIELDS
    if unknown:
        raise ConfigError(f"preset {name!r} has unknown keys: {', '.join(sorted(unknown))}")
    return values


def load_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        values = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                          f"{str(exc).splitlines()[0]}") from None
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of configuration fields, "
                          f"not a {type(values).__name__}")
    unknown = set(values or {}) - FIELDS
    if unknown:
        raise ConfigError(f"config file {path} has unknown keys: {', '.join(sorted(unknown))}")
    return values or {}


def resolve(preset: str | None = None, overrides: dict[str, Any] | None = None) -> FitConfig:
    """Defaults <- preset <- overrides (None values in overrides mean "not given")."""
    values: dict[str, Any] = {}
    if preset:
        values.update(load_preset(preset))
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in FIELDS:
            raise ConfigError(f"unknown option {key!r}")
        if key in DICT_FIELDS:
            values[key] = {**values.get(key, {}), **value}
        else:
            values[key] = value
    return FitConfig(**values)


# ---- checks made before any work is done: unknown choices, wrong types and impossible values

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


def check(config: FitConfig, where: str = "configuration") -> None:
    """Each field's type, choice and range, and the fields' agreement with each other; the checks that
    need the model registry, the data sources or the augmentation are tfbonemet.run.validate's."""
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
