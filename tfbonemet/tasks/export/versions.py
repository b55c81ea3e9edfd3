"""The TF Serving layout `<output_dir>/<model_name>/<version>/`: names, the next version, the last one's card."""
from __future__ import annotations

import json
import re
from pathlib import Path

from tfbonemet.io.integrity import METADATA_JSON


def model_name(name: str) -> str:
    """A served model name that is a safe folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"


def versions(root: Path) -> list[int]:
    return sorted(int(p.name) for p in Path(root).iterdir() if p.name.isdigit()) if Path(root).is_dir() else []


def next_version(root: Path) -> int:
    return (versions(root) or [0])[-1] + 1


def previous_card(root: Path) -> dict | None:
    """metadata.json of the newest published version, if any (its version and changelog carry over)."""
    found = versions(root)
    path = Path(root) / str(found[-1]) / METADATA_JSON if found else None
    try:
        return json.loads(path.read_text()) if path else None
    except (OSError, ValueError):
        return None
