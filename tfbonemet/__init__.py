"""tfbonemet: bone-metastasis classifiers for bone scintigraphy with TensorFlow / Keras 3.

Importing the package loads nothing heavy; `tfbonemet.load_model` loads a saved `.keras` model
with the package's custom layers registered (plain `keras.models.load_model` needs
`import tfbonemet.models.layers` first).
"""


def load_model(path):
    """A tfbonemet `.keras` model (safe mode), custom layers registered."""
    from tfbonemet.run import load_keras_model

    return load_keras_model(path)
