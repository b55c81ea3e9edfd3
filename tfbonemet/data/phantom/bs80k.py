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
CLASS_PROBS = (0.65, 0.15, 0.1, 0.1)  # about 8 % of patients then hold a right-chest metastasis, as in BS-80K
# The display window: 255 at this many times the view's hottest count. Real BS-80K chest crops are
# dark (median body pixel 11/255, brightest 53: bs80k_reference.json), as a whole-body display
# scaled to the bladder leaves the chest; the range spreads patients as the real crops spread.
WINDOW_GAIN = (3.0, 4.2)
REFERENCE_STATS = Path(__file__).with_name("bs80k_reference.json")
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


def normal_peak(study: PhantomStudy, view: str) -> float:
    """The view's hottest count outside its metastases: the bladder or the hottest normal bone.

    A display windowed to the hottest pixel would dim every study whose lesion is that pixel.
    """
    counts = np.array(getattr(study, view), np.float64)
    for lesion in study.lesions:
        if lesion.kind == "metastasis":
            y0, x0, y1, x1 = (int(round(v)) for v in getattr(lesion, f"box_{view}"))
            counts[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = 0
    return float(counts.max())


def display_8bit(counts: np.ndarray, mask: np.ndarray, level: float) -> np.ndarray:
    """Counts windowed to 0-255 up to `level` (hotter saturates), outside the body black."""
    image = np.clip(np.round(counts.astype(np.float64) * (255.0 / max(level, 1.0))), 0, 255).astype(np.uint8)
    image[~mask] = 0
    return image


def crops(study: PhantomStudy, regions: Iterable[str] = REGIONS) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """region -> (anterior crop, posterior crop, label), as 8-bit display images."""
    gain = np.random.default_rng(zlib.crc32(study.study_id.encode())).uniform(*WINDOW_GAIN)
    masks = {ANTERIOR: study.body_mask, POSTERIOR: study.body_mask[:, ::-1]}
    shown = {}
    for view in VIEWS:
        counts = getattr(study, view)
        level = normal_peak(study, view) * gain  # the reader's whole-body window
        shown[view] = display_8bit(counts, masks[view], level)
    out = {}
    for region in regions:
        boxes = crop_boxes(study, region)
        views = [shown[v][y0:y1, x0:x1] for v, (y0, x0, y1, x1) in ((v, boxes[v]) for v in VIEWS)]
        out[region] = (views[0], views[1], region_label(study, region))
    return out


DARK_LEVEL = 5  # 8-bit levels below this read as black: the mask outside the body, dark soft tissue


def _spread(values) -> dict:
    values = np.asarray(values, np.float64)
    return {"median": round(float(np.median(values)), 3), "p10": round(float(np.percentile(values, 10)), 3),
            "p90": round(float(np.percentile(values, 90)), 3)}


def crop_statistics(images: list[np.ndarray], labels) -> dict:
    """Aggregate statistics of 8-bit crops (both views pooled), no pixel of any image kept.

    Per crop, then the median and 10th / 90th percentiles over crops: `dark_fraction` (pixels below
    DARK_LEVEL), `body_q50/q90/q99` (quantiles of the other pixels), `max`; `max_by_class`; `hot_pixels`
    per class (pixels above `hot_level`, the 99.9th percentile of all negative crops' pixels: the area
    of hot spots, which positives' lesions add); `positive_share_of_crops`.
    """
    labels = np.asarray(labels)
    per_crop = {"dark_fraction": [], "body_q50": [], "body_q90": [], "body_q99": [], "max": []}
    for image in images:
        image = np.asarray(image, np.float64)
        body = image[image >= DARK_LEVEL]
        per_crop["dark_fraction"].append(np.mean(image < DARK_LEVEL))
        for q in (50, 90, 99):
            per_crop[f"body_q{q}"].append(np.percentile(body, q) if body.size else 0.0)
        per_crop["max"].append(image.max())
    negatives = [np.ravel(i) for i, y in zip(images, labels) if y == 0]
    hot_level = float(np.percentile(np.concatenate(negatives), 99.9))
    hot = np.array([np.sum(np.asarray(i) > hot_level) for i in images])
    maxima = np.array(per_crop["max"])
    out = {name: _spread(v) for name, v in per_crop.items()}
    out["max_by_class"] = {"negative": _spread(maxima[labels == 0]), "positive": _spread(maxima[labels == 1])}
    out["hot_level"] = hot_level
    out["hot_pixels"] = {"negative": _spread(hot[labels == 0]), "positive": _spread(hot[labels == 1])}
    out["positive_share_of_crops"] = round(float(labels.mean()), 4)
    out["crops"] = int(len(images))
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
