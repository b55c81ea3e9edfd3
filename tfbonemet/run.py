"""Run: what `fit` leaves behind and every other task loads — config, preprocessor, model, threshold, metrics.

A run directory holds config.json (the resolved FitConfig), preprocessor.json (the
ScanPreprocessor the model was trained behind), model.keras, metrics.json (validation figures and
the operating threshold chosen on validation), history.csv and TensorBoard logs. Evaluate, cv,
explain, export and predict all go through `Run.load`, so they prepare a study exactly as
training did and label it with the same threshold.

Whatever precision trained a model, everything after training runs it in float32: `Run.model` is
its `serving_model`, the float32 rebuild with the same weights, and `fit` chooses the stored
threshold on that model's validation probabilities. So the threshold, evaluate's figures,
calibration, predict, explanations and every exported artefact (whose parity is checked against
this model) are computed on the same numbers the SavedModel serves.
"""
from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np

from tfbonemet.config import FitConfig, check, resolve
from tfbonemet.errors import ConfigError, ModelError
from tfbonemet.preprocessing import ScanPreprocessor
from tfbonemet.referral import referred
from tfbonemet.vocab import ANTERIOR, INTENSITY_SCALES, REFER, TASKS, VIEWS, model_input_names

CONFIG_JSON, PREPROCESSOR_JSON, MODEL_FILE, METRICS_JSON = "config.json", "preprocessor.json", "model.keras", \
    "metrics.json"
SERVING_PRECISION = "float32"


def read_config(run_dir) -> FitConfig:
    """The configuration a run was trained with; a damaged config.json is one clear error."""
    path = Path(run_dir) / CONFIG_JSON
    try:
        values = json.loads(path.read_text())
        config = FitConfig(**values)
    except FileNotFoundError:
        raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG_JSON})") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} cannot be read: {exc}") from None
    validate(config, where=str(path))  # the same checks fit applies
    return config


def validate(config: FitConfig, where: str = "configuration") -> None:
    """A FitConfig checked before any work is done: its fields (config.check), then the model's options,
    the data source and the augmentation, which the layers below define."""
    from tfbonemet.data import datasets
    from tfbonemet.models.registry import check_options
    from tfbonemet.preprocessing.augment import make_augment

    check(config, where)
    check_options(config.model, config.model_options)
    datasets.check_source(config.data)
    make_augment(config.augmentation, config.normalisation)


def check_keras_file(path: Path) -> None:
    """A .keras file is a zip archive holding config.json; anything else is not a Keras model file."""
    try:
        with zipfile.ZipFile(path) as archive:
            ok = "config.json" in archive.namelist()
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file") from None
    except (OSError, zipfile.BadZipFile, ValueError):
        ok = False
    if not ok:
        raise ModelError(f"{path}: not a Keras model file (not a .keras archive with config.json); "
                         f"damaged, truncated or another kind of file")


def load_keras_model(path: Path):
    """A .keras file in safe mode, with tfbonemet's custom layers registered first."""
    import keras

    import tfbonemet.models.layers  # noqa: F401  (registers every custom layer)

    check_keras_file(path)
    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as exc:  # keras raises many types for a corrupt or foreign file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot load model {path}: not a readable Keras model file ({first})") from None


def training_precision(model) -> str:
    """The dtype policy a model computes in: a mixed policy's name if any layer has one, else float32."""
    from tfbonemet.models.walk import all_layers

    return next((layer.dtype_policy.name for layer in all_layers(model)
                 if layer.dtype_policy.compute_dtype != "float32"), "float32")


def serving_model(model):
    """The model every task after training runs: `model` itself if it computes in float32, else a float32
    rebuild with the same weights.

    Mixed precision keeps float32 variables, so the rebuild carries the trained weights unchanged;
    only the computation is float32. The TFLite converter has no bfloat16 kernels, and low-precision
    maps break SciPy (CAM upsampling); float32 is also what an exported model serves anywhere. Every
    layer's policy, nested backbones' included, is set to float32.
    """
    import keras

    if training_precision(model) == SERVING_PRECISION:
        return model

    def float32_policies(node):
        if isinstance(node, dict):
            return {key: SERVING_PRECISION if key == "dtype" and _is_policy(value) else float32_policies(value)
                    for key, value in node.items()}
        if isinstance(node, list):
            return [float32_policies(item) for item in node]
        return node

    clone = keras.saving.deserialize_keras_object(float32_policies(keras.saving.serialize_keras_object(model)))
    clone.set_weights(model.get_weights())
    return clone


