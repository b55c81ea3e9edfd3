"""The pointing game: does a map's peak land on a known phantom lesion, more often than chance?"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from tfbonemet.tasks.explain.cams import explain_studies
from tfbonemet.vocab import ANTERIOR, POSTERIOR, VIEWS


def body_mask(counts: np.ndarray) -> np.ndarray:
    """Pixels inside the body outline: smoothed counts above 2% of their 99th percentile, holes filled."""
    smooth = ndimage.gaussian_filter(np.asarray(counts, np.float64), 2)
    return ndimage.binary_fill_holes(smooth > 0.02 * np.percentile(smooth, 99))


def lesion_region(shape, boxes, tolerance: int) -> np.ndarray:
    region = np.zeros(shape, bool)
    for y0, x0, y1, x1 in boxes:
        region[max(y0 - tolerance, 0):y1 + tolerance + 1, max(x0 - tolerance, 0):x1 + tolerance + 1] = True
    return region


def pointing_game(run, split: str = "test", method: str = "gradcam", tolerance: int | None = None,
                  limit: int | None = None, views: str = "anterior", log=print, **options) -> dict:
    """Fraction of metastatic phantom studies whose map peak lies in a lesion box dilated by `tolerance` px.

    Maps are scored in the source view's frame (the preprocessor's inverse), where the boxes are.
    `views="anterior"` scores the anterior map alone; `"both"` adds the posterior map mirrored
    into the anterior frame (deep lesions show best posteriorly), using unnormalised maps so
    each view keeps its own weight. Chance is what a peak drawn uniformly over the body would
    score: the dilated boxes' share of the body area, averaged over studies. The one-sided
    binomial p-value tests score > chance.
    """
    from scipy.stats import binomtest

    from tfbonemet.data.datasets import open_split
    from tfbonemet.errors import ConfigError, DataError
    from tfbonemet.vocab import CLASS_NAMES, POSITIVE_CLASS

    if views not in (ANTERIOR, "both"):
        raise ConfigError(f"pointing-game views must be 'anterior' or 'both', got {views!r}")
    data = open_split(run.config, split)
    if data.lesion_boxes is None or data.class_names != CLASS_NAMES:
        raise DataError(f"data {run.config.data!r} records no lesion boxes; the pointing game needs the phantom")
    wanted = [i for i, (label, boxes) in enumerate(zip(data.labels, data.lesion_boxes))
              if label == CLASS_NAMES.index(POSITIVE_CLASS) and boxes[ANTERIOR]][:limit]
    if not wanted:
        raise DataError(f"split {split!r} of data {run.config.data!r} has no metastatic studies with lesion boxes")
    chosen = {i: study for i, study in data.raw_studies(VIEWS) if i in set(wanted)}
    studies = [chosen[i] for i in wanted]
    tolerance = tolerance if tolerance is not None else max(2, round(0.015 * studies[0][ANTERIOR].shape[1]))
    explanations = explain_studies(run, studies, [f"{split}-{i:03d}" for i in wanted], method,
                                   normalise=views == ANTERIOR, **options)
    hits, chances = [], []
    for i, study, explanation in zip(wanted, studies, explanations):
        cam = explanation.maps.get(ANTERIOR, next(iter(explanation.maps.values())))
        if views == "both" and POSTERIOR in explanation.maps:
            cam = cam + run.preprocessor.as_anterior(POSTERIOR, explanation.maps[POSTERIOR])
        region = lesion_region(cam.shape, data.lesion_boxes[i][ANTERIOR], tolerance)
        body = body_mask(study[ANTERIOR]) | region
        peak = np.unravel_index(np.argmax(cam), cam.shape)
        hits.append(bool(region[peak]))
        chances.append(float(region.sum() / body.sum()))
    n, k, chance = len(hits), int(sum(hits)), float(np.mean(chances))
    return {"split": split, "method": method, "views": views, "studies": n, "hits": k, "score": k / n,
            "chance": chance, "tolerance_px": int(tolerance),
            "p_value": float(binomtest(k, n, chance, alternative="greater").pvalue)}
