"""sha256 of every file of an export folder, recorded in its metadata.json, and the check made before a model is loaded.

A model that a copy, a sync or a disk damaged silently would still load and answer; comparing
its files against the digests written at export time catches that before a single prediction.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tfbonemet.errors import ModelError

METADATA_JSON = "metadata.json"
ALGORITHM = "sha256"
CHUNK = 1 << 20


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def digests(version_dir: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file of an export version except metadata.json (which holds them)."""
    version_dir = Path(version_dir)
    return {p.relative_to(version_dir).as_posix(): digest(p) for p in sorted(version_dir.rglob("*"))
            if p.is_file() and p.name != METADATA_JSON}


def record(version_dir: Path) -> dict:
    """The `integrity` entry of metadata.json for a finished export folder."""
    return {"algorithm": ALGORITHM, "files": digests(version_dir)}


def version_dir_of(path) -> Path:
    """The export folder holding metadata.json for a version folder, a file in it or a tflite/ file."""
    path = Path(path)
    for folder in ((path,) if path.is_dir() else ()) + (path.parent, path.parent.parent):
        if (folder / METADATA_JSON).is_file():
            return folder
    raise ModelError(f"{path}: no {METADATA_JSON} beside it or above it to check its integrity against")


def verify(path) -> list[str]:
    """Check an export (its version folder, or one of its files) against the recorded digests.

    A single file is checked alone; a folder is checked whole (every recorded file present and
    unchanged). Returns the files checked; raises ModelError naming the first that differs.
    """
    path = Path(path)
    root = version_dir_of(path)
    try:
        recorded = json.loads((root / METADATA_JSON).read_text())["integrity"]["files"]
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"{root / METADATA_JSON}: records no file digests (exported by an older version?)") from None
    names = sorted(recorded) if path.is_dir() else [path.relative_to(root).as_posix()]
    for name in names:
        if name not in recorded:
            raise ModelError(f"{root / name}: not listed in {root / METADATA_JSON}; not part of this export")
        target = root / name
        if not target.is_file():
            raise ModelError(f"{target}: missing from the export (recorded in {METADATA_JSON})")
        if digest(target) != recorded[name]:
            raise ModelError(f"{target}: {ALGORITHM} differs from the one recorded at export; the file was "
                             f"changed or damaged after export")
    return names
