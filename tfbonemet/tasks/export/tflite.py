"""TFLite flatbuffers of the `preprocessed` signature, each carrying its own metadata.

TFLite files take the preprocessed inputs (fixed size, values in [0, 1]); the full-integer file
takes int8 inputs and returns int8 probabilities, with scale and zero point in its tensor details.
Every file embeds, under the flatbuffer metadata name `tfbonemet`, the JSON an edge user needs to
feed it: the preprocessing steps and their parameters, input names and shapes, class names and the
operating threshold (the same description metadata.json holds), so it can be used on its own.
The converter's failures are one ModelError naming the source and the first op it refused; its
native diagnostics (hundreds of lines of MLIR on stderr) are not shown.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from tfbonemet.data import datasets
from tfbonemet.errors import ConfigError, ModelError, TfbonemetError

TFLITE_VARIANTS = ("float32", "float16", "dynamic_int8", "int8")
METADATA_NAME = "tfbonemet"


def convert_tflite(saved_model: Path, variant: str, representative=None, source=None) -> bytes:
    """One TFLite variant of the `preprocessed` signature (from_saved_model: from_keras_model fails on Keras 3).

    A conversion that fails raises ModelError naming `source` (default: the SavedModel) and the cause.
    """
    try:
        with _native_stderr_silenced():
            return _convert(saved_model, variant, representative)
    except TfbonemetError:  # the calibration studies' own errors name their file
        raise
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError, ...
        raise ModelError(f"{source or saved_model}: TFLite conversion to {variant} failed: "
                         f"{converter_message(exc)}") from None


def converter_message(exc: Exception) -> str:
    """The first line of a converter error, its MLIR location (a long call-site chain) left out."""
    text = str(exc).strip() or type(exc).__name__
    lead, _, detail = text.partition("error: ")
    line = (detail or lead).splitlines()[0]
    if line.startswith("loc("):
        depth = 0
        for end, char in enumerate(line):
            depth += (char == "(") - (char == ")")
            if char == ")" and depth == 0:
                line = line[end + 1:].lstrip(": ")
                break
    lead = lead.split("<unknown>")[0].strip() if detail else ""
    return f"{lead} {line}".strip()


@contextlib.contextmanager
def _native_stderr_silenced():
    """File descriptor 2 into a discarded temporary file: MLIR writes its diagnostics there, not to sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _convert(saved_model: Path, variant: str, representative=None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["preprocessed"])
    if variant != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "int8":
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings():  # calibration runs TF's own deprecated interpreter
        warnings.simplefilter("ignore", UserWarning)
        return converter.convert()


def representative_dataset(run, samples: int, seed: int = 0):
    """Calibration inputs for full-integer quantisation: training studies through the run's preprocessor."""
    train = datasets.open_split(run.config, "train")
    if len(train) == 0:
        raise ConfigError("no training studies to calibrate the int8 model on")
    chosen = set(np.random.default_rng(seed).permutation(len(train))[:samples].tolist())

    def generate():
        for index, study in train.raw_studies(run.preprocessor.source_views):
            if index in chosen:
                yield {name: x[np.newaxis] for name, x in run.preprocessor.numpy(study).items()}
    return generate


def with_metadata(flatbuffer: bytes, description: dict) -> bytes:
    """The TFLite model with `description` (JSON) added as a named metadata buffer; graph and signatures untouched."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(description, sort_keys=True).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_metadata(path) -> dict:
    """The description embedded in a .tflite file by `with_metadata`."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else entry.name
        if name == METADATA_NAME:
            return json.loads(bytes(model.buffers[entry.buffer].data).decode())
    raise ModelError(f"{path}: carries no tfbonemet metadata (exported by an older version?)")
