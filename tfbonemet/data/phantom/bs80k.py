"""Phantom studies as BS-80K regional crops: 8-bit display captures, background masked to black.

BS-80K ships anterior and posterior crops of body regions (`chestRANT/`, `chestRPOST/`, ...), each
folder with its JPEGs and `<folder>/<folder>.txt` of `filename label` lines, where 1 means a
metastasis in that region of that patient (a study with metastases only in the pelvis is 0 for
its chest crops). One filename is one patient across folders. tfbonemet.data.sources reads this.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from tfbonemet.data.phantom.generator import DEFAULT_SHAPE, PhantomStudy
from tfbonemet.errors import DataError
from tfbonemet.io.atomic import open_for_write, write_text
from tfbonemet.vocab import ANTERIOR, POSITIVE_CLASS, POSTERIOR, VIEWS

REGIONS = ("chestR", "chestL")
CROP_SIZE = (170, 68)  # pixels of a real BS-80K chest crop, from a 1024x256 whole-body view
CLASS_PROBS = (0.6, 0.2, 0.1, 0.1)  # about 10 % of right-chest crops then hold a metastasis
WINDOW_PERCENTILE = 99.0  # of the body's pixels: the hottest 1 % (bladder, hot spots) saturate
_MIDLINE_OVERLAP = 0.08  # fraction of the crop width that reaches past the spine's centre
_ABOVE_CLAVICLES_MM = 10.0


def crop_size(shape) -> tuple[int, int]:
    """The chest crop size for a whole-body view of `shape` (170x68 at 1024x256)."""
    return (max(8, round(CROP_SIZE[0] * shape[0] / DEFAULT_SHAPE[0])),
            max(4, round(CROP_SIZE[1] * shape[1] / DEFAULT_SHAPE[1])))


def crop_boxes(study: PhantomStudy, region: str) -> dict[str, tuple[int, int, int, int]]:
    """(y0, x0, y1, x1) of `region` in each view as displayed (patient's right: anterior left, posterior right)."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; expected one of {', '.join(REGIONS)}")
    height, width = study.anterior.shape
    h, w = crop_size(study.anterior.shape)
    mid = study.landmarks["midline"][1]
    overlap = round(_MIDLINE_OVERLAP * w)
    x0 = int(round(mid)) + overlap - w if region == "chestR" else int(round(mid)) - overlap
    x0 = int(np.clip(x0, 0, width - w))
    y0 = int(np.clip(round(study.landmarks["chest_top"][0] - _ABOVE_CLAVICLES_MM / study.pixel_spacing_mm),
                     0, height - h))
    return {ANTERIOR: (y0, x0, y0 + h, x0 + w), POSTERIOR: (y0, width - x0 - w, y0 + h, width - x0)}


def region_label(study: PhantomStudy, region: str) -> int:
    """1 if a metastasis' centre lies inside the region's anterior crop."""
    y0, x0, y1, x1 = crop_boxes(study, region)[ANTERIOR]
    for lesion in study.lesions:
        if lesion.kind == POSITIVE_CLASS:
            r = (lesion.box_anterior[0] + lesion.box_anterior[2]) / 2
            c = (lesion.box_anterior[1] + lesion.box_anterior[3]) / 2
            if y0 <= r < y1 and x0 <= c < x1:
                return 1
    return 0


def display_8bit(counts: np.ndarray, mask: np.ndarray, level: float) -> np.ndarray:
    """Counts windowed to 0-255 up to `level` (hotter saturates), outside the body black."""
    image = np.clip(np.round(counts.astype(np.float64) * (255.0 / max(level, 1.0))), 0, 255).astype(np.uint8)
    image[~mask] = 0
    return image


def crops(study: PhantomStudy, regions: Iterable[str] = REGIONS) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """region -> (anterior crop, posterior crop, label), as 8-bit display images."""
    jitter = np.random.default_rng(zlib.crc32(study.study_id.encode())).uniform(0.75, 1.15)
    masks = {ANTERIOR: study.body_mask, POSTERIOR: study.body_mask[:, ::-1]}
    shown = {}
    for view in VIEWS:
        counts = getattr(study, view)
        level = np.percentile(counts[masks[view]], WINDOW_PERCENTILE) * jitter  # the reader's whole-body window
        shown[view] = display_8bit(counts, masks[view], level)
    out = {}
    for region in regions:
        boxes = crop_boxes(study, region)
        views = [shown[v][y0:y1, x0:x1] for v, (y0, x0, y1, x1) in ((v, boxes[v]) for v in VIEWS)]
        out[region] = (views[0], views[1], region_label(study, region))
    return out


def check_empty_of_datasets(out_dir: Path) -> None:
    """DataError if `out_dir` already holds a dataset (labels.csv, manifest.csv or a label list)."""
    if not out_dir.is_dir():
        return
    found = [p for p in (out_dir / "labels.csv", out_dir / "manifest.csv") if p.is_file()]
    found += sorted(out_dir.glob("*/*.txt"))
    if found:
        raise DataError(f"{out_dir}: already holds a dataset ({found[0].relative_to(out_dir)}); "
                        f"choose an empty folder rather than overwrite it")


def write_bs80k(studies: Iterable[PhantomStudy], out_dir, regions: Iterable[str] = REGIONS,
                quality: int = 90) -> dict[str, int]:
    """Write `<region>ANT/` and `<region>POST/` folders of JPEG crops and label lists; region -> positives.

    Files appear atomically; the label lists are written last, so an interrupted run leaves no dataset.
    """
    out_dir = Path(out_dir)
    check_empty_of_datasets(out_dir)
    regions = tuple(regions)
    folders = {(r, v): out_dir / f"{r}{v}" for r in regions for v in ("ANT", "POST")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True, mode=0o755)
    lines = {key: [] for key in folders}
    for n, study in enumerate(studies):
        name = f"{n:05d}.jpg"
        for region, (ant, post, label) in crops(study, regions).items():
            for view, image in (("ANT", ant), ("POST", post)):
                with open_for_write(folders[region, view] / name) as fh:
                    Image.fromarray(image, "L").save(fh, "JPEG", quality=quality)
                lines[region, view].append(f"{name} {label}\n")
    for (region, view), folder in folders.items():
        write_text(folder / f"{folder.name}.txt", "".join(lines[region, view]))
    return {r: sum(line.endswith(" 1\n") for line in lines[r, "ANT"]) for r in regions}


def bs80k_arrays(phantom, n: int, start: int = 0, region: str = "chestR") -> dict[str, np.ndarray]:
    """In-process BS-80K-like crops of studies start..start+n: anterior, posterior (N, h, w) uint8, label, patient."""
    ant, post, labels = [], [], []
    for i in range(start, start + n):
        a, p, label = crops(phantom.study(i), (region,))[region]
        ant.append(a)
        post.append(p)
        labels.append(label)
    return {ANTERIOR: np.stack(ant), POSTERIOR: np.stack(post), "label": np.array(labels),
            "patient": np.arange(start, start + n)}
