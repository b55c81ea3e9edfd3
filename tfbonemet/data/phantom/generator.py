"""BoneScanPhantom: draws whole-body two-view Tc-99m MDP studies with known findings.

Geometry convention (as on a gamma-camera display): the anterior view has the patient's right on
the image left; the posterior view is its left-right mirror, so mirroring it back aligns it
with the anterior view. One seed and index always give the same study.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
from scipy import ndimage

from tfbonemet.data.phantom import acquisition, anatomy, findings
from tfbonemet.data.phantom.anatomy import CHORD, GAUSS
from tfbonemet.data.phantom.difficulty import DEFAULT_DIFFICULTY, get as get_difficulty
from tfbonemet.vocab import CLASS_NAMES, POSITIVE_CLASS

DEFAULT_SHAPE = (1024, 256)
SMALL_SHAPE = (512, 128)
FIELD_LENGTH_MM = 2000.0  # head-to-foot length covered by a whole-body sweep
GAIN_EXTENT = 2.55  # a finding's drawn extent in radii: Gaussian FWHM equals its diameter


@dataclasses.dataclass(frozen=True)
class Lesion:
    """One finding placed by the generator, with its box in each view (pixels, y0 x0 y1 x1)."""

    kind: str
    site: str
    center_mm: tuple[float, float]
    depth: float
    radius_mm: float
    intensity: float
    box_anterior: tuple[int, int, int, int]
    box_posterior: tuple[int, int, int, int]


@dataclasses.dataclass(frozen=True)
class PhantomStudy:
    """A rendered study: two views of integer counts plus its ground truth.

    `lesions` are the class's own findings; `mimics` are benign look-alikes (any class).
    `body_mask` and `landmarks` (name -> (row, col)) are in the anterior view's pixels.
    """

    study_id: str
    patient_id: str
    label: int
    anterior: np.ndarray
    posterior: np.ndarray
    lesions: tuple[Lesion, ...]
    pixel_spacing_mm: float
    mimics: tuple[Lesion, ...] = ()
    body_mask: np.ndarray | None = None
    landmarks: dict | None = None

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.label]

    @property
    def is_metastatic(self) -> bool:
        return self.label == CLASS_NAMES.index(POSITIVE_CLASS)


class BoneScanPhantom:
    """Draws phantom studies. Same seed and index always give the same study.

    Args:
        shape: (height, width) of each view in pixels; the field stays 2000 mm long.
        counts_per_view: typical total counts in the anterior view (kept within 0.5-2.5 M).
        class_probs: probability of each class in CLASS_NAMES order.
        seed: base seed; study i uses the stream (seed, i).
        difficulty: "easy", "realistic" or "hard" (phantom/difficulty.py).
    """

    def __init__(self, shape=DEFAULT_SHAPE, counts_per_view=1.2e6,
                 class_probs=(0.4, 0.4, 0.1, 0.1), seed=0, difficulty=DEFAULT_DIFFICULTY):
        height, width = int(shape[0]), int(shape[1])
        if height < 64 or width < 16:
            raise ValueError(f"phantom shape {shape} is too small: need at least 64x16 pixels")
        if len(class_probs) != len(CLASS_NAMES) or not np.isclose(sum(class_probs), 1.0):
            raise ValueError(f"class_probs must be {len(CLASS_NAMES)} probabilities that sum to 1")
        self.shape = (height, width)
        self.counts_per_view = float(counts_per_view)
        self.class_probs = np.asarray(class_probs, dtype=float)
        self.seed = int(seed)
        self.difficulty = get_difficulty(difficulty)
        self.pixel_mm = FIELD_LENGTH_MM / height

    def __iter__(self) -> Iterator[PhantomStudy]:
        i = 0
        while True:
            yield self.study(i)
            i += 1

    def studies(self, n: int, start: int = 0) -> list[PhantomStudy]:
        return [self.study(i) for i in range(start, start + n)]

    def study(self, index: int, label: int | None = None, patient: int | None = None,
              noise: bool = True) -> PhantomStudy:
        """Render study `index`. `patient` lets several studies share one body (follow-up scans);
        `noise=False` gives the expected counts (for tests of where findings lie)."""
        # separate streams: the same index with another label keeps its body, mimics and acquisition
        rng = np.random.default_rng([self.seed, int(index)])
        class_rng, mimic_rng, acq_rng = (np.random.default_rng([self.seed, int(index), k]) for k in range(3))
        if label is None:
            label = int(rng.choice(len(CLASS_NAMES), p=self.class_probs))
        patient = int(index if patient is None else patient)
        body_rng = np.random.default_rng([self.seed, 1_000_003, patient])
        habitus = _habitus(body_rng)
        skeleton = anatomy.skeleton(body_rng, habitus)
        outline = anatomy.body(habitus, skeleton.landmarks)
        found = findings.draw(class_rng, mimic_rng, int(label), skeleton, self.difficulty)
        posture = acquisition.Posture(self.shape, self.pixel_mm, habitus["scale"], habitus["shift_x_mm"],
                                      habitus["shift_y_mm"], habitus["tilt"])
        total = np.clip(self.counts_per_view * self.difficulty.count_factor * acq_rng.lognormal(0, 0.35),
                        *acquisition.CLINICAL_COUNTS)
        expected, mask = self._expected(acq_rng, habitus, skeleton, outline, found, posture)
        anterior, posterior = acquisition.counts(acq_rng, expected, total, noise)
        records = [self._record(f, posture) for f in found.items]
        landmarks = {name: tuple(float(v) for v in posture(x, y)) for name, (x, y, _) in skeleton.landmarks.items()}
        return PhantomStudy(
            study_id=f"PHANTOM-{self.seed:04d}-{index:06d}",
            patient_id=f"FAKE-{self.seed:04d}-{patient:06d}",
            label=int(label), anterior=anterior, posterior=posterior[:, ::-1].copy(),
            lesions=tuple(r for r, f in zip(records, found.items) if not f.mimic),
            pixel_spacing_mm=self.pixel_mm,
            mimics=tuple(r for r, f in zip(records, found.items) if f.mimic),
            body_mask=mask, landmarks=landmarks)

    def _expected(self, rng, habitus, skeleton, outline, found, posture):
        """Noise-free anterior and posterior images (both in anterior geometry) and the body mask."""
        seg, ell = skeleton.arrays()
        for part, factor in found.part_gain.items():
            seg[seg[:, 0] == part, 7:9] *= factor
            ell[ell[:, 0] == part, 6] *= factor
        patches = acquisition.texture(rng, self.shape, self.pixel_mm, self.difficulty.texture)
        bone = tuple(b * patches for b in acquisition.rasterize(self.shape, posture, seg, ell))
        gains = [f for f in found.items if f.mode == "gain"]
        if gains:  # a focus `intensity` times as hot as the bone around it, drawn over the whole focus
            bone = tuple(b + self._foci(b, gains, posture) for b in bone)

        trunk = habitus["trunk_mm"]
        lm = skeleton.landmarks
        kidney_y = lm["L1"][1] + 10
        organs = [(0, -58, kidney_y, 27, 52, 0.15, habitus["kidney"] * found.kidney[0], 0.78, trunk, CHORD),
                  (0, 58, kidney_y - 8, 27, 52, -0.15, habitus["kidney"] * found.kidney[1], 0.78, trunk, CHORD),
                  (0, 0, lm["hip_right"][1] + 15, 45 * habitus["bladder_size"], 35 * habitus["bladder_size"], 0.0,
                   habitus["bladder"] * found.bladder, 0.3, trunk, CHORD)]
        organs += [(0, *f.center, GAIN_EXTENT * f.radius, GAIN_EXTENT * f.radius, 0.0, f.intensity, f.depth,
                    trunk, GAUSS) for f in found.items if f.mode == "hot"]
        hot = acquisition.rasterize(self.shape, posture, np.empty((0, 15)), np.array(organs))
        # soft tissue is smooth: drawn on a coarser grid, then interpolated
        factor = acquisition.coarse_factor(self.shape, 8.0 / self.pixel_mm)
        coarse = posture.coarser(factor)
        soft = acquisition.rasterize(coarse.shape, coarse, *outline.arrays())
        soft = [ndimage.zoom(s, factor, order=1, grid_mode=True, mode="nearest") for s in soft]
        thickness = soft[0] + soft[1]
        level = habitus["soft_tissue"] * found.soft
        fwhm = rng.uniform(*self.difficulty.blur_fwhm_mm)
        fraction = rng.uniform(0.25, 0.45)
        views = []
        for b, h, s in zip(bone, hot, soft):
            primary = b + h + level * s
            views.append(np.maximum(acquisition.blur(primary, fwhm, self.pixel_mm)
                                    + acquisition.scatter(primary, self.pixel_mm, fraction), 0.0))
        return views, thickness > 0.01 * thickness.max()

    def _foci(self, bone: np.ndarray, gains: list, posture: acquisition.Posture) -> np.ndarray:
        rows = []
        for f in gains:
            row, col = (int(v) for v in posture(f.center[0], f.center[1]))
            half = max(int(round(float(posture.length(f.radius)))), 1)
            window = bone[max(row - half, 0):row + half + 1, max(col - half, 0):col + half + 1]
            local = window.max() if window.size else 0.0
            extent = GAIN_EXTENT * f.radius
            rows.append((0, *f.center, extent, extent, 0.0, (f.intensity - 1.0) * local, 0.0, 0.0, GAUSS))
        return acquisition.rasterize(self.shape, posture, np.empty((0, 15)), np.array(rows), attenuate=False)[0]

    def _record(self, f: findings.Finding, posture: acquisition.Posture) -> Lesion:
        row, col = (float(v) for v in posture(f.center[0], f.center[1]))
        half = max(float(posture.length(f.radius)), 1.5)
        width = self.shape[1]
        boxes = [(row, col), (row, width - col)]
        return Lesion(kind=f.kind, site=f.site, center_mm=tuple(float(v) for v in f.center), depth=float(f.depth),
                      radius_mm=float(f.radius), intensity=float(f.intensity),
                      box_anterior=_box(*boxes[0], half), box_posterior=_box(*boxes[1], half))


def _box(row, col, half) -> tuple[int, int, int, int]:
    return tuple(int(v) for v in (np.floor(row - half), np.floor(col - half), np.ceil(row + half), np.ceil(col + half)))


def _habitus(rng) -> dict:
    """One patient's build: size, posture, tissue thickness, age, organ uptake."""
    build = rng.uniform(0.0, 1.0)  # 0 slim .. 1 obese
    return {
        "scale": rng.uniform(0.86, 1.02),  # body height relative to the ~1870 mm skeleton
        "shift_x_mm": float(np.clip(rng.normal(0, 10), -20, 20)),  # posture: off-centre on the table
        "shift_y_mm": rng.uniform(30, 90),
        "tilt": rng.normal(0, 0.02),  # small rotation (radians)
        "trunk_mm": 180 + 120 * build + rng.normal(0, 10),  # antero-posterior thickness
        "chest_mm": rng.uniform(125, 150),
        "waist_mm": 125 + 70 * build + rng.normal(0, 8),
        "limb_mm": 40 + 20 * build,
        "age": rng.uniform(0.0, 1.0),
        "soft_tissue": rng.uniform(0.05, 0.11) * (1 + 0.5 * build),
        "kidney": rng.uniform(0.25, 0.6),
        "bladder": rng.uniform(0.8, 2.5),
        "bladder_size": rng.uniform(0.7, 1.3),
    }
