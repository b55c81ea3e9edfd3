"""Pre-trained backbone weights and the fine-tuning plan (Keras transfer-learning guide).

Plan: build, `load_backbone_weights`, `freeze_backbone` and train the head; then `unfreeze` the
top of the backbone and train again at a low learning rate (about 1e-5). Recompile after each
change: Keras reads `trainable` when the train step is compiled. BatchNormalization layers stay
frozen throughout, which in Keras 3 also keeps them in inference mode, so a small scan batch
cannot overwrite the moving statistics learnt on ImageNet or chest X-rays.
"""
from __future__ import annotations

import math
import warnings
import zipfile
from pathlib import Path

import keras

from tfbonemet.errors import ModelError
from tfbonemet.models import transfer, two_view

WEIGHT_SUFFIXES = (".keras", ".weights.h5", ".h5")


def backbone_parts(model: keras.Model) -> list[keras.Model]:
    """The model's pre-trainable backbones: one per branch of a two-view net, or a transfer backbone."""
    part = transfer.backbone_part(model)
    parts = [part] if part is not None else two_view.backbones(model)
    if not parts:
        raise ModelError(f"model {model.name!r} has no pre-trainable backbone")
    return parts


def _own_layers(part: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in part.layers if not isinstance(layer, keras.layers.InputLayer)]


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Backbone layers in graph order, branch after branch (input layers excluded)."""
    return [layer for part in backbone_parts(model) for layer in _own_layers(part)]


def _weighted(model):
    return [layer for layer in model.layers if layer.weights]


def copy_weights(source: keras.Model, target: keras.Model, origin: str) -> None:
    """Copy layer by layer in graph order after checking every shape, so a mismatch changes nothing."""
    src, dst = _weighted(source), _weighted(target)
    if len(src) != len(dst):
        raise ModelError(f"{origin}: holds {len(src)} layers with weights, the backbone of the model has {len(dst)}; "
                         f"was it saved from another architecture?")
    pairs = []
    for a, b in zip(src, dst):
        values = a.get_weights()
        got, want = [v.shape for v in values], [tuple(w.shape) for w in b.weights]
        if got != want:
            raise ModelError(f"{origin}: layer {a.name!r} has weights of shapes {got}, but {b.name!r} in the model "
                             f"needs {want}")
        pairs.append((b, values))
    for layer, values in pairs:
        layer.set_weights(values)


def _read_source(path: Path, like: keras.Model) -> keras.Model:
    """A model holding the file's backbone weights, in the layout of `like`."""
    try:
        if path.name.endswith(".keras"):
            saved = keras.models.load_model(path, compile=False)
            part = transfer.backbone_part(saved)
            return part if part is not None else (two_view.backbones(saved) or [saved])[0]
        source = keras.models.clone_model(like)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns per missing group before raising on the mismatch
            source.load_weights(path)
        return source
    except (ValueError, KeyError, OSError, TypeError, zipfile.BadZipFile) as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()][:2] or [type(exc).__name__]
        raise ModelError(f"{path}: cannot load as weights for this backbone ({' '.join(lines)})") from None


def load_backbone_weights(model: keras.Model, path) -> keras.Model:
    """Load pre-trained backbone weights from a local file into every backbone of `model`.

    Accepts the bare backbone's weights (`.weights.h5`, or the legacy `.h5` of keras.applications
    ImageNet files: `*_notop.h5`), or a `.keras` file holding the backbone alone or a tfbonemet model
    of the same family (pre-trained on chest X-rays, say). A two-view net gets the same weights in
    both branches. Raises ModelError if the file is missing or does not match.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"backbone weight file {path} does not exist")
    if not path.name.endswith(WEIGHT_SUFFIXES):
        raise ModelError(f"backbone weight file {path} must end in {', '.join(WEIGHT_SUFFIXES)}")
    parts = backbone_parts(model)
    source = _read_source(path, parts[0])
    for part in parts:
        copy_weights(source, part, str(path))
    return model


def freeze_backbone(model: keras.Model) -> keras.Model:
    """Stage 1: only the head (and a channel adapter) train."""
    for layer in backbone_layers(model):
        layer.trainable = False
    return model


def unfreeze(model: keras.Model, from_layer: str | None = None, fraction: float | None = None) -> keras.Model:
    """Stage 2: make each backbone trainable from `from_layer` (a layer name) or for its top `fraction` of layers.

    Layers below stay frozen, and every BatchNormalization layer stays frozen (inference mode).
    """
    if (from_layer is None) == (fraction is None):
        raise ModelError("unfreeze needs exactly one of from_layer or fraction")
    if fraction is not None and not 0 < fraction <= 1:
        raise ModelError(f"fraction must be in (0, 1], got {fraction}")
    for part in backbone_parts(model):
        stack = _own_layers(part)
        names = [layer.name for layer in stack]
        if from_layer is not None and from_layer not in names:
            raise ModelError(f"layer {from_layer!r} is not in the backbone of {model.name!r}")
        start = names.index(from_layer) if from_layer is not None else len(stack) - math.ceil(fraction * len(stack))
        for index, layer in enumerate(stack):
            layer.trainable = index >= start and not isinstance(layer, keras.layers.BatchNormalization)
    return model
