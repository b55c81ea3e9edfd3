"""Model families, one builder module each; build any by name with `build_model` (see registry.MODELS).

Importing this package loads no Keras: builders are imported when a model is built. Loading a
saved model needs the custom layers registered first: `tfbonemet.load_model` does that.
"""
from tfbonemet.models.build import build_model
from tfbonemet.models.registry import MODELS, gradcam_layers, input_convention
from tfbonemet.models.walk import all_layers

__all__ = ["MODELS", "all_layers", "build_model", "gradcam_layers", "input_convention"]
