"""The three runners of `tfbonemet predict`: a run dir / .keras, an exported SavedModel, a .tflite file.

Every runner sees the run's own ScanPreprocessor: the Keras and TFLite runners apply it here, a
SavedModel carries it inside its `serving_default` signature; all label with the stored threshold.
A file is checked to be the kind its name says before a framework loads it, so a damaged or foreign
file is named as such rather than reported in the framework's words; an export is checked against the
digests recorded in its metadata.json before it is loaded.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tfbonemet.errors import ModelError
from tfbonemet.io.integrity import METADATA_JSON, verify
from tfbonemet.models.tta import OUTPUTS
from tfbonemet.run import ModelInfo, check_keras_file, model_inputs

TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, bytes 4-8 of every .tflite file


class KerasRunner:
    """A run directory or .keras file (loaded by tfbonemet.run.Run), computed in float32 like every export."""

    kind = "keras"

    def __init__(self, path):
        from tfbonemet.run import Run

        self.run = Run.load(path)
        self.run.model  # noqa: B018  (load now: a bad file fails before any study is read)
        self.info = self.run.info

    def outputs_preprocessed(self, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.run.predictor.predict_on_batch(model_inputs(self.run.predictor, x))
        return {name: np.asarray(out[name], np.float32) for name in OUTPUTS}

    def outputs(self, studies) -> dict[str, np.ndarray]:
        return self.outputs_preprocessed(self.info.preprocessor.batch(studies))

    def predict_preprocessed(self, x: dict[str, np.ndarray]) -> np.ndarray:
        return self.outputs_preprocessed(x)["probabilities"]

    def predict(self, studies):
        return self.outputs(studies)["probabilities"]


class SavedModelRunner:
    """An exported SavedModel: raw counts go to `serving_default`, which preprocesses them itself."""

    kind = "savedmodel"

    def __init__(self, path: Path):
        import tensorflow as tf

        self.info = _read_info(path / METADATA_JSON)
        try:
            self.signature = tf.saved_model.load(str(path)).signatures["serving_default"]
        except Exception as exc:  # TF raises several types for damaged or foreign SavedModels
            raise ModelError(f"cannot load SavedModel {path}: {_first_line(exc)}") from None

    def predict(self, studies):
        return self.outputs(studies)["probabilities"]

    def outputs(self, studies) -> dict[str, np.ndarray]:
        """Calls the signature once per run of equally sized studies (a batch needs one shape); an export
        from before the uncertainty output gives NaN there."""
        names = self.info.preprocessor.input_names
        out, start = [], 0
        while start < len(studies):
            shape = _shapes(studies[start], self.info.data_views)
            stop = start + 1
            while stop < len(studies) and _shapes(studies[stop], self.info.data_views) == shape:
                stop += 1
            feed = {name: np.stack([s[v] for s in studies[start:stop]])[..., np.newaxis].astype(np.float32)
                    for name, v in zip(names, self.info.data_views)}
            served = self.signature(**feed)
            probabilities = served["probabilities"].numpy()
            out.append({"probabilities": probabilities,
                        "uncertainty": served["uncertainty"].numpy() if "uncertainty" in served else
                        np.full(len(probabilities), np.nan, np.float32)})
            start = stop
        return {name: np.concatenate([o[name] for o in out]) for name in OUTPUTS}


class TFLiteRunner:
    """A .tflite flatbuffer from `tfbonemet export`: fixed-size preprocessed inputs, quantised or not."""

    kind = "tflite"

    def __init__(self, path: Path, info: ModelInfo | None = None, num_threads: int | None = None):
        self.path, self.num_threads = path, num_threads
        self.info = info or _read_info(_tflite_metadata(path))
        self._load(delegates=True)
        self.inputs = self.runner.get_input_details()
        self.output = self.runner.get_output_details()

    def _load(self, delegates: bool) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=self.num_threads,
                                           experimental_op_resolver_type=resolver)
            self.runner = self.interpreter.get_signature_runner()
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for a damaged flatbuffer
            raise ModelError(f"cannot load TFLite model {self.path}: {_first_line(exc)}") from None
        self.delegates = delegates

    def predict_preprocessed(self, x: dict[str, np.ndarray]) -> np.ndarray:
        return self.outputs_preprocessed(x)["probabilities"]

    def outputs(self, studies) -> dict[str, np.ndarray]:
        return self.outputs_preprocessed(self.info.preprocessor.batch(studies))

    def outputs_preprocessed(self, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Probabilities and uncertainty (NaN from a file exported before the uncertainty output)."""
        feed = {name: _quantise(x[name], d) for name, d in self.inputs.items()}
        try:
            out = self.runner(**feed)
        except RuntimeError as exc:
            # XNNPACK (LiteRT's default CPU delegate) cannot prepare some quantised graphs on some
            # CPUs (seen: dscint's full-integer file on an AVX512 EPYC); LiteRT's own kernels run them
            if not (self.delegates and "XNNPACK" in str(exc)):
                raise
            self._load(delegates=False)
            out = self.runner(**feed)
        probabilities = _dequantise(out["probabilities"], self.output["probabilities"])
        return {"probabilities": probabilities,
                "uncertainty": _dequantise(out["uncertainty"], self.output["uncertainty"]) if "uncertainty" in out
                else np.full(len(probabilities), np.nan, np.float32)}

    def predict(self, studies):
        return self.outputs(studies)["probabilities"]


