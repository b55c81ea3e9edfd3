"""Write dummy_data/: one tiny manual dir per layout (dicom, bs80k, manifest) for the builder test.

Run from the repository root: python tfds_builders/bone_scintigraphy/make_dummy_data.py
The files are committed; rerunning rewrites them identically.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from tfbonemet.data.phantom import CLASS_NAMES, BoneScanPhantom
from tfbonemet.data.phantom_dicom import write_dataset, write_study
from tfbonemet.data.provenance import mark_phantom

DUMMY = Path(__file__).parent / "dummy_data"
# (patient, label) per study: patients 0 and 1 have follow-up scans; every class appears
STUDIES = [(0, 1), (0, 1), (1, 0), (1, 0), (2, 1), (3, 2), (4, 3), (5, 1), (6, 0), (7, 1), (8, 0), (9, 2)]


def dicom_layout(out: Path) -> None:
    phantom = BoneScanPhantom(shape=(64, 16), seed=7)
    studies = [phantom.study(i, label=label, patient=patient) for i, (patient, label) in enumerate(STUDIES)]
    write_dataset(studies, out, split_views=True)


def bs80k_layout(out: Path, rng: np.random.Generator) -> None:
    names = [f"{i:04d}.jpg" for i in range(10)]
    for view in ("chestRANT", "chestRPOST"):
        folder = out / view
        folder.mkdir(parents=True)
        for name in names:
            Image.fromarray(rng.integers(0, 256, (16, 8), dtype=np.uint8)).save(folder / name, quality=90)
        labels = rng.integers(0, 2, len(names)) if view.endswith("ANT") else np.zeros(len(names), int)
        (folder / f"{view}.txt").write_text("".join(f"{n} {l}\n" for n, l in zip(names, labels)))


def manifest_layout(out: Path, rng: np.random.Generator) -> None:
    (out / "images").mkdir(parents=True)
    rows = []
    for i, (patient, label) in enumerate(STUDIES[:9]):
        paths = {}
        for view in ("anterior", "posterior"):
            paths[view] = f"images/s{i}_{view[:3]}.png"
            Image.fromarray(rng.integers(0, 4000, (32, 8), dtype=np.uint16)).save(out / paths[view])
        rows.append({**paths, "label": CLASS_NAMES[label], "patient_id": f"P{patient}"})
    two_frame, = write_study(BoneScanPhantom(shape=(64, 16), seed=8).study(0, label=0), out / "images")
    rows.append({"anterior": f"images/{two_frame.name}", "posterior": f"images/{two_frame.name}",
                 "label": "normal", "patient_id": "P99"})
    with open(out / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["anterior", "posterior", "label", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    shutil.rmtree(DUMMY, ignore_errors=True)
    rng = np.random.default_rng(0)
    dicom_layout(DUMMY / "dicom")
    bs80k_layout(DUMMY / "bs80k", rng)
    manifest_layout(DUMMY / "manifest", rng)
    for layout in ("bs80k", "manifest"):  # synthetic: they build without a site secret
        mark_phantom(DUMMY / layout)


if __name__ == "__main__":
    main()
