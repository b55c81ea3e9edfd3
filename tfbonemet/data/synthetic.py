"""The built-in dataset: phantom studies rendered once and cached under the user's cache dir.

`tfbonemet fit` with no data argument trains on this, so a fresh machine runs the main job with
no data of the user's. The cache key covers every generator setting, so a change of size, count
or seed renders a new set and never mixes sets.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from tfbonemet.data.phantom import CLASS_NAMES, BoneScanPhantom
from tfbonemet.data.splits import assign_splits
from tfbonemet.io.atomic import open_for_write
from tfbonemet.io.pseudonym import keyed_hash
from tfbonemet.vocab import ANTERIOR, POSITIVE_CLASS, POSTERIOR

CACHE_VERSION = 8  # bump when the phantom's rendering changes


def cache_root() -> Path:
    """`$TFBONEMET_CACHE`, else `$XDG_CACHE_HOME/tfbonemet`, else `~/.cache/tfbonemet`."""
    if os.environ.get("TFBONEMET_CACHE"):
        return Path(os.environ["TFBONEMET_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tfbonemet"


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the rendered set."""

    num_studies: int = 320
    height: int = 512
    width: int = 128
    seed: int = 0
    class_probs: tuple[float, ...] = (0.4, 0.4, 0.1, 0.1)
    counts_per_view: float = 1.2e6
    difficulty: str = "realistic"

    def key(self) -> str:
        blob = json.dumps({**dataclasses.asdict(self), "v": CACHE_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclasses.dataclass
class StudyArrays:
    """Studies as aligned arrays: views (N, H, W) uint16 counts, labels in CLASS_NAMES order."""

    anterior: np.ndarray
    posterior: np.ndarray
    labels: np.ndarray
    patient_hash: np.ndarray
    split: np.ndarray
    lesion_boxes: list  # per study: list of (y0, x0, y1, x1) boxes in the anterior view
    study_key: np.ndarray  # the phantom's own study ids (synthetic, not identifiers)

    def select(self, split: str) -> "StudyArrays":
        return self.subset(self.split == split)

    def subset(self, keep: np.ndarray) -> "StudyArrays":
        return StudyArrays(self.anterior[keep], self.posterior[keep], self.labels[keep],
                           self.patient_hash[keep], self.split[keep],
                           [b for b, k in zip(self.lesion_boxes, keep) if k], self.study_key[keep])

    def __len__(self) -> int:
        return len(self.labels)


def render(spec: SyntheticSpec, progress=None) -> StudyArrays:
    phantom = BoneScanPhantom(shape=(spec.height, spec.width), counts_per_view=spec.counts_per_view,
                              class_probs=spec.class_probs, seed=spec.seed, difficulty=spec.difficulty)
    ant, post, labels, patients, boxes, keys = [], [], [], [], [], []
    for i in range(spec.num_studies):
        study = phantom.study(i)
        ant.append(study.anterior)
        post.append(study.posterior)
        labels.append(study.label)
        keys.append(study.study_id)
        patients.append(keyed_hash(study.patient_id, f"phantom-{spec.seed}"))
        boxes.append([list(lesion.box_anterior) for lesion in study.lesions if lesion.kind == POSITIVE_CLASS])
        if progress is not None:
            progress(i + 1)
    labels = np.array(labels, np.int64)
    patients = np.array(patients)
    binary = (labels == CLASS_NAMES.index(POSITIVE_CLASS)).astype(int)
    split = assign_splits(patients, binary, seed=spec.seed)
    return StudyArrays(np.stack(ant), np.stack(post), labels, patients, split, boxes, np.array(keys))


_LOADED: dict[Path, StudyArrays] = {}  # one read per process: train, validation and test share it


def load_or_render(spec: SyntheticSpec, log=print) -> StudyArrays:
    """Load the cached set for `spec`, rendering and caching it (atomically) on first use."""
    path = cache_root() / "phantom" / f"{spec.key()}.npz"
    if path in _LOADED:
        return _LOADED[path]
    if path.exists():
        log(f"Using cached synthetic dataset {path} ({spec.num_studies} studies)")
        with np.load(path, allow_pickle=False) as data:
            boxes = json.loads(str(data["lesion_boxes"]))
            _LOADED[path] = StudyArrays(data[ANTERIOR], data[POSTERIOR], data["labels"],
                                        data["patient_hash"], data["split"], boxes, data["study_key"])
        return _LOADED[path]
    log(f"Rendering {spec.num_studies} synthetic bone-scan studies ({spec.height}x{spec.width} per view) ...")
    arrays = render(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_for_write(path) as fh:
        np.savez(fh, anterior=arrays.anterior, posterior=arrays.posterior, labels=arrays.labels,
                 patient_hash=arrays.patient_hash, split=arrays.split, study_key=arrays.study_key,
                 lesion_boxes=np.array(json.dumps(arrays.lesion_boxes)))
    log(f"Cached at {path}")
    _LOADED[path] = arrays
    return arrays
