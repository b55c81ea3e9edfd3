"""Files and folders -> studies -> their views: the one path from files to views that `data build`,
`predict` and the PACS round trip share.

Discovery reads no pixels: DICOM files are grouped by StudyInstanceUID (headers only,
tfbonemet.io.dicom.group_by_study) and their views paired from the header; PNG/JPEG images pair as
NAME_ant / NAME_post; a BS-80K layout (chestRANT/ + chestRPOST/) pairs the same file name in the two
view folders. Every study gets a distinct key. `load_study` then reads a study's views as a model
takes them; `read_view` and `read_named_views` read files whose view is known (a manifest row).
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np

from tfbonemet.errors import DataError
from tfbonemet.io import dicom, images
from tfbonemet.io.files import IMAGE_SUFFIXES, bs80k_pairs, dicom_candidate, looks_like_dicom, printable, walk
from tfbonemet.io.pseudonym import study_key_for_uid
from tfbonemet.vocab import ANTERIOR, IMAGE, POSTERIOR, VIEWS

_VIEW_SUFFIX = re.compile(r"(?i)[_\-. ](ant|anterior|post|posterior)$")


@dataclasses.dataclass
class StudyFiles:
    """The files of one study, found without reading pixels."""

    kind: str  # "dicom" (files grouped by StudyInstanceUID) or "image" (image files paired by name or folder)
    files: list[Path]
    key: str  # image studies: the file name stem; DICOM: the StudyInstanceUID, hashed before it leaves
    views: tuple[str, ...] = ()  # image studies whose views the folder names (BS-80K): one per file


def discover(paths: Iterable[str | Path]) -> list[StudyFiles]:
    """Files and folders -> studies: DICOM grouped by StudyInstanceUID (headers only), images paired by name."""
    paths = list(map(Path, paths))
    dicom, loose, paired = [], [], []
    for path in paths:
        if path.is_dir():
            paired += _bs80k_studies(path)
    taken = {f for study in paired for f in study.files}
    named = {p for p in paths if p.is_file()}
    for f in walk(paths):
        if f in taken:
            continue
        if f.suffix.lower() in IMAGE_SUFFIXES:
            loose.append(f)
        elif f in named or dicom_candidate(f):
            dicom.append(f)
    if not dicom and not loose and not paired:
        raise DataError(f"{', '.join(map(str, paths)) or '(no paths)'}: no DICOM or image files found")
    return _group_dicom(dicom) + _distinct_keys(paired + _group_images(loose))


def _bs80k_studies(folder: Path) -> list[StudyFiles]:
    """BS-80K layout: the same file name in both view folders is one study."""
    studies, pairs = [], bs80k_pairs(folder)
    for ant_dir, post_dir in pairs:
        posterior = {p.name: p for p in post_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        for ant in sorted(p for p in ant_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            if ant.name in posterior:  # keyed by file name, with the region when several regions are given
                key = ant.stem if len(pairs) == 1 else f"{ant_dir.name[:-3]}-{ant.stem}"
                studies.append(StudyFiles("image", [ant, posterior[ant.name]], printable(key), VIEWS))
    return studies


def _group_dicom(files: list[Path]) -> list[StudyFiles]:
    return [StudyFiles("dicom", fs, uid) for uid, fs in dicom.group_by_study(files).items()]


def _group_images(files: list[Path]) -> list[StudyFiles]:
    groups: dict[Path, list[Path]] = {}
    for f in files:
        groups.setdefault(f.parent / _VIEW_SUFFIX.sub("", f.stem), []).append(f)
    return [StudyFiles("image", fs, key=printable(k.name)) for k, fs in groups.items()]


def _distinct_keys(studies: list[StudyFiles]) -> list[StudyFiles]:
    """Studies whose file names clash across folders are keyed by their folders too (a/x, b/x)."""
    count: dict[str, int] = {}
    for study in studies:
        count[study.key] = count.get(study.key, 0) + 1
    clashing = [s for s in studies if count[s.key] > 1]
    if clashing:
        root = Path(os.path.commonpath([s.files[0].parent.resolve() for s in clashing]))
        for study in clashing:
            folder = study.files[0].parent.resolve().relative_to(root).as_posix()
            study.key = f"{printable(folder)}/{study.key}" if folder != "." else study.key
    seen: dict[str, int] = {}
    for study in studies:  # the same file given twice
        seen[study.key] = seen.get(study.key, 0) + 1
        if seen[study.key] > 1:
            study.key = f"{study.key}-{seen[study.key]}"
    return studies


# ---- reading a discovered study -------------------------------------------------------------------------

class Reader(Protocol):
    """What decides which views a study is read as (a runner's ModelInfo)."""

    data_views: tuple[str, ...]


def read_view(path: str | Path, view: str | None = None, modalities: tuple[str, ...] | None = None) -> np.ndarray:
    """One view from an image file or a DICOM file (which may hold both views: `view` picks one; DICOM of
    other `modalities` than NM is refused)."""
    path = Path(path)
    if not looks_like_dicom(path):
        return images.read_image(path)
    views = dicom.read_views(path, modalities or dicom.MODALITIES)
    image = views.get(view) if view else None
    if image is None and len(views) == 1:
        image = next(iter(views.values()))
    if image is None:
        raise DataError(f"{path}: holds views {', '.join(views)}; cannot tell which is the {view or 'image'}")
    return image


def read_named_views(files: list[Path], views: tuple[str, ...], where) -> dict[str, np.ndarray]:
    """Files whose views are known (a BS-80K pair, a manifest row: one view per file, image or DICOM) ->
    {view: counts}; the anterior and posterior views must have one size (DataError naming `where`)."""
    found = {view: read_view(f, view) for view, f in zip(views, files)}
    images.check_pair(where, found)
    return found


def _image_views(study: StudyFiles) -> dict[str, np.ndarray]:
    if study.views:
        return read_named_views(study.files, study.views, ", ".join(map(str, study.files)))
    views = {}
    for f in study.files:
        match = _VIEW_SUFFIX.search(f.stem)
        view = IMAGE if match is None else (ANTERIOR if match.group(1).lower().startswith("ant") else POSTERIOR)
        if view in views:
            raise DataError(f"{f}: second {view} image for study {study.key}")
        views[view] = images.read_image(f)
    return views


def _dicom_views(study: StudyFiles, reader: Reader, secret: str | None) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Two-view models: the study's paired views (the DICOM reader pairs them). Single-view models:
    the anterior view if the study has one, else each single image file (`<key>-<n>` when several)."""
    if len(reader.data_views) == 2:
        found = dicom.read_studies(study.files, secret=secret)
        return [(s.study_key, s.views) for s in found]
    key = study_key_for_uid(study.key, secret)
    per_file = [dicom.read_views(f) for f in study.files]
    anterior = [v for v in per_file if ANTERIOR in v]
    if anterior:
        return [(key, anterior[0])]
    found = [v for v in per_file if IMAGE in v]
    return [(key if len(found) == 1 else f"{key}-{n}", v) for n, v in enumerate(found, start=1)] or [(key, {})]


def views_for(views: dict[str, np.ndarray], reader: Reader) -> dict[str, np.ndarray] | None:
    """The views a model reads from a study's views, or None if the study lacks them: both views for a
    two-view model; for a single-view model its view, else the study's only image."""
    if len(reader.data_views) == 2:
        return {v: views[v] for v in reader.data_views} if all(v in views for v in reader.data_views) else None
    single = views.get(reader.data_views[0], views.get(IMAGE))
    return None if single is None else {reader.data_views[0]: single}


def model_views(views: dict[str, np.ndarray], reader: Reader, files: list[Path]) -> dict[str, np.ndarray]:
    """A study's views -> the views the model reads (`views_for`), their counts and sizes checked."""
    names = ", ".join(map(str, files))
    for view, array in views.items():
        images.check_counts(f"{names}: {view} view", array)
    chosen = views_for(views, reader)
    if chosen is None and len(reader.data_views) == 2:
        missing = [view for view in reader.data_views if view not in views]
        raise DataError(f"{names}: no {' or '.join(missing)} view; this is a two-view (anterior + posterior) model")
    if chosen is None:
        raise DataError(f"{names}: no {reader.data_views[0]} view or single image for this single-view model")
    if len(chosen) == 2:
        images.check_pair(names, chosen)
    return chosen


def load_study(study: StudyFiles, reader: Reader, secret: str | None = None) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(key, the views the model reads) for each prediction one study yields (single images may give several)."""
    found = _dicom_views(study, reader, secret) if study.kind == "dicom" else [(study.key, _image_views(study))]
    return [(key, model_views(views, reader, study.files)) for key, views in found]
