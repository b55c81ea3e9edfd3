"""Read nuclear-medicine DICOM into count images: anterior/posterior whole-body views or single images.

Which frame or file is which view comes from the header (the View Code Sequence of each Detector
Information item, Image Type, Series Description), never from frame order. Counts stay integer:
rescale applied, negatives clipped to 0, stored as uint16 with no 8-bit squashing. Only NM images
are read (a CT or MR slice would be "predicted" without meaning) unless $TFBONEMET_ANY_MODALITY is set
(`--any-modality`). Files are grouped into studies here, by `group_by_study`, for every reader of
the package. Studies are keyed by keyed pseudonyms (tfbonemet.io.pseudonym), so no name or ID leaves
this module, and a StudyInstanceUID only as the grouping key that discovery hashes before use.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from tfbonemet.errors import DataError
from tfbonemet.io import images
from tfbonemet.io.files import dicom_files
from tfbonemet.io.pseudonym import keyed_hash, site_secret, study_key_for_uid
from tfbonemet.vocab import ANTERIOR, IMAGE, POSTERIOR, VIEWS

# pydicom logs each pixel decoder's failure (an ERROR with its traceback); the one DataError of `_decode` says it all
logging.getLogger("pydicom.pixels").setLevel(logging.CRITICAL)

MODALITIES = ("NM",)
ANY_MODALITY_ENV = "TFBONEMET_ANY_MODALITY"
# SNOMED CT codes for the nuclear-medicine projections (DICOM CID 26); the code meaning is matched too
VIEW_CODE_VALUES = {"399321004": ANTERIOR, "399001007": POSTERIOR}
_VIEW_WORDS = {ANTERIOR: re.compile(r"\bANT(ERO|ERIOR)?\b"), POSTERIOR: re.compile(r"\bPOST(ERO|ERIOR)?\b")}
_DETECTOR_VECTOR = 0x00540020


@dataclasses.dataclass
class DicomStudy:
    """One study's count images (uint16, H x W) and where they came from.

    `posterior` is as acquired (the patient's left on the image left); mirroring is preprocessing.
    `image` holds a single-view image (thoracic SPECT or planar) whose file names no view.
    """

    study_key: str
    patient_hash: str
    anterior: np.ndarray | None = None
    posterior: np.ndarray | None = None
    image: np.ndarray | None = None
    source_files: list[Path] = dataclasses.field(default_factory=list)

    @property
    def is_two_view(self) -> bool:
        return self.anterior is not None and self.posterior is not None

    @property
    def views(self) -> dict[str, np.ndarray]:
        """{view: counts} for the views this study has (anterior, posterior, image)."""
        return {view: getattr(self, view) for view in (ANTERIOR, POSTERIOR, IMAGE) if getattr(self, view) is not None}


def _code_view(item) -> str | None:
    for code in item.get("ViewCodeSequence", []):
        if str(code.get("CodeValue", "")) in VIEW_CODE_VALUES:
            return VIEW_CODE_VALUES[str(code.CodeValue)]
        view = _named_view(str(code.get("CodeMeaning", "")))
        if view:
            return view
    return None


def _named_view(text: str) -> str | None:
    """The one view a text names as a word ('Anterior projection', 'WB ANT'); None if none or both."""
    found = [view for view, pattern in _VIEW_WORDS.items() if pattern.search(text.upper())]
    return found[0] if len(found) == 1 else None


def _text_view(ds) -> str | None:
    """A view named unambiguously by Image Type or Series Description (e.g. 'WB ANT'), else None."""
    image_type = " ".join(str(v) for v in ds.get("ImageType", []))
    return _named_view(image_type) or _named_view(str(ds.get("SeriesDescription", "")))


def _frame_views(ds, path: Path, frames: int) -> list[str]:
    """The view of each frame, from the header; raises if a multi-frame file does not say."""
    detectors = list(ds.get("DetectorInformationSequence", []))
    if frames == 1:
        view = (_code_view(detectors[0]) if len(detectors) == 1 else None) or _code_view(ds) or _text_view(ds)
        return [view or IMAGE]
    vector = ds.get("DetectorVector")
    pointers = ds.get("FrameIncrementPointer")
    pointers = [] if pointers is None else (list(pointers) if ds["FrameIncrementPointer"].VM > 1 else [pointers])
    if vector is None or _DETECTOR_VECTOR not in [int(p) for p in pointers] or len(list(vector)) != frames:
        raise DataError(f"{path}: {frames} frames but no Detector Vector saying which detector (view) each frame is")
    views = []
    for number in vector:
        if not 1 <= int(number) <= len(detectors):
            raise DataError(f"{path}: Detector Vector names detector {number} but the file describes {len(detectors)}")
        views.append(_code_view(detectors[int(number) - 1]))
    if sorted(v for v in views if v) != sorted(VIEWS):
        raise DataError(f"{path}: expected one anterior and one posterior frame, header views are {views}")
    return views


def _counts(pixels: np.ndarray, ds) -> np.ndarray:
    """Stored values -> uint16 counts: rescale slope/intercept applied, negatives clipped to 0."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if pixels.dtype == np.uint16 and slope == 1 and intercept == 0:
        return pixels
    values = pixels.astype(np.float64) * slope + intercept
    return np.clip(np.rint(values), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _read_dataset(path: Path, stop_before_pixels: bool = False):
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise DataError(f"{path}: not a readable DICOM file (no DICOM header)") from None
    except Exception as exc:  # pydicom raises many types for damaged files
        raise DataError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    # pydicom reads damaged bytes leniently: a file with neither SOP class nor pixels is not DICOM
    if "SOPClassUID" not in ds and ("PixelData" not in ds or stop_before_pixels):
        raise DataError(f"{path}: not a readable DICOM file (no SOP Class UID: damaged or not DICOM)")
    return ds


_warned_modalities: set[str] = set()


def _check_modality(ds, path: Path, modalities: tuple[str, ...]) -> None:
    modality = str(ds.get("Modality", "") or "")
    if modality in modalities:
        return
    if not os.environ.get(ANY_MODALITY_ENV):
        raise DataError(f"{path}: modality {modality or 'missing'}, not {' or '.join(modalities)}: the wrong kind "
                        f"of image for this model (--any-modality reads it anyway)")
    if modality not in _warned_modalities:  # once per modality: a folder of CT slices is one warning
        _warned_modalities.add(modality)
        print(f"Warning: reading {modality or 'modality-less'} images ({path} first) because of --any-modality: "
              f"the model was trained on {' or '.join(modalities)} bone scans, and its results for them mean "
              f"nothing", file=sys.stderr)


def _decode(ds, path: Path, modalities: tuple[str, ...] = MODALITIES) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        kind = "has no pixel data" if "Rows" in ds else "is not an image"
        raise DataError(f"{path}: {kind} (SOP class {ds.get('SOPClassUID', 'unknown')!s}, "
                        f"modality {ds.get('Modality', 'unknown')})")
    _check_modality(ds, path, modalities)
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DataError(f"{path}: has {ds.SamplesPerPixel} samples per pixel; count images have one")
    if int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16) == 1:
        raise DataError(f"{path}: is a 1-bit image; a scan needs grey levels")
    try:
        images.check_size(path, int(ds.Rows), int(ds.Columns))
    except (AttributeError, TypeError, ValueError):
        raise DataError(f"{path}: has no valid Rows and Columns") from None
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID", None) if hasattr(ds, "file_meta") else None
        reason = str(exc).strip().splitlines()
        raise DataError(f"{path}: cannot decode pixel data ({getattr(syntax, 'name', syntax) or 'unknown syntax'}): "
                        f"{' '.join(line.strip() for line in reason[:3])}") from None
    return pixels


def _views_of(ds, path: Path, modalities: tuple[str, ...] = MODALITIES) -> dict[str, np.ndarray]:
    pixels = _decode(ds, path, modalities)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    stack = pixels if frames > 1 else pixels[np.newaxis]
    views = _frame_views(ds, path, frames)
    return {view: images.check_counts(f"{path}: {view} view", _counts(frame, ds))
            for view, frame in zip(views, stack) if view}


def _study_uid(ds, path: Path) -> str:
    """The StudyInstanceUID a file belongs to; a file without one is a study of its own."""
    return str(ds.get("StudyInstanceUID", "")) or _own_study(path)


def _own_study(path: Path) -> str:
    return f"file:{path.resolve()}"


def _identity(ds, path: Path, secret: str) -> tuple[str, str]:
    """(study key, patient hash): pseudonyms of the StudyInstanceUID and PatientID (the study if none)."""
    uid = _study_uid(ds, path)
    return study_key_for_uid(uid, secret), keyed_hash(str(ds.get("PatientID", "")) or uid, secret)


def read_identity(path: str | Path, secret: str | None = None) -> tuple[str, str]:
    """(study key, patient hash) of one file from its header alone, for indexing before decoding."""
    path = Path(path)
    return _identity(_read_dataset(path, stop_before_pixels=True), path, secret or site_secret())


def read_views(path: str | Path, modalities: tuple[str, ...] = MODALITIES) -> dict[str, np.ndarray]:
    """Views in one file: {'anterior': ..., 'posterior': ...} (either or both) or {'image': ...}."""
    path = Path(path)
    return _views_of(_read_dataset(path), path, modalities)


def group_by_study(files: Iterable[Path],
                   on_unreadable: Callable[[Path, DataError], None] | None = None) -> dict[str, list[Path]]:
    """The package's one grouping of DICOM files into studies: StudyInstanceUID -> its files, from the
    headers alone (no pixels decoded). A file without a StudyInstanceUID is a study of its own.

    An unreadable file is passed to `on_unreadable(path, error)` and left out; without it the file is
    a study of its own, so that reading the study reports it by name. The UIDs are identifiers:
    hash them (study_key_for_uid) before they leave the reader.
    """
    groups: dict[str, list[Path]] = {}
    for path in map(Path, files):
        try:
            uid = _study_uid(_read_dataset(path, stop_before_pixels=True), path)
        except DataError as exc:
            if on_unreadable is not None:
                on_unreadable(path, exc)
                continue
            uid = _own_study(path)
        groups.setdefault(uid, []).append(path)
    return groups


def read_studies(paths: list[str | Path], skip_bad: bool = False, secret: str | None = None,
                 on_skip: Callable[[Path, str], None] | None = None) -> list[DicomStudy]:
    """Group files and folders (recursively) into studies (group_by_study) and pair each study's views.

    A bad file raises DataError naming it; with `skip_bad` it is passed to `on_skip(path, reason)`
    instead (and, like the rest of its study, left out when the study itself is inconsistent).
    """
    secret = secret or site_secret()
    bad: list[tuple[Path, str]] = []

    def fail(path: Path, reason: str):
        if not skip_bad:
            raise DataError(f"{path}: {reason}")
        bad.append((path, reason))

    files = dicom_files(paths)
    if not files:
        raise DataError(f"{', '.join(map(str, paths)) or '(no paths)'}: no DICOM files found")
    studies = [_read_study(group, secret, fail) for group in group_by_study(files).values()]
    for path, reason in bad:
        (on_skip or _print_skip)(path, reason)
    return [study for study in studies if study is not None]


def _read_study(files: list[Path], secret: str, fail: Callable[[Path, str], None]) -> DicomStudy | None:
    """The views of one study's files, paired; None (every file passed to `fail`) if they do not make one study."""
    study: DicomStudy | None = None
    origin: dict[str, Path] = {}
    for path in files:
        try:
            ds = _read_dataset(path)
            views = _views_of(ds, path)
        except DataError as exc:
            fail(path, str(exc).removeprefix(f"{path}: "))
            continue
        if study is None:
            study = DicomStudy(*_identity(ds, path, secret))
        clash = [view for view in views if view in origin]
        if clash:
            fail(path, f"second {clash[0]} view of its study (first: {origin[clash[0]]})")
            continue
        for view, counts in views.items():
            setattr(study, view, counts)
            origin[view] = path
        study.source_files.append(path)
    if study is None:
        return None
    if study.image is not None and (study.anterior is not None or study.posterior is not None):
        for path in study.source_files:
            fail(path, "study mixes a single-view image with anterior/posterior views")
        return None
    if study.is_two_view and study.anterior.shape != study.posterior.shape:
        for path in study.source_files:
            fail(path, f"anterior {study.anterior.shape} and posterior {study.posterior.shape} "
                       f"views of one study differ in size")
        return None
    return study


def _print_skip(path: Path, reason: str) -> None:
    print(f"skipped {path}: {reason}")
