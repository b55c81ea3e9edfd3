"""Which files a user's paths name: folders walked, DICOM files told from images. Reads no pixels.

The bottom of tfbonemet.io: the DICOM reader, discovery, phantom detection and `data build` all find
their files here, so a hidden file, a label list or a DICOMDIR is skipped by one rule everywhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tfbonemet.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
DICOM_SUFFIXES = {"", ".dcm", ".dicom", ".dic", ".ima"}
_SKIPPED_SUFFIXES = {".txt", ".csv", ".json"}  # label lists and manifests beside the images


def looks_like_dicom(path: Path) -> bool:
    """A DICOM suffix (not none), or the DICM preamble for any other name."""
    from pydicom.misc import is_dicom

    return path.suffix.lower() in DICOM_SUFFIXES - {""} or (path.suffix.lower() not in IMAGE_SUFFIXES
                                                           and is_dicom(path))


def walk(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus the visible files inside folders (recursively, sorted)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return found


def dicom_candidate(path: Path) -> bool:
    """A file found in a folder that is read as DICOM: a DICOM suffix (or none), or the DICM preamble."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES | _SKIPPED_SUFFIXES or path.name.upper() == "DICOMDIR":
        return False
    return suffix in DICOM_SUFFIXES or looks_like_dicom(path)


def dicom_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus the DICOM candidates found in folders."""
    paths = list(map(Path, paths))
    named = {p for p in paths if p.is_file()}
    return [f for f in walk(paths) if f in named or dicom_candidate(f)]


def bs80k_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(anterior folder, posterior folder) pairs such as chestRANT/ + chestRPOST/."""
    pairs = []
    for ant in sorted(p for p in Path(folder).iterdir() if p.is_dir() and p.name.upper().endswith("ANT")):
        posterior = ant.with_name(ant.name[:-3] + ("POST" if ant.name.endswith("ANT") else "post"))
        if posterior.is_dir():
            pairs.append((ant, posterior))
    return pairs


def printable(name: str) -> str:
    """A file name as text that any output can hold: undecodable bytes written as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
