"""Findings a study shows: its class's own (metastases, arthritis, thyroid) and benign mimics.

A finding either multiplies the bone uptake under it (`gain`: metastases, degenerative joints,
fractures, arthritis) or adds activity outside bone (`hot`: thyroid, injection site, urine,
lymph node). Whole-bone changes (Paget-like, superscan) scale a part's uptake (`part_gain`).
Mimics are drawn for every class at the same rates, so they cannot tell the classes apart.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tfbonemet.data.phantom.anatomy import Primitives
from tfbonemet.data.phantom.difficulty import Difficulty
from tfbonemet.vocab import CLASS_NAMES, POSITIVE_CLASS

METASTASIS_SITES = {  # relative frequency of bone metastasis by region: the axial skeleton dominates
    "thoracic_spine": 0.2, "lumbar_spine": 0.15, "rib": 0.22, "pelvis": 0.12, "sacrum": 0.04, "femur": 0.07,
    "skull": 0.05, "humerus": 0.04, "sternum": 0.04, "cervical_spine": 0.03, "scapula": 0.03, "clavicle": 0.01,
}
ARTHRITIS_JOINTS = ("knee", "shoulder", "wrist", "ankle", "hand", "elbow")
DEGENERATIVE_SITES = {"knee": 0.2, "shoulder": 0.1, "ac": 0.08, "sc": 0.08, "hip": 0.1, "lumbar": 0.15,
                      "thoracic": 0.14, "hand": 0.05, "ankle": 0.05, "si": 0.05}
PAGET_BONES = ("T", "L", "ilium", "femur_", "humerus_", "skull", "scapula_", "tibia_", "clavicle_")
AXIAL = ("skull", "cervical_spine", "thoracic_spine", "lumbar_spine", "sacrum", "rib", "sternum", "pelvis",
         "scapula", "clavicle")
MIMIC_RATES = {"degenerative": 0.45, "fracture": 0.12, "injection": 0.15, "urine": 0.1, "kidney": 0.15,
               "paget": 0.04}


@dataclasses.dataclass
class Finding:
    kind: str
    site: str
    center: np.ndarray  # (x, y) body mm
    depth: float
    radius: float  # mm
    intensity: float  # gain: uptake ratio at the centre; hot: added uptake
    mode: str  # "gain" or "hot"
    mimic: bool


@dataclasses.dataclass
class Findings:
    items: list = dataclasses.field(default_factory=list)
    part_gain: dict = dataclasses.field(default_factory=dict)  # part index -> uptake factor
    kidney: tuple = (1.0, 1.0)  # right, left uptake factors
    bladder: float = 1.0
    soft: float = 1.0


def point_on(p: Primitives, seg: np.ndarray, ell: np.ndarray, part: int, rng, spread=0.4) -> tuple[np.ndarray, float]:
    """A random point inside bone `part` (mm) and its depth."""
    rows = seg[seg[:, 0] == part]
    if len(rows):
        length = np.hypot(rows[:, 3] - rows[:, 1], rows[:, 4] - rows[:, 2]) + 1e-6
        r = rows[rng.choice(len(rows), p=length / length.sum())]
        t = rng.uniform()
        a, b = r[1:3], r[3:5]
        normal = np.array([-(b - a)[1], (b - a)[0]]) / max(np.linalg.norm(b - a), 1e-6)
        radius = r[5] + t * (r[6] - r[5])
        return a + t * (b - a) + normal * rng.uniform(-spread, spread) * radius, float(r[9] + t * (r[10] - r[9]))
    r = ell[ell[:, 0] == part][0]
    angle = rng.uniform(0, 2 * np.pi)
    q = spread * np.sqrt(rng.uniform())
    return np.array([r[1] + q * r[3] * np.cos(angle), r[2] + q * r[4] * np.sin(angle)]), float(r[7])


def draw(rng: np.random.Generator, mimic_rng: np.random.Generator, label: int, p: Primitives,
         diff: Difficulty) -> Findings:
    """The class's findings from `rng`, then mimics from `mimic_rng` (so they do not depend on the class)."""
    seg, ell = p.arrays()
    out = Findings()
    name = CLASS_NAMES[label]
    if name == POSITIVE_CLASS:
        _metastases(rng, p, seg, ell, diff, out)
    elif name == "arthritis":
        for joint in rng.choice(ARTHRITIS_JOINTS, size=int(rng.integers(1, 4)), replace=False):
            intensity, radius = rng.uniform(1.4, 2.6), rng.uniform(12.0, 20.0)
            for side in ("right", "left"):
                x, y, d = p.landmarks[f"{joint}_{side}"]
                out.items.append(Finding("arthritis", f"{joint}_{side}", np.array([x, y]), d, radius,
                                         intensity * rng.uniform(0.9, 1.1), "gain", False))
    elif name == "thyroid_carcinoma":
        y = rng.uniform(262, 282)
        for s in (-1.0, 1.0):
            out.items.append(Finding("thyroid", "neck", np.array([s * rng.uniform(12, 20), y + rng.normal(0, 3)]), 0.15,
                                     rng.uniform(8.0, 13.0), rng.uniform(0.5, 2.0), "hot", False))
    _mimics(mimic_rng, p, seg, ell, diff, out)
    return out


