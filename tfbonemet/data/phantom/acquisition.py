"""From primitives to counts: projection with depth attenuation, collimator blur, scatter, Poisson noise.

Everything is drawn once in the anterior geometry at the target resolution (vectorised over all
primitives at once); the posterior view is the same geometry with its own attenuation, flipped
left-right at the end as a gamma camera displays it.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from tfbonemet.data.phantom.anatomy import CHORD, CORTEX, FLAT, GAUSS

MU_PER_MM = 0.012  # effective linear attenuation of 140 keV photons in tissue, with build-up
CLINICAL_COUNTS = (0.5e6, 2.5e6)  # per whole-body view
SCATTER_MM = 40.0  # width of the scattered-photon halo
_CORTEX_INNER = 0.6


class Posture:
    """Body mm -> continuous anterior-view pixel coordinates (row, col); pixel centres at i + 0.5."""

    def __init__(self, shape, pixel_mm, scale, shift_x_mm, shift_y_mm, tilt):
        self.shape, self.pixel_mm = shape, pixel_mm
        self.scale, self.shift = scale, (shift_x_mm, shift_y_mm)
        self.cos, self.sin = np.cos(tilt), np.sin(tilt)

    def __call__(self, x, y):
        x, y = np.asarray(x, float), np.asarray(y, float) - 900.0
        xr = (x * self.cos - y * self.sin) * self.scale + self.shift[0]
        yr = (x * self.sin + y * self.cos + 900.0) * self.scale + self.shift[1]
        return yr / self.pixel_mm, self.shape[1] / 2.0 + xr / self.pixel_mm

    def coarser(self, factor: int) -> "Posture":
        """The same posture on a grid `factor` times coarser."""
        coarse = Posture((self.shape[0] // factor, self.shape[1] // factor), self.pixel_mm * factor, self.scale,
                         *self.shift, 0.0)
        coarse.cos, coarse.sin = self.cos, self.sin
        return coarse

    def length(self, mm):
        return np.asarray(mm, float) * self.scale / self.pixel_mm


def _pairs(r0, r1, c0, c1, shape):
    """(primitive index, row, col) of every pixel in every primitive's clipped box."""
    r0, c0 = np.clip(r0, 0, shape[0]).astype(int), np.clip(c0, 0, shape[1]).astype(int)
    r1, c1 = np.clip(r1, 0, shape[0]).astype(int), np.clip(c1, 0, shape[1]).astype(int)
    h, w = np.maximum(r1 - r0, 0), np.maximum(c1 - c0, 0)
    n = h * w
    prim = np.repeat(np.arange(len(n)), n)
    local = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    return prim, r0[prim] + local // w[prim], c0[prim] + local % w[prim]


def _profile(kind, q, radius_px):
    chord = np.sqrt(np.maximum(1.0 - q * q, 0.0))
    inner = np.sqrt(np.maximum(_CORTEX_INNER ** 2 - q * q, 0.0))
    return np.select([kind == CHORD, kind == CORTEX, kind == FLAT, kind == GAUSS],
                     [chord, (chord - inner) / np.sqrt(1 - _CORTEX_INNER ** 2),
                      np.clip((1.0 - q) * radius_px + 0.5, 0.0, 1.0), np.exp(-4.5 * q * q) * (q < 1)])


