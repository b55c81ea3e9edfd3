"""Build a registered model by name: its builder, then fused batch normalisation and the backbone options."""
from __future__ import annotations

from tfbonemet.errors import ConfigError
from tfbonemet.models.registry import check_options, spec_of


def build_model(name: str, backbone_weights=None, freeze_backbone: bool = False, **config):
    """Build a registered model; `config` goes to its builder (image_size, num_classes, ...).

    `backbone_weights` (a local file) loads pre-trained backbone weights; `freeze_backbone`
    freezes the backbone for the first, head-only stage of fine-tuning (see finetune). Batch
    normalisation runs through TensorFlow's fused kernel (see batch_norm).
    """
    from tfbonemet.models import finetune
    from tfbonemet.models.batch_norm import fuse_batch_norm

    check_options(name, config)
    spec = spec_of(name)
    try:
        model = spec.builder(**dict(spec.builder_options), **config)
    except ValueError as exc:  # a builder's own check of an option's value
        raise ConfigError(f"model {name!r}: {exc}") from None
    model = fuse_batch_norm(model)
    if backbone_weights:
        finetune.load_backbone_weights(model, backbone_weights)
    if freeze_backbone:
        finetune.freeze_backbone(model)
    return model
