"""An organic adult skeleton and body outline, as primitives a rasteriser projects onto a view.

Bones are tubes (polylines with a radius, uptake and depth per vertex) and ellipses, in body
millimetres: x to the patient's left, y down from the vertex. Depth is the fraction of the local
body thickness in front of the bone (0 anterior skin, 1 posterior skin); each view attenuates a
bone by the tissue between it and that view's detector. Profiles give projected thickness:
`chord` for solid bone (vertebral bodies, heads), `cortex` for long-bone shafts (brighter rims),
`flat` for thin plates (scapula, iliac wing), `gauss` for findings.
"""
from __future__ import annotations

import dataclasses

import numpy as np

PROFILES = ("chord", "cortex", "flat", "gauss")
CHORD, CORTEX, FLAT, GAUSS = range(4)


@dataclasses.dataclass
class Primitives:
    """Tube segments and ellipses; every row belongs to one named part."""

    parts: list = dataclasses.field(default_factory=list)  # part names
    sites: list = dataclasses.field(default_factory=list)  # part -> metastasis/mimic site group
    seg: list = dataclasses.field(default_factory=list)  # arrays of rows: part ax ay bx by ra rb ua ub da db slab prof cap_a cap_b
    ell: list = dataclasses.field(default_factory=list)  # rows: part cx cy a b angle u d slab prof
    landmarks: dict = dataclasses.field(default_factory=dict)  # name -> (x, y, depth) in mm

    def _part(self, name: str, site: str) -> int:
        self.parts.append(name)
        self.sites.append(site)
        return len(self.parts) - 1

    def tube(self, name, site, points, radius, uptake, depth, slab, profile=CHORD):
        """A polyline of capsule segments; per-vertex radius, uptake and depth may be scalars."""
        pts = np.asarray(points, float)
        n = len(pts)
        r, u, d = (np.broadcast_to(np.asarray(v, float), (n,)) for v in (radius, uptake, depth))
        part = self._part(name, site)
        first = np.arange(n - 1)
        self.seg.append(np.column_stack([np.full(n - 1, part), pts[:-1], pts[1:], r[:-1], r[1:], u[:-1], u[1:],
                                         d[:-1], d[1:], np.full(n - 1, slab), np.full(n - 1, profile),
                                         first == 0, first == n - 2]))
        return part

    def ellipse(self, name, site, center, axes, uptake, depth, slab, profile=CHORD, angle=0.0):
        part = self._part(name, site)
        self.ell.append((part, center[0], center[1], axes[0], axes[1], angle, uptake, depth, slab, profile))
        return part

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(segments, ellipses) as float arrays; a fresh copy on every call."""
        seg = np.concatenate(self.seg).astype(float) if self.seg else np.empty((0, 15))
        return seg, np.array(self.ell, float).reshape(-1, 10)

    def part_ids(self, prefix: str) -> list[int]:
        return [i for i, (n, s) in enumerate(zip(self.parts, self.sites)) if s == prefix or n.startswith(prefix)]


def arc(p0, p1, bulge=0.0, n=12, power=1.0) -> np.ndarray:
    """Points from p0 to p1 bowed sideways by `bulge` mm (positive: to the left of the travel)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    t = np.linspace(0.0, 1.0, n) ** power
    line = p0 + t[:, None] * (p1 - p0)
    direction = (p1 - p0) / max(np.linalg.norm(p1 - p0), 1e-9)
    normal = np.array([-direction[1], direction[0]])
    return line + normal * (bulge * np.sin(np.pi * t))[:, None]