def _quantise(x: np.ndarray, detail: dict) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if detail["dtype"] == np.float32:
        return x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def _dequantise(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def _shapes(study: dict, views) -> tuple:
    return tuple(study[v].shape for v in views)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _read_info(path: Path) -> ModelInfo:
    try:
        return ModelInfo.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ModelError(f"{path} is missing; export the model with `tfbonemet export`") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path} cannot be read: {type(exc).__name__}: {exc}") from None


def _check_tflite(path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from None
    if head[4:8] != TFLITE_IDENTIFIER:
        raise ModelError(f"{path}: not a TFLite model (no TFL3 flatbuffer identifier); damaged or another kind of file")


def _tflite_metadata(path: Path) -> Path:
    """metadata.json of the export a .tflite belongs to: beside it, or in the version folder above."""
    for folder in (path.parent, path.parent.parent):
        if (folder / METADATA_JSON).is_file():
            return folder / METADATA_JSON
    return path.parent / METADATA_JSON


def load_runner(path) -> KerasRunner | SavedModelRunner | TFLiteRunner:
    """A runner for a run dir, .keras file, SavedModel (or TF Serving model folder), or .tflite file."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such model file or folder")
    if path.is_dir():
        versions = sorted((p for p in path.iterdir() if p.name.isdigit() and (p / "saved_model.pb").is_file()),
                          key=lambda p: int(p.name))
        if (path / "saved_model.pb").is_file() or versions:
            version = path if (path / "saved_model.pb").is_file() else versions[-1]
            verify(version)  # a changed or tampered file is refused before TF runs its graph (docs/security.md)
            return SavedModelRunner(version)
        if (path / "model.keras").is_file() or (path / "config.json").is_file():
            if (path / "model.keras").is_file():
                check_keras_file(path / "model.keras")
            return KerasRunner(path)
        raise ModelError(f"{path} is neither a run directory (model.keras), a SavedModel (saved_model.pb) "
                         f"nor a TF Serving model folder (numbered versions)")
    if path.suffix == ".keras":  # a run's own model.keras keeps its run's preprocessing (config.json)
        check_keras_file(path)
        in_run = path.name == "model.keras" and (path.parent / "config.json").is_file()
        return KerasRunner(path.parent if in_run else path)
    if path.suffix == ".tflite":
        _check_tflite(path)
        verify(path)
        return TFLiteRunner(path)
    raise ModelError(f"{path}: not a model; expected a run directory, .keras, SavedModel folder or .tflite")


