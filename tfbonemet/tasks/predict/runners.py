"""`tfbonemet predict`: any exported form of a model (run dir / .keras, SavedModel, .tflite) on DICOM or image files.

Every runner sees the run's own ScanPreprocessor: the Keras and TFLite runners apply it here, a
SavedModel carries it inside its `serving_default` signature; all label with the stored threshold.
Studies stream through in batches, so memory is bounded by the batch, not by the folder.
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import re
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from tfbonemet.errors import DataError, ModelError
from tfbonemet.preprocessing import ScanPreprocessor
from tfbonemet.run import decide
from tfbonemet.vocab import PREDICTION_FORMATS, model_input_names

METADATA_JSON = "metadata.json"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
_VIEW_SUFFIX = re.compile(r"(?i)[_\-. ](ant|anterior|post|posterior)$")
OUTPUT_FORMATS = PREDICTION_FORMATS


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What a runner needs besides weights: the run's preprocessor, class names and decision threshold."""

    preprocessor: ScanPreprocessor
    classes: tuple[str, ...]
    threshold: float | None = None  # on P(positive) for binary models; None: argmax

    @property
    def data_views(self) -> tuple[str, ...]:
        """Views read from a study: ('anterior', 'posterior'), or ('anterior',) feeding the input `image`."""
        return self.preprocessor.source_views

    def label(self, probabilities: np.ndarray) -> np.ndarray:
        return decide(probabilities, self.threshold)

    def to_json(self) -> dict:
        return {"preprocessing": self.preprocessor.describe(), "classes": list(self.classes),
                "threshold": self.threshold}

    @classmethod
    def from_json(cls, d: dict) -> "ModelInfo":
        return cls(ScanPreprocessor.from_description(d["preprocessing"]), tuple(d["classes"]), d.get("threshold"))


def model_inputs(model, x: dict):
    """Inputs keyed by name, in the structure the Keras model was built with (dict, list or one tensor)."""
    if isinstance(model.input, dict):
        return x
    names = model_input_names(model)
    if isinstance(model.input, (list, tuple)):
        return [x[n] for n in names]
    return x[names[0]]


def preprocess_studies(studies: list[dict[str, np.ndarray]], preprocessor: ScanPreprocessor) -> dict[str, np.ndarray]:
    """Raw (H, W) count views per study -> batched model inputs, one study at a time (sizes may differ)."""
    parts = [preprocessor.numpy(s) for s in studies]
    return {name: np.stack([p[name] for p in parts]) for name in parts[0]}


class KerasRunner:
    """A run directory or .keras file (loaded by tfbonemet.evaluate.load_run)."""

    kind = "keras"

    def __init__(self, path):
        from tfbonemet.run import Run

        self.run = Run.load(path)
        self.run.model  # noqa: B018  (load now: a bad file fails before any study is read)
        self.info = ModelInfo(self.run.preprocessor, self.run.classes, self.run.threshold)

    def predict_preprocessed(self, x: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.run.model.predict_on_batch(model_inputs(self.run.model, x)), np.float32)

    def predict(self, studies):
        return self.predict_preprocessed(preprocess_studies(studies, self.info.preprocessor))


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
        """Calls the signature once per run of equally sized studies (a batch needs one shape)."""
        names = self.info.preprocessor.input_names
        out, start = [], 0
        while start < len(studies):
            shape = _shapes(studies[start], self.info.data_views)
            stop = start + 1
            while stop < len(studies) and _shapes(studies[stop], self.info.data_views) == shape:
                stop += 1
            feed = {name: np.stack([s[v] for s in studies[start:stop]])[..., np.newaxis].astype(np.float32)
                    for name, v in zip(names, self.info.data_views)}
            out.append(self.signature(**feed)["probabilities"].numpy())
            start = stop
        return np.concatenate(out)