def _metastases(rng, p, seg, ell, diff: Difficulty, out: Findings) -> None:
    superscan = rng.uniform() < diff.superscan
    if superscan:
        n = int(rng.integers(15, 35))
        for part, site in enumerate(p.sites):
            if site in AXIAL:
                out.part_gain[part] = out.part_gain.get(part, 1.0) * rng.uniform(1.4, 2.0)
        out.kidney = (0.15, 0.15)
        out.soft = 0.6
    elif rng.uniform() < diff.single_focus:
        n = 1
    else:
        n = 2 + int(rng.geometric(1.0 / (1.0 + diff.extra_foci)) - 1)
    sites = list(METASTASIS_SITES)
    probs = np.array([METASTASIS_SITES[s] for s in sites])
    for _ in range(min(n, 40)):
        site = sites[rng.choice(len(sites), p=probs / probs.sum())]
        parts = [i for i, s in enumerate(p.sites) if s == site and "facet" not in p.parts[i]]
        part = parts[rng.integers(len(parts))]
        center, depth = point_on(p, seg, ell, part, rng)
        a, b = diff.contrast_beta
        contrast = diff.contrast[0] + (diff.contrast[1] - diff.contrast[0]) * rng.beta(a, b)
        radius = rng.uniform(*diff.radius_mm)
        out.items.append(Finding(POSITIVE_CLASS, p.parts[part], center, depth, radius, contrast, "gain", False))


def _mimics(rng, p, seg, ell, diff: Difficulty, out: Findings) -> None:
    rate = {k: min(v * diff.mimics, 0.95) for k, v in MIMIC_RATES.items()}
    lm = p.landmarks
    side = lambda: ("right", "left")[rng.integers(2)]  # noqa: E731
    if rng.uniform() < rate["degenerative"]:
        sites = list(DEGENERATIVE_SITES)
        probs = np.array([DEGENERATIVE_SITES[s] for s in sites])
        for site in rng.choice(sites, size=int(rng.integers(1, 4)), p=probs / probs.sum()):
            if site in ("lumbar", "thoracic"):  # marginal osteophytes / facet arthropathy beside a vertebra
                level = f"L{rng.integers(3, 6)}" if site == "lumbar" else f"T{rng.integers(4, 13)}"
                x, y, d = lm[level]
                sign = rng.choice([-1.0, 1.0])
                center = np.array([x + sign * rng.uniform(14, 26), y + rng.choice([-1, 1]) * rng.uniform(6, 12)])
                where = f"{level}_{'left' if sign > 0 else 'right'}"
            else:
                where = f"{site}_{side()}"
                x, y, d = lm[where]
                center = np.array([x, y]) + rng.normal(0, 4, 2)
            out.items.append(Finding("degenerative", where, center, d, rng.uniform(5, 12), rng.uniform(1.3, 2.4),
                                     "gain", True))
    if rng.uniform() < rate["fracture"]:  # healing fractures of consecutive ribs, in a line
        s = side()
        first, count = int(rng.integers(3, 9)), int(rng.integers(2, 5))
        frac = rng.uniform(0.15, 0.6)
        for k in range(first, min(first + count, 11)):
            part = p.parts.index(f"rib{k}_{s}")
            rows = seg[seg[:, 0] == part]
            i = min(int((frac + rng.normal(0, 0.03)) * len(rows)), len(rows) - 1)
            center = rows[i, 1:3] + rng.uniform(0, 1) * (rows[i, 3:5] - rows[i, 1:3])
            out.items.append(Finding("fracture", p.parts[part], center, float(rows[i, 9]), rng.uniform(4, 8),
                                     rng.uniform(1.6, 3.5), "gain", True))
    if rng.uniform() < rate["injection"]:  # extravasated tracer at the injection site, sometimes an axillary node
        s = side()
        where = ("elbow", "wrist", "hand")[rng.choice(3, p=[0.6, 0.25, 0.15])]
        x, y, _ = lm[f"{where}_{s}"]
        out.items.append(Finding("injection", f"{where}_{s}", np.array([x, y]) + rng.normal(0, 6, 2), 0.2,
                                 rng.uniform(5, 14), rng.uniform(0.4, 5.0), "hot", True))
        if rng.uniform() < 0.35:
            sx, sy, _ = lm[f"shoulder_{s}"]
            out.items.append(Finding("lymph_node", f"axilla_{s}", np.array([sx * 0.8, sy + rng.uniform(20, 50)]), 0.5,
                                     rng.uniform(5, 9), rng.uniform(0.2, 1.0), "hot", True))
    if rng.uniform() < rate["urine"]:  # contamination on skin or clothing, mostly around the pelvis
        x, y, _ = lm[f"hip_{side()}"]
        for _ in range(int(rng.integers(1, 4))):
            out.items.append(Finding("urine", "skin", np.array([x * rng.uniform(-0.6, 1.3), y + rng.uniform(0, 180)]),
                                     0.05, rng.uniform(4, 12), rng.uniform(0.5, 4.0), "hot", True))
    if rng.uniform() < rate["kidney"]:  # hydronephrosis on one side, or a single kidney
        k = rng.integers(2)
        factors = [1.0, 1.0]
        factors[k] = rng.uniform(2.0, 4.0) if rng.uniform() < 0.7 else 0.0
        out.kidney = tuple(f * v for f, v in zip(factors, out.kidney))
    out.bladder = rng.lognormal(0.0, 0.5)
    if rng.uniform() < rate["paget"]:  # one whole bone, uniformly and intensely hot
        parts = [i for i, n in enumerate(p.parts) if n.startswith(PAGET_BONES) and "facet" not in n]
        part = parts[rng.integers(len(parts))]
        factor = rng.uniform(1.8, 3.0)
        out.part_gain[part] = out.part_gain.get(part, 1.0) * factor
        center, depth = point_on(p, seg, ell, part, rng, spread=0.0)
        out.items.append(Finding("paget", p.parts[part], center, depth, 0.0, factor, "part", True))
