"""Index a manual-download folder of bone scans into labelled, pseudonymous study records.

Three layouts are recognised:
  dicom     DICOM files (any depth) + labels.csv (`file` or `study_instance_uid`, `label`,
            optional `patient_id`) + optional lesions.json, as phantom_dicom.write_dataset writes them.
  bs80k     BS-80K: view folders `<region>ANT/` and `<region>POST/`, each holding 8-bit JPEGs and
            `<folder>/<folder>.txt` with `filename label` (0/1) per line; one filename is one patient.
  manifest  manifest.csv with `anterior`, `posterior`, `label`, `patient_id` (paths relative to it;
            PNG, JPEG or DICOM).

Indexing reads labels and headers only; pixels are read by `StudyRecord.load`, one study at a time.
A bad file or label line raises DataError naming it, or, given `on_bad`, is passed there and left out.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np

from tfbonemet.data.phantom_dicom import LABELS_CSV, LESIONS_JSON
from tfbonemet.data.provenance import secret_for_build
from tfbonemet.errors import DataError
from tfbonemet.io import dicom
from tfbonemet.io.discovery import read_named_views
from tfbonemet.io.files import bs80k_pairs, dicom_files
from tfbonemet.io.pseudonym import keyed_hash, study_key_for_uid
from tfbonemet.vocab import ANTERIOR, CLASS_NAMES, NO_METASTASIS, POSITIVE_CLASS, POSTERIOR, VIEWS

MANIFEST_CSV = "manifest.csv"
LABEL_NAMES = CLASS_NAMES + (NO_METASTASIS,)  # NO_METASTASIS: a binary-only label (BS-80K 0), other findings unknown
LESION_KINDS = (POSITIVE_CLASS, "arthritis", "thyroid")
LESION_FIELDS = ("kind", "box_anterior", "box_posterior")
BS80K_LABELS = {"0": NO_METASTASIS, "1": POSITIVE_CLASS}


@dataclasses.dataclass(frozen=True)
class StudyRecord:
    """One labelled study, identified only by keyed pseudonyms; `load()` reads its pixels."""

    study_hash: str
    patient_hash: str
    label: str  # one of LABEL_NAMES
    load: Callable[[], dict]  # -> {"anterior", "posterior": uint16 HxW, "lesion_boxes": [...]}

    @property
    def is_metastatic(self) -> bool:
        return self.label == POSITIVE_CLASS


def detect_layout(manual_dir: Path) -> str:
    """Which of the three layouts `manual_dir` holds; DataError if none."""
    if not manual_dir.is_dir():
        raise DataError(f"{manual_dir}: no such folder")
    if (manual_dir / LABELS_CSV).is_file():
        return "dicom"
    if (manual_dir / MANIFEST_CSV).is_file():
        return "manifest"
    if bs80k_pairs(manual_dir):
        return "bs80k"
    state = "is empty" if not any(manual_dir.iterdir()) else "has no recognised layout"
    raise DataError(f"{manual_dir}: {state}: expected {LABELS_CSV} with DICOM files, {MANIFEST_CSV}, "
                    f"or BS-80K view folders such as chestRANT/ and chestRPOST/")


OnBad = Callable[[DataError], None]


def attempt(on_bad: OnBad | None, action: Callable, *args):
    """`action(*args)`; a DataError propagates, or with `on_bad` is reported there and gives None."""
    try:
        return action(*args)
    except DataError as exc:
        report(on_bad, exc)
        return None


def report(on_bad: OnBad | None, error: DataError) -> None:
    """Raise `error`, or hand it to `on_bad` when bad inputs are being skipped."""
    if on_bad is None:
        raise error
    on_bad(error)


def read_source(manual_dir: str | Path, secret: str | None = None, on_bad: OnBad | None = None,
                allow_public_secret: bool = False) -> list[StudyRecord]:
    """Index every labelled study in `manual_dir`, whatever its layout.

    `secret` is the site secret of the pseudonyms (default: the configured one); real data are refused
    under the public default unless `allow_public_secret` (tfbonemet.data.provenance.secret_for_build).
    """
    manual_dir = Path(manual_dir)
    layout = detect_layout(manual_dir)
    secret = secret_for_build(manual_dir, secret, allow_public_secret)
    readers = {"dicom": _dicom_records, "manifest": _manifest_records, "bs80k": _bs80k_records}
    records = readers[layout](manual_dir, secret, on_bad)
    if not records:
        raise DataError(f"{manual_dir}: no labelled studies found")
    return records


# ------------------------------------------------------------------ shared readers

def read_csv(path: Path, required: tuple[str, ...], one_of: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """(line number, row) pairs of a CSV with the columns it must have; cells stripped."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [(n + 2, {k.strip(): (v or "").strip() for k, v in row.items() if k}) for n, row in enumerate(reader)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from None
    missing = [c for c in required if c not in columns]
    if one_of and not any(c in columns for c in one_of):
        missing.append(" or ".join(one_of))
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}")
    if not rows:
        raise DataError(f"{path}: has a header but no rows")
    return rows