def skeleton(rng: np.random.Generator, habitus: dict) -> Primitives:
    """One patient's skeleton: proportions, arm pose, spinal curvature and uptake vary per patient."""
    p = Primitives()
    trunk, neck, limb, head = habitus["trunk_mm"], 0.6 * habitus["trunk_mm"], 110.0, 190.0
    shoulder = rng.uniform(150, 180)
    arm_out = rng.uniform(0, 25)
    hip = rng.uniform(88, 105)
    age = habitus["age"]  # 0 young (bright growth plates) .. 1 old (faint)
    physis = 1.0 + 0.4 * (1.0 - age)
    u = lambda base: base * rng.uniform(0.85, 1.15)  # noqa: E731 - per-bone uptake variation
    curve = rng.normal(0, 6)  # scoliosis amplitude, mm
    spine_x = lambda y: curve * np.sin(np.pi * (y - 300) / 480)  # noqa: E731

    # skull and face
    p.ellipse("skull", "skull", (0, 105), (74, 100), u(0.55), 0.5, head, CORTEX)
    p.ellipse("skull_base", "skull", (0, 160), (55, 18), u(0.6), 0.55, head)
    p.tube("mandible", "skull", arc((-52, 165), (52, 165), bulge=-70, n=12), 6, u(0.7), 0.3, head)
    p.ellipse("maxilla", "skull", (0, 190), (30, 14), u(0.6), 0.2, head)

    # vertebral column: C3-C7, T1-T12, L1-L5 as stacked bodies with disc gaps
    levels = [(f"C{i}", "cervical_spine", 14, 12, 0.55, neck) for i in range(3, 8)]
    levels += [(f"T{i}", "thoracic_spine", 19 + i * 0.6, 15 + i * 0.9, 0.68, trunk) for i in range(1, 13)]
    levels += [(f"L{i}", "lumbar_spine", 26, 24, 0.62, trunk) for i in range(1, 6)]
    y = 218.0
    for name, site, height, half_width, depth, slab in levels:
        gap = 2.0 if site == "cervical_spine" else 3.0
        cy = y + height / 2
        p.ellipse(name, site, (spine_x(cy), cy), (half_width, height / 2 * 1.15), u(0.7), depth, slab)
        if site != "cervical_spine":  # pedicles/facets: paired small posterior foci
            for s in (-1, 1):
                p.ellipse(f"{name}_facet_{'left' if s > 0 else 'right'}", site,
                          (spine_x(cy) + s * half_width * 0.75, cy), (5, 6), u(0.35), 0.85, slab)
        p.landmarks[name] = (spine_x(cy), cy, depth)
        y += height + gap
    sacrum_top = y
    p.tube("sacrum", "sacrum", [(spine_x(y), y + 10), (0, y + 60), (0, y + 105)], [48, 32, 12], u(0.75), 0.8, trunk)
    for s, side in ((-1, "right"), (1, "left")):
        p.tube(f"si_joint_{side}", "sacrum", [(s * 40, y + 5), (s * 30, y + 70)], 7, u(1.0), 0.8, trunk)
        p.landmarks[f"si_{side}"] = (s * 36, y + 35, 0.8)

    # thorax: sternum, clavicles, ribs, scapulae
    p.tube("sternum", "sternum", [(0, 318), (0, 350), (0, 372), (0, 470), (0, 505)], [20, 18, 13, 14, 7],
           u(0.3), 0.07, trunk, CORTEX)
    rib_y = [p.landmarks[f"T{k}"][1] for k in range(1, 13)]
    chest_half = habitus["chest_mm"]
    for s, side in ((-1, "right"), (1, "left")):
        p.ellipse(f"sc_joint_{side}", "sternum", (s * 20, 318), (9, 8), u(0.55), 0.1, trunk)
        p.landmarks[f"sc_{side}"] = (s * 20, 318, 0.1)
        p.tube(f"clavicle_{side}", "clavicle", arc((s * 22, 314), (s * (shoulder - 12), 300), bulge=-s * 10, n=10),
               6, u(0.6), np.linspace(0.12, 0.35, 10), trunk)
        for k, y0 in enumerate(rib_y, start=1):
            reach = chest_half * (0.45 + 0.55 * np.sin(np.pi * min(k + 1.2, 9.5) / 11.0))
            if k >= 11:
                reach = chest_half * (0.62 if k == 11 else 0.48)
            x0 = spine_x(y0) + s * 20
            drop_post = 18 + 2.2 * k
            post = np.stack([x0 + s * (reach - 20) * np.sin(np.linspace(0, np.pi / 2, 9)),
                             y0 - 6 * np.sin(np.linspace(0, np.pi, 9)) + drop_post * np.linspace(0, 1, 9) ** 1.5],
                            axis=1)
            pts, depth = post, np.linspace(0.9, 0.5, 9)
            if k <= 10:  # anterior arc back towards the costal cartilage (cartilage takes up nothing)
                end_x = s * (28 + 7 * k)
                drop = 40 + 8 * k
                t = np.linspace(0, 1, 9)[1:]
                ant = np.stack([post[-1, 0] + (end_x - post[-1, 0]) * (1 - np.cos(t * np.pi / 2)),
                                post[-1, 1] + drop * t ** 1.3], axis=1)
                pts, depth = np.concatenate([post, ant]), np.concatenate([depth, np.linspace(0.45, 0.12, 8)])
            radius = np.full(len(pts), 5.0 if k > 1 else 4.0)
            p.tube(f"rib{k}_{side}", "rib", pts, radius, u(0.42), depth, trunk)
            p.ellipse(f"costovertebral{k}_{side}", "rib", (x0 - s * 4, y0), (7, 6), u(0.55), 0.88, trunk)
        # scapula: thin body with brighter borders, spine, glenoid and acromion
        sup, inf, glen = (s * 78, 330), (s * 92, 470), (s * (shoulder - 22), 345)
        p.ellipse(f"scapula_{side}", "scapula", ((sup[0] + inf[0] + glen[0]) / 3, 385), (38, 62), u(0.22), 0.88,
                  trunk, FLAT, angle=-s * 0.35)
        p.tube(f"scapula_border_{side}", "scapula", [sup, inf, glen], [5, 6, 9], u(0.4), 0.85, trunk)
        p.tube(f"scapula_spine_{side}", "scapula", [(s * 80, 360), (s * (shoulder - 5), 322)], [4, 7], u(0.5), 0.92, trunk)
        p.ellipse(f"glenoid_{side}", "scapula", glen, (9, 14), u(0.7), 0.55, trunk)
        p.ellipse(f"acromion_{side}", "scapula", (s * (shoulder - 4), 318), (11, 8), u(0.6), 0.5, trunk)
        p.landmarks[f"shoulder_{side}"] = (s * shoulder, 345, 0.5)
        p.landmarks[f"ac_{side}"] = (s * (shoulder - 8), 312, 0.4)

        # arm: humerus (cortex, bright metaphyses), elbow, radius/ulna, wrist, hand
        elbow = (s * (shoulder + arm_out), 620)
        wrist = (s * (shoulder + arm_out + 18), 855)
        p.ellipse(f"humeral_head_{side}", "humerus", (s * shoulder, 348), (23, 25), u(0.55) * physis, 0.5, limb)
        p.tube(f"humerus_{side}", "humerus", [(s * shoulder, 370), elbow], [11, 9], u(0.3), 0.5, limb, CORTEX)
        p.ellipse(f"elbow_{side}", "humerus", (elbow[0], elbow[1] + 4), (22, 14), u(0.5) * physis, 0.5, limb)
        for off, r in ((-7, 5.5), (7, 6.0)):
            p.tube(f"forearm{off}_{side}", "forearm", [(elbow[0] + off, 630), (wrist[0] + off, wrist[1] - 8)], r,
                   u(0.3), 0.5, 0.8 * limb, CORTEX)
        p.ellipse(f"wrist_{side}", "hand", wrist, (18, 12), u(0.5) * physis, 0.5, 0.5 * limb)
        for f in range(4):
            dx = s * (f - 1.5) * 9
            p.tube(f"hand{f}_{side}", "hand", [(wrist[0] + dx * 0.6, 868), (wrist[0] + dx, 925), (wrist[0] + dx * 1.1, 970)],
                   [3.5, 3, 2.5], u(0.5), 0.5, 0.3 * limb)
        for name, xy in (("elbow", elbow), ("wrist", wrist), ("hand", (wrist[0], 925))):
            p.landmarks[f"{name}_{side}"] = (*xy, 0.5)

        # pelvis: iliac wing with brighter crest, acetabulum, pubic and ischial rami
        wing = (s * (hip + 10), sacrum_top + 20)
        p.ellipse(f"ilium_{side}", "pelvis", wing, (58, 52), u(0.45), 0.62, trunk, FLAT, angle=s * 0.25)
        p.tube(f"iliac_crest_{side}", "pelvis", arc((s * 45, sacrum_top - 15), (s * (hip + 62), sacrum_top + 30),
                                                    bulge=s * 28, n=10), 6, u(0.55), 0.6, trunk)
        hip_joint = (s * (hip - 5), sacrum_top + 115)
        p.tube(f"pubis_{side}", "pelvis", arc((s * 6, hip_joint[1] + 40), hip_joint, bulge=-s * 12, n=8), 7,
               u(0.55), 0.25, trunk)
        p.tube(f"ischium_{side}", "pelvis", arc((s * 10, hip_joint[1] + 45), (hip_joint[0], hip_joint[1] + 20),
                                                bulge=s * 25, n=8), 8, u(0.5), 0.7, trunk)
        p.landmarks[f"hip_{side}"] = (*hip_joint, 0.5)

        # leg: femoral head/neck/trochanter, shaft cortex, bright metaphyses, patella, tibia, fibula, foot
        knee = (s * (hip - 15), hip_joint[1] + 440)
        p.ellipse(f"femoral_head_{side}", "femur", hip_joint, (22, 22), u(0.8), 0.5, trunk)
        p.tube(f"femoral_neck_{side}", "femur", [hip_joint, (s * (hip + 28), hip_joint[1] + 28)], 11, u(0.55), 0.5, trunk)
        p.ellipse(f"trochanter_{side}", "femur", (s * (hip + 32), hip_joint[1] + 30), (14, 18), u(0.6), 0.5, trunk)
        p.tube(f"femur_{side}", "femur", [(s * (hip + 18), hip_joint[1] + 45), (knee[0], knee[1] - 40)], [14, 12],
               u(0.35), 0.5, 1.3 * limb, CORTEX)
        p.ellipse(f"distal_femur_{side}", "femur", (knee[0], knee[1] - 22), (30, 20), u(0.5) * physis, 0.5, limb)
        p.ellipse(f"patella_{side}", "femur", (knee[0], knee[1] - 25), (12, 14), u(0.5), 0.1, limb)
        p.ellipse(f"tibial_plateau_{side}", "tibia", (knee[0], knee[1] + 14), (30, 15), u(0.45) * physis, 0.45, limb)
        ankle = (s * (hip - 20), knee[1] + 385)
        p.tube(f"tibia_{side}", "tibia", [(knee[0], knee[1] + 28), (ankle[0], ankle[1] - 20)], [12, 9], u(0.35),
               0.35, limb, CORTEX)
        p.tube(f"fibula_{side}", "tibia", [(knee[0] + s * 28, knee[1] + 25), (ankle[0] + s * 24, ankle[1])], 5,
               u(0.3), 0.5, limb)
        p.ellipse(f"ankle_{side}", "foot", ankle, (20, 14), u(0.5), 0.5, 0.6 * limb)
        p.tube(f"foot_{side}", "foot", [(ankle[0], ankle[1] + 15), (ankle[0] + s * 8, ankle[1] + 85)], [13, 9],
               u(0.6), 0.6, 0.6 * limb)
        for name, xy in (("knee", knee), ("ankle", ankle)):
            p.landmarks[f"{name}_{side}"] = (*xy, 0.5)
    p.landmarks["chest_top"] = (0.0, 290.0, 0.5)
    p.landmarks["midline"] = (spine_x(450.0), 450.0, 0.5)
    return p