def _is_policy(value) -> bool:
    """A serialised dtype policy: a policy name, or a DTypePolicy object's config."""
    return (isinstance(value, str) and value.startswith("mixed_")) or \
        (isinstance(value, dict) and "Policy" in str(value.get("class_name", "")))


@dataclasses.dataclass
class Run:
    """A trained model with everything that decides how it reads a study and calls a result."""

    config: FitConfig
    preprocessor: ScanPreprocessor
    model_path: Path
    path: Path | None = None  # the run directory (None for a bare .keras file)
    metrics: dict = dataclasses.field(default_factory=dict)
    _model: object = None
    _training_precision: str | None = None
    _predictor: object = None

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(TASKS[self.config.task])

    @property
    def model(self):
        """The serving model: model.keras computed in float32 (`serving_model`), whatever trained it."""
        if self._model is None:
            self._serve(load_keras_model(self.model_path))
        return self._model

    @property
    def training_precision(self) -> str:
        """The precision model.keras was trained in (mixed_bfloat16, mixed_float16 or float32)."""
        self.model  # noqa: B018  (loading records it)
        return self._training_precision

    @property
    def serving_precision(self) -> str:
        return SERVING_PRECISION

    def _serve(self, trained) -> None:
        self._check_model(trained)
        self._training_precision = training_precision(trained)
        self._model = serving_model(trained)

    @property
    def threshold(self) -> float | None:
        """The stored decision threshold on P(metastasis) for binary runs (0.5 if none was chosen)."""
        if len(self.classes) != 2:
            return None
        return float(self.metrics.get("operating_point", {}).get("threshold", 0.5))

    @property
    def band(self) -> tuple[float, float] | None:
        """The referral band on P(metastasis) chosen on validation (tfbonemet.referral), or None."""
        chosen = self.metrics.get("referral") or {}
        return tuple(chosen["band"]) if chosen.get("band") else None

    @property
    def temperature(self) -> float | None:
        """The temperature fitted on validation when the run finished (reported, not applied), or None."""
        return self.metrics.get("calibration", {}).get("temperature")

    @property
    def predictor(self):
        """The serving model with its per-study uncertainty output (tfbonemet.models.tta): what evaluate,
        predict and every export run."""
        if self._predictor is None:
            from tfbonemet.models.tta import with_uncertainty

            self._predictor = with_uncertainty(self.model, self.preprocessor.image_size, self.config.uncertainty_shift)
        return self._predictor

    @property
    def info(self) -> "ModelInfo":
        """What a runner or an export needs besides the weights."""
        return ModelInfo(self.preprocessor, self.classes, self.threshold, self.band)

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.info.label_names

    def labels_of(self, probabilities: np.ndarray) -> np.ndarray:
        """Indices into `label_names`: P(metastasis) >= the stored threshold for binary runs (refer inside
        the referral band), argmax otherwise."""
        return decide(probabilities, self.threshold, self.band)

    def _check_model(self, model) -> None:
        names = model_input_names(model)
        if sorted(names) != sorted(self.preprocessor.input_names):
            raise ModelError(f"{self.model_path} takes inputs {names} but its preprocessor feeds "
                             f"{list(self.preprocessor.input_names)}")
        size = tuple(model.inputs[0].shape[1:3])
        if size != self.preprocessor.image_size:
            raise ModelError(f"{self.model_path} takes {size[0]}x{size[1]} images but its preprocessor makes "
                             f"{self.preprocessor.image_size[0]}x{self.preprocessor.image_size[1]}")

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, path, data_options: dict | None = None) -> "Run":
        """A run directory, or a bare .keras file plus data options (its preprocessor from its input shape)."""
        path = Path(path)
        if path.is_dir():
            model_path = path / MODEL_FILE
            if not model_path.is_file():
                raise ModelError(f"{model_path} is missing; is {path} a finished run directory from `tfbonemet fit`?")
            config = read_config(path)
            if data_options:
                config = dataclasses.replace(config, **{k: v for k, v in data_options.items() if v is not None})
            return cls(config, read_preprocessor(path, config), model_path, path, read_metrics(path))
        if path.suffix == ".keras" and path.is_file():
            if path.name == MODEL_FILE and (path.parent / CONFIG_JSON).is_file():
                return cls.load(path.parent, data_options)
            return cls.from_model_file(path, data_options)
        if not path.exists():
            raise ModelError(f"{path}: no such run directory or model file")
        raise ModelError(f"{path} is neither a run directory nor a .keras model file")

    @classmethod
    def from_model_file(cls, path: Path, data_options: dict | None = None) -> "Run":
        """A bare .keras model: task from its outputs, views from its inputs, default preprocessing."""
        from tfbonemet.models import MODELS

        model = load_keras_model(path)
        names = model_input_names(model)
        views = "two_view" if set(VIEWS) <= set(names) else ANTERIOR
        height, width = (int(v) for v in model.inputs[0].shape[1:3])
        num_outputs = model.outputs[0].shape[-1]
        task = next((t for t, c in TASKS.items() if len(c) == num_outputs), None)
        if task is None:
            raise ModelError(f"{path} outputs {num_outputs} classes; no task has that many")
        known = {"model": model.name} if model.name in MODELS else {}
        config = resolve(overrides={**(data_options or {}), **known, "task": task, "image_height": height,
                                    "image_width": width})
        run = cls(config, preprocessor_for(config, views, (height, width)), path, None, {})
        run._serve(model)
        return run


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a runner needs besides weights: the run's preprocessor, class names and decision threshold."""

    preprocessor: ScanPreprocessor
    classes: tuple[str, ...]
    threshold: float | None = None  # on P(positive) for binary models; None: argmax
    band: tuple[float, float] | None = None  # the referral band on P(positive), or None

    @property
    def data_views(self) -> tuple[str, ...]:
        """Views read from a study: ('anterior', 'posterior'), or ('anterior',) feeding the input `image`."""
        return self.preprocessor.source_views

    @property
    def label_names(self) -> tuple[str, ...]:
        """What a label index names: the classes, then `refer` when the model has a referral band."""
        return self.classes + ((REFER,) if self.band else ())

    def label(self, probabilities: np.ndarray) -> np.ndarray:
        return decide(probabilities, self.threshold, self.band)

    def to_json(self) -> dict:
        return {"preprocessing": self.preprocessor.describe(), "classes": list(self.classes),
                "threshold": self.threshold, "referral_band": list(self.band) if self.band else None,
                "labels": list(self.label_names)}

    @classmethod
    def from_json(cls, d: dict) -> "ModelInfo":
        band = d.get("referral_band")
        return cls(ScanPreprocessor.from_description(d["preprocessing"]), tuple(d["classes"]), d.get("threshold"),
                   tuple(band) if band else None)


