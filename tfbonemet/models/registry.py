"""Name -> builder registry, so configs, presets and the CLI pick models by name."""
from __future__ import annotations

import dataclasses
from typing import Callable

import keras

from tfbonemet.models import two_view


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., keras.Model]
    inputs: str  # "two_view" (anterior + posterior) or "single" (image)
    paper: str
    default_image_size: tuple[int, int]
    default_channels: int = 1


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    MODELS[spec.name] = spec
    return spec


register(ModelSpec("two_view_net", two_view.build_two_view_net, "two_view",
                   "Guo et al. 2023, two-view aggregation of anterior and posterior scans", (512, 128)))


def input_convention(name: str) -> str:
    return _spec(name).inputs


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(name: str, **config) -> keras.Model:
    """Build a registered model; `config` goes to its builder (image_size, num_classes, ...)."""
    return _spec(name).builder(**config)
