"""Aggregate statistics of a BS-80K-layout folder of chest crops (real or phantom), as JSON.

Only aggregates leave the images (quantiles, fractions, counts; tfbonemet.data.phantom.bs80k.
crop_statistics says which): the real development part's figures are the phantom's calibration
target, tfbonemet/data/phantom/bs80k_reference.json, which tests/test_phantom_bs80k.py holds the
phantom to.

  python bench/bs80k_stats.py DEV_FOLDER [--region chestR] > stats.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tfbonemet.data.phantom.bs80k import crop_statistics


def read(folder: Path, region: str):
    """Every crop of both views, with its label."""
    images, labels = [], []
    for view in ("ANT", "POST"):
        sub = folder / f"{region}{view}"
        for line in (sub / f"{sub.name}.txt").read_text().splitlines():
            if line.strip():
                name, label = line.split()
                images.append(np.asarray(Image.open(sub / name).convert("L")))
                labels.append(int(label))
    return images, labels


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--region", default="chestR")
    args = parser.parse_args()
    json.dump(crop_statistics(*read(args.folder, args.region)), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