def model_inputs(model, x: dict):
    """Inputs keyed by name, in the structure the Keras model was built with (dict, list or one tensor)."""
    if isinstance(model.input, dict):
        return x
    names = model_input_names(model)
    if isinstance(model.input, (list, tuple)):
        return [x[n] for n in names]
    return x[names[0]]


def preprocessor_for(config: FitConfig, views: str, image_size) -> ScanPreprocessor:
    """The preprocessor a configuration trains with, at a resolved input size."""
    scale = None if config.intensity_scale in INTENSITY_SCALES else float(config.intensity_scale)
    return ScanPreprocessor(views=views, image_size=image_size, crop=config.crop, normalisation=config.normalisation,
                            scale=scale)


def read_preprocessor(run_dir: Path, config: FitConfig) -> ScanPreprocessor:
    path = Path(run_dir) / PREPROCESSOR_JSON
    try:
        return ScanPreprocessor.from_config(json.loads(path.read_text()))
    except FileNotFoundError:
        raise ModelError(f"{path} is missing; the run was not finished by this version of tfbonemet") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} cannot be read: {exc}") from None


def read_metrics(run_dir: Path) -> dict:
    path = Path(run_dir) / METRICS_JSON
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ConfigError(f"{path} cannot be read: {exc}") from None


def decide(probabilities: np.ndarray, threshold: float | None, band: tuple[float, float] | None = None) -> np.ndarray:
    """Label indices from probabilities: a binary threshold on the positive class, else argmax; with a
    referral band, index 2 (`refer`) for a binary probability inside it."""
    probabilities = np.asarray(probabilities)
    if threshold is None or probabilities.shape[-1] != 2:
        return probabilities.argmax(axis=-1)
    labels = (probabilities[..., 1] >= threshold).astype(np.int64)
    return np.where(referred(probabilities[..., 1], band), 2, labels)


