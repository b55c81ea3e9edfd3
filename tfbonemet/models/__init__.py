"""Model families; build any by name with `build_model` (see registry.MODELS)."""
from tfbonemet.models.registry import MODELS, build_model, input_convention

__all__ = ["MODELS", "build_model", "input_convention"]