def parse_label(value: str, where: str, names: tuple[str, ...] = LABEL_NAMES) -> str:
    """A label name from a label file, case-insensitive; DataError naming the line if unknown."""
    label = value.strip().lower()
    if label not in names:
        raise DataError(f"{where}: unknown label {value!r}; expected one of {', '.join(names)}")
    return label


def existing_file(base: Path, name: str, where: str) -> Path:
    path = base / name
    if not name or not path.is_file():
        raise DataError(f"{where}: names {name!r}, which is not a file in {base}")
    return path


# ------------------------------------------------------------------ layout (a): DICOM + labels.csv

def _normalised_box(box, shape) -> np.ndarray:
    """Pixel (y0, x0, y1, x1) -> relative (ymin, xmin, ymax, xmax) clipped to the image."""
    height, width = shape
    return np.clip(np.array(box, np.float64) / [height, width, height, width], 0.0, 1.0)


def _load_dicom_study(files: list[Path], secret: str, lesions: list[dict], on_bad: OnBad | None) -> dict:
    """Both views of one study; with `on_bad`, a bad file (say a report filed in the study) is left out."""
    found = dicom.read_studies(files, secret=secret, skip_bad=on_bad is not None,
                               on_skip=lambda path, why: on_bad(DataError(f"{path}: {why}")))
    if len(found) != 1:
        raise DataError(f"{', '.join(map(str, files))}: no usable image left in this study")
    study = found[0]
    if not study.is_two_view:
        missing = ANTERIOR if study.anterior is None else POSTERIOR
        raise DataError(f"{', '.join(map(str, files))}: study has no {missing} view")
    views = {ANTERIOR: study.anterior, POSTERIOR: study.posterior}
    boxes = [{**{view: _normalised_box(lesion[f"box_{view}"], views[view].shape) for view in VIEWS},
              "kind": lesion["kind"]} for lesion in lesions]
    return {**views, "lesion_boxes": boxes}


