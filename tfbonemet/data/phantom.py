"""Synthetic whole-body bone scintigraphy (Tc-99m MDP) phantom.

Real bone scans cannot ship with an open-source package, so tests, demos and the default
`tfbonemet fit` use this generator. It renders anterior and posterior planar views of a
skeleton-shaped uptake pattern in millimetres, attenuates each structure by its depth in the
body separately per view, adds Poisson counting noise at clinical count levels, and records
where every finding was placed so explanations can be checked against ground truth.

Geometry convention (as on a gamma-camera display): anterior view has the patient's right on
the image left; the posterior view is the left-right mirror, so mirroring it back aligns it
with the anterior view.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
from scipy import ndimage

CLASS_NAMES = ("normal", "metastasis", "arthritis", "thyroid_carcinoma")
DEFAULT_SHAPE = (1024, 256)
SMALL_SHAPE = (512, 128)
FIELD_LENGTH_MM = 2000.0  # head-to-foot length covered by a whole-body sweep
MU_PER_MM = 0.012  # effective linear attenuation of 140 keV photons in tissue, with build-up
BODY_THICKNESS_MM = 200.0
BONE_SIGMA_MM = 4.0


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
    """A rendered study: two views of integer counts plus its ground truth."""

    study_id: str
    patient_id: str
    label: int
    anterior: np.ndarray
    posterior: np.ndarray
    lesions: tuple[Lesion, ...]
    pixel_spacing_mm: float

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.label]

    @property
    def is_metastatic(self) -> bool:
        return self.label == CLASS_NAMES.index("metastasis")


@dataclasses.dataclass(frozen=True)
class _Bone:
    """A skeletal structure as points in body millimetres (x: patient's left +, y: from vertex)."""

    name: str
    points: np.ndarray  # (n, 2)
    depth: float  # 0 = anterior skin, 1 = posterior skin
    uptake: float  # relative uptake per point


def _segment(p0, p1, step=2.0) -> np.ndarray:
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    n = max(int(np.linalg.norm(p1 - p0) / step), 2)
    t = np.linspace(0.0, 1.0, n)[:, None]
    return p0 + t * (p1 - p0)


def _ellipse(center, axes, step=2.0, filled=False) -> np.ndarray:
    cx, cy = center
    ax, ay = axes
    if filled:
        xs = np.arange(-ax, ax + step, step)
        ys = np.arange(-ay, ay + step, step)
        gx, gy = np.meshgrid(xs, ys)
        inside = (gx / ax) ** 2 + (gy / ay) ** 2 <= 1.0
        return np.stack([gx[inside] + cx, gy[inside] + cy], axis=1)
    n = max(int(2 * np.pi * max(ax, ay) / step), 8)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], axis=1)


def _bilateral(name, make, depth, uptake) -> list[_Bone]:
    return [_Bone(f"{name}_{side}", make(sign), depth, uptake)
            for side, sign in (("right", -1.0), ("left", 1.0))]