def body(habitus: dict, landmarks: dict) -> Primitives:
    """Soft-tissue outline (projected thickness) around a skeleton: head, neck, trunk, arms, legs."""
    p = Primitives()
    w, chest = habitus["waist_mm"], habitus["chest_mm"]
    xy = lambda name: landmarks[name][:2]  # noqa: E731
    p.ellipse("head", "soft", (0, 110), (82, 114), 1.0, 0.5, 190)
    p.tube("neck", "soft", [(0, 200), (0, 310)], 50, 1.0, 0.5, 120)
    p.tube("trunk", "soft", [(0, 310), (0, 420), (0, 620), (0, 820), (0, 930)],
           [chest * 0.9, chest + 12, w, w + 10, w * 0.95], 1.0, 0.5, 250)
    for side in ("right", "left"):
        shoulder, elbow, wrist, hand = xy(f"shoulder_{side}"), xy(f"elbow_{side}"), xy(f"wrist_{side}"), xy(f"hand_{side}")
        p.tube(f"arm_{side}", "soft", [shoulder, elbow, wrist, (hand[0], hand[1] + 50)],
               [habitus["limb_mm"] * 0.9, habitus["limb_mm"] * 0.75, 28, 24], 1.0, 0.5, 100)
        hip, knee, ankle = xy(f"hip_{side}"), xy(f"knee_{side}"), xy(f"ankle_{side}")
        p.tube(f"leg_{side}", "soft", [(hip[0] * 0.9, hip[1]), knee, ankle, (ankle[0], ankle[1] + 90)],
               [w * 0.55, 55, 36, 28], 1.0, 0.5, 140)
    return p
