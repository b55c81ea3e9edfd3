"""Write dummy_data/: a tiny folder layout (train|val|test/NORMAL|PNEUMONIA) and a tiny labels.csv layout.

Run from the repository root: python tfds_builders/chest_xray/make_dummy_data.py
The files are committed; rerunning rewrites them identically.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from tfbonemet.data.phantom import BoneScanPhantom
from tfbonemet.data.phantom_dicom import write_study
from tfbonemet.data.provenance import mark_phantom

DUMMY = Path(__file__).parent / "dummy_data"
FOLDER_COUNTS = {"train": 3, "val": 1, "test": 2}  # images per class


def folder_layout(out: Path, rng: np.random.Generator) -> None:
    for split, count in FOLDER_COUNTS.items():
        for label in ("NORMAL", "PNEUMONIA"):
            folder = out / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (12, 10), dtype=np.uint8)
                if i % 2:  # the public set mixes grey and RGB JPEGs (grey radiographs saved in colour)
                    pixels = np.repeat(pixels[..., np.newaxis], 3, axis=-1)
                Image.fromarray(pixels).save(folder / f"person{i}_{label.lower()}.jpeg", quality=90)


def csv_layout(out: Path, rng: np.random.Generator) -> None:
    (out / "images").mkdir(parents=True)
    rows = []
    for i in range(9):
        name = f"images/cxr{i}.png"
        Image.fromarray(rng.integers(0, 4096, (12, 10), dtype=np.uint16)).save(out / name)
        rows.append({"file": name, "label": ("normal", "pneumonia")[i % 2], "patient_id": f"P{i // 2}"})
    anterior, _ = write_study(BoneScanPhantom(shape=(64, 16), seed=9).study(0), out / "images", split_views=True)
    radiograph = pydicom.dcmread(anterior)
    radiograph.Modality = "DX"  # the reader takes a radiograph's modality only (the pixels are the phantom's)
    radiograph.save_as(anterior)
    rows.append({"file": f"images/{anterior.name}", "label": "normal", "patient_id": "P9"})
    (out / "images" / f"{anterior.name.replace('ANTE', 'POST')}").unlink()
    with open(out / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "label", "patient_id"])
        writer.writeheader()
        writer.writerows(rows)
    mark_phantom(out)  # synthetic: builds without a site secret


def main() -> None:
    shutil.rmtree(DUMMY, ignore_errors=True)
    rng = np.random.default_rng(0)
    folder_layout(DUMMY / "folders", rng)
    csv_layout(DUMMY / "csv", rng)


if __name__ == "__main__":
    main()
