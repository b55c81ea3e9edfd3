"""Model families; build any by name with `build_model` (see registry.MODELS)."""
from tfbonemet.models.finetune import freeze_backbone, load_backbone_weights, unfreeze
from tfbonemet.models.registry import MODELS, build_model, gradcam_layers, input_convention

__all__ = ["MODELS", "build_model", "freeze_backbone", "gradcam_layers", "input_convention",
           "load_backbone_weights", "unfreeze"]