def _read_lesions(path: Path, secret: str) -> dict[str, list[dict]]:
    """lesions.json ({StudyInstanceUID: [{kind, box_anterior, box_posterior, ...}]}) keyed by study key."""
    try:
        raw = json.loads(path.read_text())
        lesions = {study_key_for_uid(uid, secret): [{f: lesion[f] for f in LESION_FIELDS} for lesion in found]
                   for uid, found in raw.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DataError(f"{path}: not a lesion list as phantom_dicom writes it ({type(exc).__name__}: {exc})") from None
    kinds = {lesion["kind"] for found in lesions.values() for lesion in found} - set(LESION_KINDS)
    if kinds:
        raise DataError(f"{path}: unknown lesion kind(s) {', '.join(sorted(map(str, kinds)))}; "
                        f"expected {', '.join(LESION_KINDS)}")
    return lesions


def _dicom_records(manual_dir: Path, secret: str, on_bad: OnBad | None) -> list[StudyRecord]:
    labels_path = manual_dir / LABELS_CSV
    rows = read_csv(labels_path, required=("label",), one_of=("file", "study_instance_uid"))
    key_of_file: dict[Path, str | None] = {}

    def unreadable(path: Path, error: DataError) -> None:
        key_of_file[path] = None  # reported here, and left out
        report(on_bad, error)

    groups = dicom.group_by_study(dicom_files([manual_dir]), on_unreadable=unreadable)
    files_of = {study_key_for_uid(uid, secret): files for uid, files in groups.items()}
    key_of_file.update({path: key for key, files in files_of.items() for path in files})
    patient_of = {}
    lesions = _read_lesions(manual_dir / LESIONS_JSON, secret) if (manual_dir / LESIONS_JSON).is_file() else {}

    def label_row(line: int, row: dict) -> tuple[str, str, str, str] | None:
        where = f"{labels_path}:{line}"
        if row.get("file"):
            path = existing_file(manual_dir, row["file"], where)
            if path not in key_of_file:  # a file the folder walk does not take for DICOM
                key_of_file[path] = dicom.read_identity(path, secret)[0]
            key = key_of_file[path]
            if key is None:
                return None
        else:
            key = study_key_for_uid(row.get("study_instance_uid", ""), secret)
        if key not in files_of:
            raise DataError(f"{where}: no readable DICOM file in {manual_dir} belongs to the study on this line")
        label = parse_label(row["label"], where)
        if row.get("patient_id"):
            patient = keyed_hash(row["patient_id"], secret)
        else:
            if key not in patient_of:
                patient_of[key] = dicom.read_identity(files_of[key][-1], secret)[1]
            patient = patient_of[key]
        return key, label, patient, where

    labelled: dict[str, tuple[str, str, str]] = {}
    for key, label, patient, where in filter(None, (attempt(on_bad, label_row, *item) for item in rows)):
        if key in labelled and labelled[key][0] != label:
            report(on_bad, DataError(f"{where}: label {label!r} contradicts {labelled[key][0]!r} given for the "
                                     f"same study at {labelled[key][2]}"))
            continue
        labelled.setdefault(key, (label, patient, where))
    return [StudyRecord(key, patient, label,
                        lambda files=files_of[key], found=lesions.get(key, []):
                        _load_dicom_study(files, secret, found, on_bad))
            for key, (label, patient, _) in sorted(labelled.items())]


# ------------------------------------------------------------------ layout (b): BS-80K

def _bs80k_labels(folder: Path, on_bad: OnBad | None) -> dict[str, str]:
    listing = folder / f"{folder.name}.txt"
    if not listing.is_file():
        raise DataError(f"{folder}: missing its label list {listing.name} (lines of 'filename label')")

    def parse(line: int, text: str) -> tuple[str, str]:
        parts = text.split()
        where = f"{listing}:{line}"
        if len(parts) != 2 or parts[1] not in BS80K_LABELS:
            raise DataError(f"{where}: expected 'filename label' with label 0 or 1, got {text.strip()!r}")
        existing_file(folder, parts[0], where)
        return parts[0], BS80K_LABELS[parts[1]]

    try:
        text = listing.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{listing}: cannot read the label list ({getattr(exc, 'strerror', None) or exc})") from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    return dict(filter(None, (attempt(on_bad, parse, *item) for item in lines)))


def _load_pair(paths: tuple[Path, Path], where: str) -> dict:
    return {**read_named_views(list(paths), VIEWS, where), "lesion_boxes": []}


def _bs80k_records(manual_dir: Path, secret: str, on_bad: OnBad | None) -> list[StudyRecord]:
    records = []
    for ant_dir, post_dir in bs80k_pairs(manual_dir):
        ant, post = _bs80k_labels(ant_dir, on_bad), _bs80k_labels(post_dir, on_bad)
        for name in sorted(set(ant) ^ set(post)):
            listed, other = (ant_dir, post_dir) if name in ant else (post_dir, ant_dir)
            report(on_bad, DataError(f"{listed / name}: has no matching file listed in {other}"))
        region = ant_dir.name[:-3]
        for name in sorted(set(ant) & set(post)):
            label = POSITIVE_CLASS if POSITIVE_CLASS in (ant[name], post[name]) else NO_METASTASIS
            paths = (ant_dir / name, post_dir / name)
            where = f"{paths[0]}, {paths[1]}"
            records.append(StudyRecord(
                keyed_hash(f"bs80k:{region}:{name}", secret), keyed_hash(Path(name).stem, secret),
                label, lambda paths=paths, where=where: _load_pair(paths, where)))
    return records


# ------------------------------------------------------------------ layout (c): manifest.csv

def _manifest_records(manual_dir: Path, secret: str, on_bad: OnBad | None) -> list[StudyRecord]:
    manifest = manual_dir / MANIFEST_CSV

    def record(line: int, row: dict) -> StudyRecord:
        where = f"{manifest}:{line}"
        paths = tuple(existing_file(manual_dir, row[view], where) for view in VIEWS)  # one column per view
        if not row["patient_id"]:
            raise DataError(f"{where}: empty patient_id")
        return StudyRecord(keyed_hash(f"manifest:{row[ANTERIOR]}:{row[POSTERIOR]}", secret),
                           keyed_hash(row["patient_id"], secret), parse_label(row["label"], where),
                           lambda: _load_pair(paths, where))

    rows = read_csv(manifest, required=(*VIEWS, "label", "patient_id"))
    return list(filter(None, (attempt(on_bad, record, *item) for item in rows)))


# ------------------------------------------------------------------ crop boxes

BOX_COLUMNS = ("ymin", "xmin", "ymax", "xmax")


def read_crop_boxes(path: str | Path) -> dict[str, tuple[float, float, float, float]]:
    """`file` -> crop box from a CSV of `file, ymin, xmin, ymax, xmax` (fractions of height and width).

    Per-study crop boxes, for example the thoracic region a reader drew on each study.
    """
    path = Path(path)
    boxes = {}
    for line, row in read_csv(path, required=("file",) + BOX_COLUMNS):
        where = f"{path}:{line}"
        try:
            box = tuple(float(row[c]) for c in BOX_COLUMNS)
        except ValueError:
            raise DataError(f"{where}: box values must be numbers, got {[row[c] for c in BOX_COLUMNS]}") from None
        if not (0.0 <= box[0] < box[2] <= 1.0 and 0.0 <= box[1] < box[3] <= 1.0):
            raise DataError(f"{where}: box {box} is not inside the image as fractions with min < max")
        if row["file"] in boxes:
            raise DataError(f"{where}: second box for {row['file']!r}")
        boxes[row["file"]] = box
    return boxes
