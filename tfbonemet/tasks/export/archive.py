"""The SavedModel: the Keras model wrapped in three signatures, the run's preprocessing inside.

  serving_default  raw counts, float32 (B, H, W, 1), any H and W, inputs `anterior`+`posterior` or `image`
  serving_bytes    PNG/JPEG bytes, tf.string (B,), same input names (REST: {"b64": ...})
  preprocessed     normalised float32 (B, image_height, image_width, 1); the TFLite conversion source
All return `probabilities` (B, classes) float32, `uncertainty` (B,) float32 (how far any class
probability moves under small test-time shifts: tfbonemet.models.tta) and `label` (B,) int64: for
binary models P(metastasis) >= the run's stored operating threshold, and 2 (`refer`) inside the
run's referral band if it has one; else the most probable class.
"""
from __future__ import annotations

from tfbonemet.run import ModelInfo, model_inputs

SIGNATURES = ("serving_default", "serving_bytes", "preprocessed")


def build_archive(model, info: ModelInfo):
    """The Keras model wrapped in the three signatures, as a `keras.export.ExportArchive`.

    `model` is a run's `predictor`: it returns {"probabilities", "uncertainty"}.
    """
    import keras
    import tensorflow as tf

    preprocessor = info.preprocessor
    names = preprocessor.input_names
    view_of = dict(zip(names, info.data_views))
    height, width = preprocessor.image_size

    def outputs(x):
        out = model(model_inputs(model, x), training=False)
        probabilities = tf.cast(out["probabilities"], tf.float32)
        if info.threshold is not None and probabilities.shape[-1] == 2:
            label = tf.cast(probabilities[:, 1] >= info.threshold, tf.int64)
            if info.band is not None:
                inside = (probabilities[:, 1] > info.band[0]) & (probabilities[:, 1] < info.band[1])
                label = tf.where(inside, tf.constant(2, tf.int64), label)
        else:
            label = tf.argmax(probabilities, axis=-1)
        return {"probabilities": probabilities, "uncertainty": tf.cast(out["uncertainty"], tf.float32),
                "label": label}

    def from_counts(features):
        return preprocessor({view_of[n]: features[n] for n in names})

    def serve(features):
        return outputs(from_counts(features))

    def serve_bytes(features):
        def one(encoded):
            counts = {n: tf.cast(tf.io.decode_image(encoded[n], channels=1, dtype=tf.uint16,
                                                    expand_animations=False), tf.float32) for n in names}
            return from_counts(counts)
        fixed = {n: tf.TensorSpec((height, width, 1), tf.float32) for n in names}
        return outputs(tf.map_fn(one, features, fn_output_signature=fixed))

    def spec(shape, dtype):
        return {n: tf.TensorSpec(shape, dtype, name=n) for n in names}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[spec((None, None, None, 1), tf.float32)])
    archive.add_endpoint("serving_bytes", serve_bytes, input_signature=[spec((None,), tf.string)])
    archive.add_endpoint("preprocessed", outputs,
                         input_signature=[spec((None, height, width, 1), tf.float32)])
    return archive
