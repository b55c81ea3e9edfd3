"""Name -> builder registry, so configs, presets and the CLI pick models by name."""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Callable

import keras

from tfbonemet.errors import ConfigError
from tfbonemet.models import dscint, finetune, transfer, two_view


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., keras.Model]
    inputs: str  # "two_view" (anterior + posterior) or "single" (image)
    paper: str
    default_image_size: tuple[int, int]
    default_channels: int = 1
    gradcam_layers: tuple[str, ...] = ()  # per view, in input order: the last spatial feature layer
    default_num_classes: int = 2
    pretrainable: bool = False  # has a backbone that load_backbone_weights / freeze_backbone act on

    @property
    def input_names(self) -> tuple[str, ...]:
        return two_view.VIEWS if self.inputs == "two_view" else ("image",)


MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    MODELS[spec.name] = spec
    return spec


register(ModelSpec("two_view_net", two_view.build_two_view_net, "two_view",
                   "Guo et al. 2023, two-view aggregation of anterior and posterior scans", (512, 128),
                   gradcam_layers=("anterior_features", "posterior_features"), pretrainable=True))
register(ModelSpec("dscint", dscint.build_dscint, "single",
                   "Lin et al. 2021, Med. Phys.: Dscint, self-defined CNN with hybrid attention", (512, 128),
                   gradcam_layers=(dscint.LAST_CONV,), default_num_classes=4))
_TRANSFER_PAPER = "Lin et al. 2021, Sci. Rep.; Wang et al. 2018: ImageNet {} fine-tuned"
for _backbone, _label in (("vgg16", "VGG16"), ("resnet50", "ResNet50"), ("densenet121", "DenseNet121"),
                          ("xception", "Xception"), ("inception_v3", "InceptionV3"),
                          ("efficientnetv2_s", "EfficientNetV2-S")):
    register(ModelSpec(_backbone, functools.partial(transfer.build_transfer_classifier, backbone=_backbone),
                       "single", _TRANSFER_PAPER.format(_label), (512, 128),
                       gradcam_layers=(transfer.BACKBONES[_backbone].last_conv,), pretrainable=True))
register(ModelSpec("yim_vgg16", transfer.build_yim_vgg16, "single",
                   "Yim et al. 2022: VGG16 conv base with a new fully connected head", (512, 128),
                   gradcam_layers=(transfer.BACKBONES["vgg16"].last_conv,), pretrainable=True))


def input_convention(name: str) -> str:
    return _spec(name).inputs


def gradcam_layers(name: str) -> tuple[str, ...]:
    """Grad-CAM target layer names of a registered model, one per input view."""
    return _spec(name).gradcam_layers


def _spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name]


def check_options(name: str, options) -> None:
    """Fail before any work is done when a model's builder does not take an option."""
    accepted = inspect.signature(_spec(name).builder).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(f"model {name!r} does not take option(s) {', '.join(unknown)}; "
                          f"it takes {', '.join(accepted)}")


def build_model(name: str, backbone_weights=None, freeze_backbone: bool = False, **config) -> keras.Model:
    """Build a registered model; `config` goes to its builder (image_size, num_classes, ...).

    `backbone_weights` (a local file) loads pre-trained backbone weights; `freeze_backbone`
    freezes the backbone for the first, head-only stage of fine-tuning (see finetune).
    """
    check_options(name, config)
    model = _spec(name).builder(**config)
    if backbone_weights:
        finetune.load_backbone_weights(model, backbone_weights)
    if freeze_backbone:
        finetune.freeze_backbone(model)
    return model
