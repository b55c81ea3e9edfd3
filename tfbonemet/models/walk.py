"""Walking a built model's layers, nested models included. Imports nothing from the package, so any
module (batch normalisation, CAMs) can use it without an import cycle."""


def all_layers(model):
    """Every layer of `model`, the layers of nested models (a shared backbone, say) included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)