class TFLiteRunner:
    """A .tflite flatbuffer from `tfbonemet export`: fixed-size preprocessed inputs, quantised or not."""

    kind = "tflite"

    def __init__(self, path: Path, info: ModelInfo | None = None, num_threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.info = info or _read_info(_tflite_metadata(path))
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
            self.runner = self.interpreter.get_signature_runner()
        except Exception as exc:  # LiteRT raises ValueError/RuntimeError for a damaged flatbuffer
            raise ModelError(f"cannot load TFLite model {path}: {_first_line(exc)}") from None
        self.inputs = self.runner.get_input_details()
        self.output = self.runner.get_output_details()["probabilities"]

    def predict_preprocessed(self, x: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: _quantise(x[name], d) for name, d in self.inputs.items()}
        return _dequantise(self.runner(**feed)["probabilities"], self.output)

    def predict(self, studies):
        return self.predict_preprocessed(preprocess_studies(studies, self.info.preprocessor))


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
            return SavedModelRunner(path if (path / "saved_model.pb").is_file() else versions[-1])
        if (path / "model.keras").is_file() or (path / "config.json").is_file():
            return KerasRunner(path)
        raise ModelError(f"{path} is neither a run directory (model.keras), a SavedModel (saved_model.pb) "
                         f"nor a TF Serving model folder (numbered versions)")
    if path.suffix == ".keras":  # a run's own model.keras keeps its run's preprocessing (config.json)
        in_run = path.name == "model.keras" and (path.parent / "config.json").is_file()
        return KerasRunner(path.parent if in_run else path)
    if path.suffix == ".tflite":
        return TFLiteRunner(path)
    raise ModelError(f"{path}: not a model; expected a run directory, .keras, SavedModel folder or .tflite")


# ---- inputs ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class StudyFiles:
    """The files of one study, found without reading pixels."""

    kind: str  # "dicom" or "image"
    files: list[Path]
    key: str  # image studies: the file name stem; DICOM: the StudyInstanceUID, hashed before it leaves
    views: tuple[str, ...] = ()  # image studies whose views the folder names (BS-80K): one per file


def discover(paths: Iterable[str | Path]) -> list[StudyFiles]:
    """Files and folders -> studies: DICOM grouped by StudyInstanceUID (headers only), images paired by name."""
    from tfbonemet.data.dicom import DICOM_SUFFIXES

    dicom, images, paired = [], [], []
    for path in map(Path, paths):
        if path.is_dir():
            pairs = _bs80k_studies(path)
            taken = {f for study in pairs for f in study.files}
            paired += pairs
            files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and p not in taken
                           and p.suffix.lower() != ".txt")
        elif path.is_file():
            files = [path]
        else:
            raise DataError(f"{path}: no such file or folder")
        for f in files:
            if f.suffix.lower() in IMAGE_SUFFIXES:
                images.append(f)
            elif f.suffix.lower() in DICOM_SUFFIXES or path.is_file() or _is_dicom(f):
                dicom.append(f)
    if not dicom and not images and not paired:
        raise DataError(f"{', '.join(map(str, paths)) or '(no paths)'}: no DICOM or image files found")
    return _group_dicom(dicom) + paired + _group_images(images)