def _skeleton(rng: np.random.Generator) -> list[_Bone]:
    """Adult skeleton in millimetres, lightly varied per patient (shoulder width, arm pose)."""
    shoulder = rng.uniform(150, 185)
    arm_out = rng.uniform(15, 45)
    hip = rng.uniform(85, 105)
    bones = [
        _Bone("skull", np.concatenate([_ellipse((0, 105), (72, 100)),
                                       _ellipse((0, 95), (60, 80), step=6, filled=True)]), 0.5, 0.8),
        _Bone("facial", _ellipse((0, 205), (40, 22), step=3, filled=True), 0.25, 0.6),
        _Bone("cervical_spine", _segment((0, 215), (0, 330), step=6), 0.7, 1.0),
        _Bone("thoracic_spine", _segment((0, 330), (0, 620), step=6), 0.75, 1.1),
        _Bone("lumbar_spine", _segment((0, 620), (0, 800), step=5), 0.75, 1.3),
        _Bone("sternum", _segment((0, 345), (0, 520), step=3), 0.05, 0.9),
        _Bone("sacrum", _ellipse((0, 860), (30, 45), step=4, filled=True), 0.8, 1.0),
    ]
    bones += _bilateral("clavicle", lambda s: _segment((s * 20, 325), (s * (shoulder - 15), 300)), 0.15, 0.9)
    bones += _bilateral("scapula", lambda s: np.concatenate([
        _segment((s * 60, 360), (s * (shoulder - 30), 350)),
        _segment((s * 60, 360), (s * 85, 480)),
        _segment((s * 85, 480), (s * (shoulder - 30), 350))]), 0.9, 0.7)
    bones += _bilateral("shoulder", lambda s: _ellipse((s * shoulder, 330), (18, 18), step=3, filled=True), 0.5, 1.0)
    for k in range(12):
        y = 345 + 24 * k
        reach = 80 + 65 * np.sin(np.pi * (k + 2) / 15)
        def rib(s, y=y, reach=reach):
            t = np.linspace(0.0, 1.0, 60)
            x = 15 + reach * np.sin(np.pi * t * 0.85)
            return np.stack([s * x, y + 70 * t ** 1.3], axis=1)
        bones += _bilateral(f"rib{k + 1}", rib, 0.55, 0.55)
    bones += _bilateral("humerus", lambda s: _segment((s * shoulder, 335), (s * (shoulder + arm_out), 610)), 0.5, 0.7)
    bones += _bilateral("elbow", lambda s: _ellipse((s * (shoulder + arm_out), 615), (14, 14), step=3, filled=True), 0.5, 0.9)
    bones += _bilateral("forearm", lambda s: np.concatenate([
        _segment((s * (shoulder + arm_out - 6), 620), (s * (shoulder + arm_out + 5), 840)),
        _segment((s * (shoulder + arm_out + 6), 620), (s * (shoulder + arm_out + 17), 840))]), 0.5, 0.6)
    bones += _bilateral("wrist", lambda s: _ellipse((s * (shoulder + arm_out + 11), 850), (15, 12), step=3, filled=True), 0.5, 0.9)
    bones += _bilateral("hand", lambda s: _ellipse((s * (shoulder + arm_out + 12), 905), (20, 40), step=5, filled=True), 0.5, 0.35)
    bones += _bilateral("ilium", lambda s: np.concatenate([
        _ellipse((s * hip, 840), (60, 55)), _ellipse((s * hip, 845), (45, 40), step=7, filled=True)]), 0.65, 0.8)
    bones += _bilateral("pubis", lambda s: _segment((s * 8, 985), (s * 55, 960)), 0.2, 0.8)
    bones += _bilateral("hip", lambda s: _ellipse((s * (hip + 5), 950), (22, 22), step=3, filled=True), 0.5, 1.0)
    bones += _bilateral("femur", lambda s: _segment((s * (hip + 5), 960), (s * 80, 1400)), 0.5, 0.75)
    bones += _bilateral("knee", lambda s: _ellipse((s * 80, 1410), (24, 18), step=3, filled=True), 0.5, 1.0)
    bones += _bilateral("tibia", lambda s: _segment((s * 78, 1430), (s * 75, 1790)), 0.3, 0.75)
    bones += _bilateral("ankle", lambda s: _ellipse((s * 75, 1800), (16, 14), step=3, filled=True), 0.5, 1.0)
    bones += _bilateral("foot", lambda s: _segment((s * 75, 1810), (s * 85, 1860)), 0.5, 0.9)
    return bones


_METASTASIS_SITES = {  # relative frequency of bone metastasis by region (axial skeleton dominates)
    "thoracic_spine": 0.22, "lumbar_spine": 0.18, "rib": 0.2, "ilium": 0.12, "sacrum": 0.05,
    "femur": 0.08, "skull": 0.05, "humerus": 0.04, "sternum": 0.03, "cervical_spine": 0.03,
}
_ARTHRITIS_JOINTS = ("knee", "shoulder", "wrist", "ankle", "hand", "elbow")


