"""Explain's DICOM side: studies read from files, overlays written back as labelled Secondary Captures,
and the local index that ties a figure's study pseudonym to its source file.

Figures of DICOM studies are named by the study's keyed pseudonym, never by a patient's file or folder
name; `source_index.csv` (key -> source path) is written beside them for the user who ran the
command. It is a local lookup table: keep it with the data, never ship it with the figures.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from tfbonemet.errors import DataError

INDEX_FILE = "source_index.csv"


def dicom_inputs(paths, run) -> tuple[list[dict], list[str], list[list[Path]]]:
    """(raw studies, names, source files per study) for DICOM studies with the views this model takes
    (chosen as predict chooses them: tfbonemet.io.discovery.views_for)."""
    from tfbonemet.io.dicom import read_studies
    from tfbonemet.io.discovery import views_for

    found = [(s, views_for(s.views, run.info)) for s in read_studies(list(paths))]
    wanted = [(s, views) for s, views in found if views is not None]
    if not wanted:
        two_view = len(run.info.data_views) == 2
        raise DataError(f"{', '.join(map(str, paths))}: no study has the views this model takes "
                        f"({'anterior + posterior' if two_view else 'one image'})")
    return ([views for _, views in wanted], [f"study-{s.study_key[:12]}" for s, _ in wanted],
            [list(s.source_files) for s, _ in wanted])


def write_index(out: Path, names: list[str], sources: list[list[Path]]) -> Path:
    """source_index.csv: each figure's study name and the source files it came from (local use only)."""
    from tfbonemet.io.atomic import write_text

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["study", "source"])
    for name, files in zip(names, sources):
        for path in files:
            writer.writerow([name, str(Path(path).resolve())])
    return write_text(out / INDEX_FILE, buffer.getvalue())


def write_captures(explanation, source_files, stem: Path, method: str, deidentify: bool = False) -> list[Path]:
    """One labelled RGB Secondary Capture per view (tfbonemet.io.dicom_results), in the source study, or
    with `deidentify` in its pseudonymous study; the same heat scale as the PNG figure."""
    from tfbonemet.io import dicom_results
    from tfbonemet.tasks.explain.figures import overlay_rgb

    sources = dicom_results.view_sources(source_files)
    heat = explanation.heat
    overlays = {view: overlay_rgb(explanation.views[view], heat[view]) for view in explanation.maps}
    caption = f"{method} P({explanation.class_name})={explanation.probability:.2f}"
    captures = dicom_results.overlay_captures(overlays, sources, caption, deidentify=deidentify)
    return [dicom_results.save(capture, stem.with_name(f"{stem.name}-{view}.dcm"))
            for view, capture in zip(overlays, captures)]