def _bs80k_studies(folder: Path) -> list[StudyFiles]:
    """BS-80K layout (chestRANT/ + chestRPOST/ ...): the same file name in both folders is one study."""
    from tfbonemet.data.sources import bs80k_pairs

    studies, pairs = [], bs80k_pairs(folder)
    for ant_dir, post_dir in pairs:
        posterior = {p.name: p for p in post_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        for ant in sorted(p for p in ant_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            if ant.name in posterior:  # keyed by file name, with the region when several regions are given
                key = ant.stem if len(pairs) == 1 else f"{ant_dir.name[:-3]}-{ant.stem}"
                studies.append(StudyFiles("image", [ant, posterior[ant.name]], key, ("anterior", "posterior")))
    return studies


def _is_dicom(path: Path) -> bool:
    from pydicom.misc import is_dicom

    return is_dicom(path)


def _group_dicom(files: list[Path]) -> list[StudyFiles]:
    import pydicom

    groups: dict[str, list[Path]] = {}
    for f in files:
        try:
            uid = str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
                      .get("StudyInstanceUID", "")) or f"file:{f}"
        except Exception:  # unreadable: a study of its own, so the reader reports it by name
            uid = f"file:{f}"
        groups.setdefault(uid, []).append(f)
    return [StudyFiles("dicom", fs, uid) for uid, fs in groups.items()]


def _group_images(files: list[Path]) -> list[StudyFiles]:
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(str(f.parent / _VIEW_SUFFIX.sub("", f.stem)), []).append(f)
    return [StudyFiles("image", fs, key=Path(k).name) for k, fs in groups.items()]


def read_image(path: Path) -> np.ndarray:
    """A PNG/JPEG as (H, W) counts: 16-bit PNGs keep their values; colour only if all channels are equal."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            array = np.asarray(im)
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: not a readable image ({_first_line(exc)})") from None
    if array.ndim == 3:
        if not all(np.array_equal(array[..., 0], array[..., c]) for c in range(1, min(array.shape[-1], 3))):
            raise DataError(f"{path}: has {array.shape[-1]} colour channels; the model takes single-channel "
                            f"count images (save it as grayscale)")
        array = array[..., 0]
    if array.ndim != 2:
        raise DataError(f"{path}: expected a 2-D single-channel image, got shape {array.shape}")
    return np.clip(array, 0, None).astype(np.float32)


def _image_views(study: StudyFiles) -> dict[str, np.ndarray]:
    if study.views:
        return {view: read_image(f) for view, f in zip(study.views, study.files)}
    views = {}
    for f in study.files:
        match = _VIEW_SUFFIX.search(f.stem)
        view = "image" if match is None else ("anterior" if match.group(1).lower().startswith("ant") else "posterior")
        if view in views:
            raise DataError(f"{f}: second {view} image for study {study.key}")
        views[view] = read_image(f)
    return views


def _dicom_views(study: StudyFiles, info: ModelInfo, salt: str | None) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Two-view models: the study's paired views (the DICOM reader pairs them). Single-view models:
    the anterior view if the study has one, else each single image file (`<key>-<n>` when several)."""
    from tfbonemet.data.dicom import read_studies, read_views, study_key_for_uid

    if len(info.data_views) == 2:
        found = read_studies(study.files, salt=salt)
        return [(s.study_key, {v: getattr(s, v) for v in ("anterior", "posterior", "image")
                               if getattr(s, v) is not None}) for s in found]
    key = study_key_for_uid(study.key, salt)
    per_file = [read_views(f) for f in study.files]
    anterior = [v for v in per_file if "anterior" in v]
    if anterior:
        return [(key, anterior[0])]
    images = [v for v in per_file if "image" in v]
    return [(key if len(images) == 1 else f"{key}-{n}", v) for n, v in enumerate(images, start=1)] or [(key, {})]


def model_views(views: dict[str, np.ndarray], info: ModelInfo, files: list[Path]) -> dict[str, np.ndarray]:
    """A study's views -> the views the model reads; a single-view model reads the anterior or the only image."""
    names = ", ".join(map(str, files))
    for view, array in views.items():
        if array.ndim != 2:
            raise DataError(f"{names}: {view} view has shape {array.shape}; expected one 2-D frame")
    if len(info.data_views) == 2:
        missing = [view for view in info.data_views if view not in views]
        if missing:
            raise DataError(f"{names}: no {' or '.join(missing)} view; this is a two-view (anterior + posterior) model")
        return {v: views[v] for v in info.data_views}
    single = views.get(info.data_views[0], views.get("image"))
    if single is None:
        raise DataError(f"{names}: no {info.data_views[0]} view or single image for this single-view model")
    return {info.data_views[0]: single}


def load_study(study: StudyFiles, info: ModelInfo, salt: str | None = None) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(key, the views the model reads) for each prediction one study yields (single images may give several)."""
    found = _dicom_views(study, info, salt) if study.kind == "dicom" else [(study.key, _image_views(study))]
    return [(key, model_views(views, info, study.files)) for key, views in found]


# ---- the predict loop -----------------------------------------------------------------------------------

def iter_predictions(runner, studies: list[StudyFiles], batch_size: int = 16, salt: str | None = None,
                     skip_bad: bool = False, on_skip: Callable[[str], None] | None = None,
                     on_batch: Callable[[int], None] | None = None, explain_dir=None) -> Iterator[dict]:
    """One row per study (key, label, class probabilities); reads and predicts `batch_size` studies at a time.

    With `explain_dir`, each study also gets a Grad-CAM overlay `<key>-gradcam.png` there.
    """
    if explain_dir is not None:
        if runner.kind != "keras":
            raise ModelError(f"--explain needs the Keras model (run directory or .keras), not a {runner.kind} model")
        Path(explain_dir).mkdir(parents=True, exist_ok=True)
    classes = runner.info.classes
    for start in range(0, len(studies), batch_size):
        batch, keys = [], []
        for study in studies[start:start + batch_size]:
            try:
                found = load_study(study, runner.info, salt)
            except DataError as exc:
                if not skip_bad:
                    raise
                (on_skip or (lambda m: print(f"skipped: {m}", file=sys.stderr)))(str(exc))
                continue
            keys += [key for key, _ in found]
            batch += [views for _, views in found]
        if batch:
            if explain_dir is not None:
                explain_batch(runner, keys, batch, Path(explain_dir))
            probabilities = runner.predict(batch)
            for key, p, decided in zip(keys, probabilities, runner.info.label(probabilities)):
                yield {"study": key, "label": classes[int(decided)],
                       **{f"p_{c}": round(float(v), 6) for c, v in zip(classes, p)}}
        if on_batch:
            on_batch(min(batch_size, len(studies) - start))


def explain_batch(runner: KerasRunner, keys: list[str], studies: list[dict], out_dir: Path) -> None:
    """Grad-CAM overlays of the metastasis class (tfbonemet.explain), one study at a time: sizes may differ."""
    from tfbonemet.tasks import explain

    for key, result in zip(keys, explain.explain_studies(runner.run, studies, keys)):
        explain.save_png(result, out_dir / f"{key}-gradcam.png", "gradcam")


def write_rows(rows: Iterable[dict], out, fmt: str, classes: tuple[str, ...]) -> int:
    """Stream rows to an open text file as CSV or a JSON list; returns the count."""
    if fmt not in OUTPUT_FORMATS:
        raise DataError(f"unknown output format {fmt!r}; choose one of {', '.join(OUTPUT_FORMATS)}")
    rows = iter(rows)
    first = next(rows, None)  # a bad first batch fails before anything is written
    rows = itertools.chain([first] if first is not None else [], rows)
    n = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=["study", "label", *(f"p_{c}" for c in classes)])
        writer.writeheader()
        for n, row in enumerate(rows, start=1):
            writer.writerow(row)
        return n
    out.write("[")
    for n, row in enumerate(rows, start=1):
        out.write(("\n  " if n == 1 else ",\n  ") + json.dumps(row))
    out.write("\n]\n")
    return n
