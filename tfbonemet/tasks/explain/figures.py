"""CAM figures a physician can read: bone visible under the map, one colour scale, sides and labels marked.

The view is drawn inverted (hot = dark, as bone scans are read). The heat map is a perceptual
colour map whose opacity rises with the value, so where the map is low the bone shows through
untouched. The heat shown is the study's map times its probability (`Explanation.heat`): one
scale for every study and a colour bar for it. Each view is drawn at (a whole multiple of) its
source resolution with its R/L sides and name; the title gives the true and predicted label, the
probability and the threshold; known lesion boxes (phantom) have a legend.
"""
from __future__ import annotations

import math
import textwrap

import numpy as np

from tfbonemet.io.dicom_results import VIEW_SIDES  # patient side at the image's left and right, per view
from tfbonemet.vocab import ANTERIOR, POSTERIOR

VIEW_NAMES = {ANTERIOR: "ANT", POSTERIOR: "POST (as acquired)"}
MAX_ALPHA = 0.85
MIN_PANEL = (640, 220)  # small views are enlarged by a whole factor to at least this height or width (px)
DPI = 100


def colour_map():
    """inferno without its near-black and near-white ends (both vanish on a grey scan), purple to yellow."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    return ListedColormap(colormaps["inferno"](np.linspace(0.2, 0.92, 256)), name="tfbonemet_heat")


def display_counts(counts: np.ndarray) -> np.ndarray:
    """Counts -> [0, 1] grey levels: square root (Poisson-stabilising) up to the 99.5th percentile."""
    counts = np.asarray(counts, np.float64)
    top = max(np.percentile(counts, 99.5), 1.0)
    return np.sqrt(np.clip(counts / top, 0, 1))


def overlay_rgb(counts: np.ndarray, heat: np.ndarray, max_alpha: float = MAX_ALPHA) -> np.ndarray:
    """Inverted-grey view blended with the heat map (values in [0, 1]), opacity rising with the heat; uint8 RGB."""
    grey = 1.0 - display_counts(counts)
    heat = np.clip(np.asarray(heat, np.float64), 0, 1)
    colour = colour_map()(heat)[..., :3]
    weight = max_alpha * heat[..., None]
    rgb = (1 - weight) * grey[..., None] + weight * colour
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def mirrored(boxes, width: int) -> list:
    """Anterior boxes in the posterior view's acquired frame (left and right swap)."""
    return [(y0, width - x1, y1, width - x0) for y0, x0, y1, x1 in boxes]


def title(explanation, method: str, width: int = 200) -> str:
    """Study and method, then the true and predicted label, probability and threshold, wrapped to `width` chars."""
    e = explanation
    facts = [f"true: {e.true_label}" if e.true_label else "true: unknown",
             f"predicted: {e.predicted}" if e.predicted else None,
             f"P({e.class_name}) = {e.probability:.3f}",
             f"threshold {e.threshold:.3f}" if e.threshold is not None else None]
    return f"{e.name} · {method}\n" + textwrap.fill(" · ".join(f for f in facts if f), width)


def figure(explanation, method: str):
    """The figure: views side by side at a whole multiple of source resolution, colour bar on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patheffects as effects
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    views = list(explanation.views)
    shapes = [explanation.views[v].shape for v in views]
    height = max(h for h, _ in shapes)
    scale = max(1, math.ceil(MIN_PANEL[0] / height), math.ceil(MIN_PANEL[1] / max(w for _, w in shapes)))
    bottom, left, gap, bar = 40 if explanation.boxes else 12, 12, 28, 90
    widths = [w * scale for _, w in shapes]
    total_w = left + sum(widths) + gap * (len(views) - 1) + bar
    heading = title(explanation, method, width=int(total_w / 6.5))
    top = 36 + 15 * heading.count("\n")
    total_h = top + height * scale + bottom
    fig = plt.figure(figsize=(total_w / DPI, total_h / DPI), dpi=DPI)
    outline = [effects.withStroke(linewidth=2.5, foreground="black")]
    heat = explanation.heat
    x = left
    for view, (h, w), panel_w in zip(views, shapes, widths):
        ax = fig.add_axes((x / total_w, (bottom + (height - h) * scale) / total_h, panel_w / total_w,
                           h * scale / total_h))
        ax.imshow(overlay_rgb(explanation.views[view], heat[view]), interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(VIEW_NAMES.get(view, view), fontsize=9, pad=3)
        for side, ha, pos in zip(VIEW_SIDES.get(view, ("", "")), ("left", "right"), (0.03, 0.97)):
            ax.text(pos, 0.99, side, transform=ax.transAxes, ha=ha, va="top", color="yellow", fontsize=12,
                    fontweight="bold", path_effects=outline)
        boxes = explanation.boxes if view != POSTERIOR else mirrored(explanation.boxes, w)
        for y0, x0, y1, x1 in boxes:
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="lime", lw=1.2))
        x += panel_w + gap
    cax = fig.add_axes(((x - gap + 14) / total_w, bottom / total_h, 14 / total_w, height * scale / total_h))
    bar_ = fig.colorbar(ScalarMappable(Normalize(0, 1), colour_map()), cax=cax)
    bar_.set_label(f"map × P({explanation.class_name})  (clear where low)", fontsize=8)
    bar_.ax.tick_params(labelsize=7)
    if explanation.boxes:
        fig.legend(handles=[Rectangle((0, 0), 1, 1, fill=False, color="lime", lw=1.2)],
                   labels=["known lesion (phantom ground truth)"], loc="lower left", fontsize=8, frameon=False,
                   bbox_to_anchor=(left / total_w, 0))
    fig.suptitle(heading, fontsize=9, y=1 - 6 / total_h, va="top")
    return fig


def save_png(explanation, path, method: str):
    """The figure as PNG at its native pixel size (no tight bounding box: that would rescale the views)."""
    import io

    import matplotlib.pyplot as plt

    from tfbonemet.io.atomic import write_bytes

    fig = figure(explanation, method)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return write_bytes(path, buffer.getvalue())