class BoneScanPhantom:
    """Draws phantom studies. Same seed and index always give the same study.

    Args:
        shape: (height, width) of each view in pixels; the field stays 2000 mm long.
        counts_per_view: mean total counts in the anterior view (clinical: about 0.8-2 M).
        class_probs: probability of each class in CLASS_NAMES order.
        seed: base seed; study i uses the stream (seed, i).
    """

    def __init__(self, shape=DEFAULT_SHAPE, counts_per_view=1.2e6,
                 class_probs=(0.4, 0.4, 0.1, 0.1), seed=0):
        height, width = int(shape[0]), int(shape[1])
        if height < 64 or width < 16:
            raise ValueError(f"phantom shape {shape} is too small: need at least 64x16 pixels")
        if len(class_probs) != len(CLASS_NAMES) or not np.isclose(sum(class_probs), 1.0):
            raise ValueError(f"class_probs must be {len(CLASS_NAMES)} probabilities that sum to 1")
        self.shape = (height, width)
        self.counts_per_view = float(counts_per_view)
        self.class_probs = np.asarray(class_probs, dtype=float)
        self.seed = int(seed)
        self.pixel_mm = FIELD_LENGTH_MM / height

    def __iter__(self) -> Iterator[PhantomStudy]:
        i = 0
        while True:
            yield self.study(i)
            i += 1

    def studies(self, n: int, start: int = 0) -> list[PhantomStudy]:
        return [self.study(i) for i in range(start, start + n)]

    def study(self, index: int, label: int | None = None, patient: int | None = None) -> PhantomStudy:
        """Render study `index`. `patient` lets several studies share one body (follow-up scans)."""
        rng = np.random.default_rng([self.seed, int(index)])
        if label is None:
            label = int(rng.choice(len(CLASS_NAMES), p=self.class_probs))
        patient = int(index if patient is None else patient)
        body_rng = np.random.default_rng([self.seed, 1_000_003, patient])
        body = self._body(body_rng)
        bones = _skeleton(body_rng)
        findings = self._findings(rng, label, bones)
        anterior, posterior = self._render(rng, body, bones, findings)
        lesions = tuple(self._lesion_record(f, body) for f in findings)
        return PhantomStudy(
            study_id=f"PHANTOM-{self.seed:04d}-{index:06d}",
            patient_id=f"FAKE-{self.seed:04d}-{patient:06d}",
            label=int(label), anterior=anterior, posterior=posterior,
            lesions=lesions, pixel_spacing_mm=self.pixel_mm)

    # ---------------------------------------------------------------- patient and findings
    def _body(self, rng) -> dict:
        return {
            "scale": rng.uniform(0.86, 1.02),  # body height relative to the 1870 mm skeleton
            "shift_x_mm": rng.normal(0, 12),  # posture: off-centre on the table
            "shift_y_mm": rng.uniform(30, 90),
            "tilt": rng.normal(0, 0.02),  # small rotation (radians)
            "counts": self.counts_per_view * rng.lognormal(0, 0.25),
            "soft_tissue": rng.uniform(0.08, 0.18),
            "bladder": rng.uniform(2.0, 12.0),
            "kidneys": rng.uniform(0.3, 1.2),
            "thickness": BODY_THICKNESS_MM * rng.uniform(0.8, 1.25),
        }

    def _findings(self, rng, label: int, bones: list[_Bone]) -> list[dict]:
        name = CLASS_NAMES[label]
        findings = []
        if name == "metastasis":
            sites = list(_METASTASIS_SITES)
            probs = np.array([_METASTASIS_SITES[s] for s in sites])
            for _ in range(int(rng.integers(1, 7))):
                site = sites[rng.choice(len(sites), p=probs / probs.sum())]
                candidates = [b for b in bones if b.name == site or b.name.startswith(site + "_")
                              or (site == "rib" and b.name.startswith("rib"))]
                bone = candidates[rng.integers(len(candidates))]
                point = bone.points[rng.integers(len(bone.points))]
                findings.append({"kind": "metastasis", "site": bone.name, "center": point,
                                 "depth": float(np.clip(bone.depth + rng.normal(0, 0.05), 0.02, 0.98)),
                                 "radius": rng.uniform(8.0, 18.0), "intensity": rng.uniform(2.0, 5.0)})
        elif name == "arthritis":
            joints = rng.choice(_ARTHRITIS_JOINTS, size=int(rng.integers(1, 4)), replace=False)
            for joint in joints:
                intensity, radius = rng.uniform(1.3, 2.5), rng.uniform(12.0, 20.0)
                for bone in bones:
                    if bone.name.startswith(joint + "_"):
                        findings.append({"kind": "arthritis", "site": bone.name,
                                         "center": bone.points.mean(axis=0), "depth": 0.5,
                                         "radius": radius, "intensity": intensity})
        elif name == "thyroid_carcinoma":
            for side in (-1.0, 1.0):
                findings.append({"kind": "thyroid", "site": "neck", "depth": 0.15,
                                 "center": np.array([side * rng.uniform(12, 20), rng.uniform(255, 275)]),
                                 "radius": rng.uniform(8.0, 13.0), "intensity": rng.uniform(2.0, 5.0)})
        return findings

    # ---------------------------------------------------------------- rendering
    def _to_pixels(self, pts_mm: np.ndarray, body: dict, view: str) -> np.ndarray:
        """Body mm -> (row, col) pixels of one view, with the patient's posture applied."""
        h, w = self.shape
        c, s = np.cos(body["tilt"]), np.sin(body["tilt"])
        x = pts_mm[:, 0] * c - (pts_mm[:, 1] - 900) * s
        y = pts_mm[:, 0] * s + (pts_mm[:, 1] - 900) * c + 900
        x = x * body["scale"] + body["shift_x_mm"]
        y = y * body["scale"] + body["shift_y_mm"]
        # anterior: patient's right (negative x) on the image left; posterior: mirrored
        col = (w / 2.0 + x / self.pixel_mm) if view == "anterior" else (w / 2.0 - x / self.pixel_mm)
        row = y / self.pixel_mm
        return np.stack([row, col], axis=1)

    def _splat(self, image, pts_px, weights):
        rows = np.round(pts_px[:, 0]).astype(int)
        cols = np.round(pts_px[:, 1]).astype(int)
        ok = (rows >= 0) & (rows < image.shape[0]) & (cols >= 0) & (cols < image.shape[1])
        np.add.at(image, (rows[ok], cols[ok]), weights[ok] if np.ndim(weights) else weights)

    def _render(self, rng, body, bones, findings):
        views = {}
        mu_t = MU_PER_MM * body["thickness"]
        for view in ("anterior", "posterior"):
            def attenuation(depth):
                return np.exp(-mu_t * (depth if view == "anterior" else 1.0 - depth))
            bone_img = np.zeros(self.shape, np.float64)
            for bone in bones:
                weight = bone.uptake * attenuation(bone.depth) * rng.uniform(0.9, 1.1)
                self._splat(bone_img, self._to_pixels(bone.points, body, view), weight)
            bone_img = ndimage.gaussian_filter(bone_img, BONE_SIGMA_MM / self.pixel_mm)

            hot = np.zeros(self.shape, np.float64)
            axial_peak = np.percentile(bone_img, 99.5)
            window = max(int(round(6.0 / self.pixel_mm)), 1)
            for f in findings:
                # a finding's peak is `intensity` times the local bone uptake seen through the same tissue
                (row, col), = self._to_pixels(f["center"][None, :], body, view).round().astype(int)
                if not (0 <= row < self.shape[0] and 0 <= col < self.shape[1]):
                    continue
                local = bone_img[max(row - window, 0):row + window + 1, max(col - window, 0):col + window + 1].max()
                # metastases are among the hottest skeletal foci: at least a typical axial-bone peak at that depth
                local = max(local, axial_peak * attenuation(f["depth"]) / attenuation(0.5))
                blob = np.zeros(self.shape, np.float64)
                blob[row, col] = 1.0
                blob = ndimage.gaussian_filter(blob, f["radius"] / 2.0 / self.pixel_mm)
                hot += blob / max(blob.max(), 1e-12) * local * (f["intensity"] - 1.0)

            soft = np.zeros(self.shape, np.float64)
            trunk = np.concatenate([_ellipse((0, 110), (80, 110), step=8, filled=True),
                                    _ellipse((0, 580), (150, 420), step=8, filled=True),
                                    _ellipse((-80, 1350), (60, 480), step=8, filled=True),
                                    _ellipse((80, 1350), (60, 480), step=8, filled=True)])
            self._splat(soft, self._to_pixels(trunk, body, view), 1.0)
            soft = ndimage.gaussian_filter(soft, 25.0 / self.pixel_mm)
            soft *= body["soft_tissue"] * bone_img.max() / max(soft.max(), 1e-12)

            organs = np.zeros(self.shape, np.float64)
            self._splat(organs, self._to_pixels(np.array([[0.0, 950.0]]), body, view),
                        body["bladder"] * attenuation(0.3))
            kidneys = np.concatenate([_ellipse((-60, 700), (25, 50), step=4, filled=True),
                                      _ellipse((60, 700), (25, 50), step=4, filled=True)])
            self._splat(organs, self._to_pixels(kidneys, body, view),
                        body["kidneys"] * attenuation(0.8) / len(kidneys) * 6.0)
            organs = ndimage.gaussian_filter(organs, 12.0 / self.pixel_mm)
            organs *= bone_img.max() / (organs.max() + 1e-12) * body["bladder"] / 4.0

            views[view] = bone_img + hot + soft + organs
        # one count budget per study: the anterior view gets body["counts"], the posterior the same
        # activity seen through its own attenuation, so the two views keep their true ratio
        scale = body["counts"] / views["anterior"].sum()
        return tuple(np.minimum(rng.poisson(views[v] * scale), 65535).astype(np.uint16)
                     for v in ("anterior", "posterior"))

    def _lesion_record(self, f: dict, body: dict) -> Lesion:
        boxes = []
        for view in ("anterior", "posterior"):
            r, c = self._to_pixels(f["center"][None, :], body, view)[0]
            half = max(f["radius"] * body["scale"] / self.pixel_mm, 1.5)
            boxes.append(tuple(int(v) for v in (np.floor(r - half), np.floor(c - half),
                                                np.ceil(r + half), np.ceil(c + half))))
        return Lesion(kind=f["kind"], site=f["site"], center_mm=tuple(float(v) for v in f["center"]),
                      depth=f["depth"], radius_mm=float(f["radius"]), intensity=float(f["intensity"]),
                      box_anterior=boxes[0], box_posterior=boxes[1])