def rasterize(shape, posture: Posture, seg: np.ndarray, ell: np.ndarray, attenuate=True):
    """Anterior-geometry (anterior-attenuated, posterior-attenuated) images of the primitives.

    seg rows: part ax ay bx by ra rb ua ub da db slab prof cap_a cap_b (mm); ell rows: part cx cy a b angle u d slab prof.
    Thin primitives are widened to at least 0.75 px with their uptake lowered to keep their total.
    """
    out = [np.zeros(shape[0] * shape[1]) for _ in range(2)]
    if len(seg):
        ay, ax = posture(seg[:, 1], seg[:, 2])
        by, bx = posture(seg[:, 3], seg[:, 4])
        ra, rb = posture.length(seg[:, 5]), posture.length(seg[:, 6])
        rmax = np.maximum(np.maximum(ra, rb), 0.75) + 1
        prim, rows, cols = _pairs(np.floor(np.minimum(ay, by) - rmax), np.ceil(np.maximum(ay, by) + rmax),
                                  np.floor(np.minimum(ax, bx) - rmax), np.ceil(np.maximum(ax, bx) + rmax), shape)
        vy, vx = (by - ay)[prim], (bx - ax)[prim]
        py, px = rows + 0.5 - ay[prim], cols + 0.5 - ax[prim]
        t = (py * vy + px * vx) / np.maximum(vy * vy + vx * vx, 1e-12)
        keep = ((t >= 0) & (t < 1)) | ((t < 0) & (seg[prim, 13] > 0)) | ((t >= 1) & (seg[prim, 14] > 0))
        prim, rows, cols, t = prim[keep], rows[keep], cols[keep], np.clip(t[keep], 0.0, 1.0)
        d = np.hypot(rows + 0.5 - (ay[prim] + t * (by - ay)[prim]), cols + 0.5 - (ax[prim] + t * (bx - ax)[prim]))
        r = ra[prim] + t * (rb - ra)[prim]
        r_eff = np.maximum(r, 0.75)
        uptake = (seg[prim, 7] + t * (seg[prim, 8] - seg[prim, 7])) * r / r_eff
        depth = seg[prim, 9] + t * (seg[prim, 10] - seg[prim, 9])
        value = uptake * _profile(seg[prim, 12], d / r_eff, r_eff)
        _accumulate(out, rows * shape[1] + cols, value, depth, seg[prim, 11], attenuate)
    if len(ell):
        cy, cx = posture(ell[:, 1], ell[:, 2])
        a, b = posture.length(ell[:, 3]), posture.length(ell[:, 4])
        a_eff, b_eff = np.maximum(a, 0.75), np.maximum(b, 0.75)
        ext = np.maximum(a_eff, b_eff) + 1
        prim, rows, cols = _pairs(np.floor(cy - ext), np.ceil(cy + ext), np.floor(cx - ext), np.ceil(cx + ext), shape)
        dy, dx = rows + 0.5 - cy[prim], cols + 0.5 - cx[prim]
        c, s = np.cos(ell[prim, 5]), np.sin(ell[prim, 5])
        q = np.hypot((dx * c + dy * s) / a_eff[prim], (-dx * s + dy * c) / b_eff[prim])
        uptake = ell[prim, 6] * (a * b / (a_eff * b_eff))[prim]
        value = uptake * _profile(ell[prim, 9], q, np.minimum(a_eff, b_eff)[prim])
        _accumulate(out, rows * shape[1] + cols, value, ell[prim, 7], ell[prim, 8], attenuate)
    return tuple(o.reshape(shape) for o in out)


def _accumulate(out, index, value, depth, slab, attenuate):
    n = len(out[0])
    if not attenuate:
        image = np.bincount(index, value, minlength=n)
        out[0] += image
        out[1] += image
        return
    mu_t = MU_PER_MM * slab
    out[0] += np.bincount(index, value * np.exp(-mu_t * depth), minlength=n)
    out[1] += np.bincount(index, value * np.exp(-mu_t * (1.0 - depth)), minlength=n)


def texture(rng, shape, pixel_mm: float, sd: float, grain_mm: float = 20.0) -> np.ndarray:
    """A smooth log-normal field: uptake in real bone is patchy, not uniform."""
    coarse = (max(2, int(shape[0] * pixel_mm / grain_mm)), max(2, int(shape[1] * pixel_mm / grain_mm)))
    field = ndimage.gaussian_filter(rng.normal(0.0, 1.0, coarse), 1.0)
    field *= sd / max(field.std(), 1e-9)
    return np.exp(ndimage.zoom(field, (shape[0] / coarse[0], shape[1] / coarse[1]), order=1, grid_mode=True,
                               mode="nearest"))


def blur(image: np.ndarray, fwhm_mm: float, pixel_mm: float) -> np.ndarray:
    return ndimage.gaussian_filter(image, fwhm_mm / 2.3548 / pixel_mm, mode="constant", truncate=3.0)


def scatter(image: np.ndarray, pixel_mm: float, fraction: float) -> np.ndarray:
    """A broad halo of scattered photons, computed on a coarse grid (it has no fine detail)."""
    factor = coarse_factor(image.shape, SCATTER_MM / 4 / pixel_mm)
    h, w = image.shape
    coarse = image.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    coarse = ndimage.gaussian_filter(coarse, SCATTER_MM / pixel_mm / factor, mode="constant", truncate=2.5)
    return fraction * np.repeat(np.repeat(coarse, factor, axis=0), factor, axis=1)


def coarse_factor(shape, at_most: float) -> int:
    """The largest power of two up to `at_most` that divides both sides of `shape`."""
    factor = 1
    while factor * 2 <= at_most and shape[0] % (factor * 2) == 0 and shape[1] % (factor * 2) == 0:
        factor *= 2
    return factor


def counts(rng, expected: tuple[np.ndarray, np.ndarray], total: float, noise=True) -> tuple[np.ndarray, np.ndarray]:
    """Scale so the anterior view holds `total` counts (the posterior keeps its true ratio), then sample."""
    scale = total / max(expected[0].sum(), 1e-12)
    if not noise:
        return tuple(np.minimum(np.round(e * scale), 65535).astype(np.uint16) for e in expected)
    return tuple(np.minimum(rng.poisson(e * scale), 65535).astype(np.uint16) for e in expected)
