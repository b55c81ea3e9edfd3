"""Name -> builder registry, so configs, presets and the CLI pick models by name.

Builders are named as `module:function` and imported on first use, so listing models (the CLI's
--help, config validation) does not load Keras or TensorFlow. Building one by name is
tfbonemet.models.build.build_model.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Callable

from tfbonemet.errors import ConfigError
from tfbonemet.vocab import IMAGE, VIEWS


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    builder_path: str  # "module:function"
    inputs: str  # "two_view" (anterior + posterior) or "single" (image)
    paper: str
    default_image_size: tuple[int, int]
    default_channels: int = 1
    gradcam_layers: tuple[str, ...] = ()  # per view, in input order: the last spatial feature layer
    default_num_classes: int = 2
    pretrainable: bool = False  # has a backbone that load_backbone_weights / freeze_backbone act on
    builder_options: tuple = ()  # fixed (key, value) arguments, e.g. which ImageNet backbone

    @property
    def input_names(self) -> tuple[str, ...]:
        return VIEWS if self.inputs == "two_view" else (IMAGE,)

    @property
    def builder(self) -> Callable:
        module, function = self.builder_path.split(":")
        return getattr(importlib.import_module(module), function)


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    MODELS[spec.name] = spec
    return spec


register(ModelSpec("two_view_net", "tfbonemet.models.two_view:build_two_view_net", "two_view",
                   "Guo et al. 2023, two-view aggregation of anterior and posterior scans", (512, 128),
                   gradcam_layers=("anterior_features", "posterior_features"), pretrainable=True))
register(ModelSpec("dscint", "tfbonemet.models.dscint:build_dscint", "single",
                   "Lin et al. 2021, Med. Phys.: Dscint, self-defined CNN with hybrid attention", (512, 128),
                   gradcam_layers=("conv6",), default_num_classes=4))
_TRANSFER_PAPER = "Lin et al. 2021, Sci. Rep.; Wang et al. 2018: ImageNet {} fine-tuned"
# (registry name, paper label, last spatial layer: transfer.BACKBONES[name].last_conv, checked by a test)
for _backbone, _label, _last in (("vgg16", "VGG16", "block5_conv3"), ("resnet50", "ResNet50", "conv5_block3_out"),
                                 ("densenet121", "DenseNet121", "relu"), ("xception", "Xception", "block14_sepconv2_act"),
                                 ("inception_v3", "InceptionV3", "mixed10"),
                                 ("efficientnetv2_s", "EfficientNetV2-S", "top_activation")):
    register(ModelSpec(_backbone, "tfbonemet.models.transfer:build_transfer_classifier", "single",
                       _TRANSFER_PAPER.format(_label), (512, 128), gradcam_layers=(_last,), pretrainable=True,
                       builder_options=(("backbone", _backbone),)))
register(ModelSpec("yim_vgg16", "tfbonemet.models.transfer:build_yim_vgg16", "single",
                   "Yim et al. 2022: VGG16 conv base with a new fully connected head", (512, 128),
                   gradcam_layers=("block5_conv3",), pretrainable=True))


def input_convention(name: str) -> str:
    return spec_of(name).inputs


def gradcam_layers(name: str) -> tuple[str, ...]:
    """Grad-CAM target layer names of a registered model, one per input view."""
    return spec_of(name).gradcam_layers


def spec_of(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name]


def check_options(name: str, options) -> None:
    """Fail before any work is done when a model's builder does not take an option."""
    spec = spec_of(name)
    accepted = [p for p in inspect.signature(spec.builder).parameters if p not in dict(spec.builder_options)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"model {name!r} does not take option(s) {', '.join(unknown)}; "
                          f"it takes {', '.join(accepted)}")
    defaults = {p.name: p.default for p in inspect.signature(spec.builder).parameters.values()}
    for key, value in options.items():
        wanted = _option_kind(defaults.get(key, inspect.Parameter.empty), value)
        if wanted:
            raise ConfigError(f"model option {key}={value!r}: {key} must be {wanted}")


def _option_kind(default, value) -> str | None:
    """What an option given as `value` should be, judged by its builder default; None when it fits."""
    def count(v, least=0):
        return isinstance(v, int) and not isinstance(v, bool) and v >= least
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int):
        return None if count(value) else "a whole number, 0 or more"
    if isinstance(default, float):
        fits = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
        return None if fits else "a number, 0 or more"
    if isinstance(default, (tuple, list)):
        fits = isinstance(value, (list, tuple)) and value and all(count(v, 1) for v in value)
        return None if fits else "a list of positive whole numbers such as [16,32,64]"
    if isinstance(default, str):  # a word, or a whole number where the word is "auto"
        return None if isinstance(value, str) or count(value, 1) else "a word"
    return None
