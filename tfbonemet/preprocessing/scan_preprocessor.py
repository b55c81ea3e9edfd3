"""ScanPreprocessor: the one way a raw study becomes model input, and the way back.

Declared once (crop -> mirror posterior -> resize with pad -> normalise counts), it is what fit,
evaluate, cv, export (inside the SavedModel, for parity and int8 calibration), predict and explain
all call. Like MONAI's `Invertd`, its inverse is derived from the same declaration: `geometry`
computes each step's box once, the forward op and the inverse map both read it, so a CAM or a
lesion box always lands where the model's pixel came from.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import tensorflow as tf

from tfbonemet.errors import ConfigError
from tfbonemet.vocab import NORMALISATIONS, POSTERIOR, VIEW_SETS, input_names
# Crops as (ymin, xmin, ymax, xmax) fractions of a view. "thorax": the rows of a whole-body view
# (head at the top, 2 m field) from the clavicles to the lowest ribs, with a margin for body
# height and table position (Lin et al. 2021 thoracic workflow; phantom thorax 0.14-0.38).
CROPS = {"none": (0.0, 0.0, 1.0, 1.0), "thorax": (0.10, 0.0, 0.42, 1.0)}  # keys: vocab.CROP_NAMES


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where one source view lands in the model input: crop box (source px), resized size, padding."""

    source_shape: tuple[int, int]
    crop: tuple[int, int, int, int]  # y0, x0, y1, x1 in source pixels (end exclusive)
    resized: tuple[int, int]  # height, width of the cropped view after resizing
    pad: tuple[int, int]  # top, left zero padding in the model input
    mirrored: bool

    def to_source(self, yx: np.ndarray) -> np.ndarray:
        """Model-input pixel coordinates (…, 2) -> source-view pixel coordinates (pixel centres)."""
        yx = np.asarray(yx, np.float64)
        y0, x0, y1, x1 = self.crop
        scale = np.array([(y1 - y0) / self.resized[0], (x1 - x0) / self.resized[1]])
        local = (yx - np.array(self.pad) + 0.5) * scale - 0.5
        if self.mirrored:
            local[..., 1] = (x1 - x0) - 1 - local[..., 1]
        return local + np.array([y0, x0])

    def to_model(self, yx: np.ndarray) -> np.ndarray:
        """Source-view pixel coordinates (…, 2) -> model-input pixel coordinates; inverse of `to_source`."""
        yx = np.asarray(yx, np.float64) - np.array(self.crop[:2])
        y0, x0, y1, x1 = self.crop
        if self.mirrored:
            yx[..., 1] = (x1 - x0) - 1 - yx[..., 1]
        scale = np.array([(y1 - y0) / self.resized[0], (x1 - x0) / self.resized[1]])
        return (yx + 0.5) / scale - 0.5 + np.array(self.pad)


class ScanPreprocessor:
    """Raw counts of a study's views -> normalised float32 images named as the model's inputs.

    Args:
        views: which views the model reads, a key of `vocab.VIEW_SETS` ("two_view": anterior and
            posterior as inputs of the same names; "anterior": the anterior view as input `image`).
        image_size: (height, width) of each model input.
        crop: a key of CROPS, applied to each source view first.
        normalisation: "sqrt" (Poisson-stabilising), "log" or "linear" range compression after scaling.
        scale: the full-scale value of display-scaled images (255 for 8-bit JPEG/PNG crops): every
            study is divided by it, so a lesion stays brighter than a healthy patient's hottest
            bone. None (counts, e.g. DICOM): each view is divided by its own `percentile` count,
            so the bladder's hottest pixels do not flatten the skeleton.
    """

    def __init__(self, views: str = "two_view", image_size=(512, 128), crop: str = "none",
                 normalisation: str = "sqrt", percentile: float = 99.5, scale: float | None = None):
        if views not in VIEW_SETS:
            raise ConfigError(f"unknown views {views!r}; choose one of {', '.join(VIEW_SETS)}")
        if crop not in CROPS:
            raise ConfigError(f"unknown crop {crop!r}; choose one of {', '.join(CROPS)}")
        if normalisation not in NORMALISATIONS:
            raise ConfigError(f"unknown normalisation {normalisation!r}; choose one of {', '.join(NORMALISATIONS)}")
        height, width = (int(v) for v in image_size)
        if height < 8 or width < 8:
            raise ConfigError(f"image size {height}x{width} is too small; use at least 8x8")
        if not 50.0 <= float(percentile) <= 100.0:
            raise ConfigError(f"normalisation percentile must be in [50, 100], got {percentile}")
        if scale is not None and not float(scale) > 0:
            raise ConfigError(f"intensity scale must be a positive full-scale value, got {scale}")
        self.views, self.image_size, self.crop = views, (height, width), crop
        self.normalisation, self.percentile = normalisation, float(percentile)
        self.scale = None if scale is None else float(scale)

    # ---------------------------------------------------------------- declaration
    @property
    def source_views(self) -> tuple[str, ...]:
        """Views read from a study, in input order."""
        return VIEW_SETS[self.views]

    @property
    def input_names(self) -> tuple[str, ...]:
        return input_names(self.views)

    def mirrors(self, view: str) -> bool:
        """The posterior view is flipped so the patient's right lies on the same side as in the anterior."""
        return view == POSTERIOR

    def get_config(self) -> dict:
        return {"views": self.views, "image_size": list(self.image_size), "crop": self.crop,
                "normalisation": self.normalisation, "percentile": self.percentile, "scale": self.scale}

    @classmethod
    def from_config(cls, config: dict) -> "ScanPreprocessor":
        try:
            return cls(**config)
        except TypeError as exc:
            raise ConfigError(f"not a preprocessor configuration: {exc}") from None

    @classmethod
    def from_description(cls, described: dict) -> "ScanPreprocessor":
        """The preprocessor a `describe()` dict (metadata.json) was written from."""
        return cls.from_config({k: described[k] for k in ("views", "image_size", "crop", "normalisation",
                                                           "percentile", "scale") if k in described})

    def to_json(self) -> str:
        return json.dumps(self.get_config(), indent=2, sort_keys=True)

    def __eq__(self, other) -> bool:
        return isinstance(other, ScanPreprocessor) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        return f"ScanPreprocessor({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"

    def describe(self) -> dict:
        """The input contract in words and numbers, for metadata.json and the model card."""
        return {**self.get_config(), "inputs": list(self.input_names), "source_views": list(self.source_views),
                "mirror_posterior": any(self.mirrors(v) for v in self.source_views),
                "steps": [f"crop {self.crop} {list(CROPS[self.crop])} (fractions of each view)",
                          "mirror the posterior view left-right",
                          f"resize keeping the aspect ratio (area filter) and zero-pad to "
                          f"{self.image_size[0]}x{self.image_size[1]}",
                          f"{self.intensity_step()}, clip to [0, 1], {self.normalisation}"],
                "input_range": [0.0, 1.0]}

    def intensity_step(self) -> str:
        """How counts are scaled, in words (metadata.json, the model card)."""
        if self.scale is None:
            return f"divide each view by its {self.percentile:g}th-percentile count"
        return f"divide by the fixed full scale {self.scale:g} (display-scaled images)"

    # ---------------------------------------------------------------- forward
    def _layout(self, height, width):
        """Crop box, resized size and padding for a view of `height` x `width` (TF scalars or ints).

        tf.image.resize_with_pad's arithmetic in float32, written out so the inverse can read it.
        """
        y0, x0, y1, x1 = _crop_box(self.crop, height, width)
        ch, cw = tf.cast(y1 - y0, tf.float32), tf.cast(x1 - x0, tf.float32)
        th, tw = (float(v) for v in self.image_size)
        ratio = tf.maximum(cw / tw, ch / th)
        rh, rw = ch / ratio, cw / ratio

        def whole(v):  # 166 / (166 / 168) is 167.99998 in one float32 evaluation order and 168 in another
            return tf.cast(tf.floor(v + 1e-3), tf.int32)
        resized_h, resized_w = tf.maximum(whole(rh), 1), tf.maximum(whole(rw), 1)
        top, left = tf.maximum(0, whole((th - rh) / 2)), tf.maximum(0, whole((tw - rw) / 2))
        return (y0, x0, y1, x1), (resized_h, resized_w), (top, left)

    def geometry(self, view: str, source_shape) -> Geometry:
        """The layout of one view of `source_shape` (H, W), as plain integers."""
        (y0, x0, y1, x1), resized, pad = self._layout(int(source_shape[0]), int(source_shape[1]))
        as_int = lambda t: tuple(int(v) for v in t)  # noqa: E731
        return Geometry((int(source_shape[0]), int(source_shape[1])), as_int((y0, x0, y1, x1)), as_int(resized),
                        as_int(pad), self.mirrors(view))

    def transform_view(self, view: str, images: tf.Tensor) -> tf.Tensor:
        """One view's counts (H, W), (H, W, 1) or (B, H, W, 1) -> (…, h, w, 1) float32 in [0, 1]."""
        x = tf.cast(images, tf.float32)
        if x.shape.rank == 2:
            x = x[..., tf.newaxis]
        batched = x.shape.rank == 4
        x = x if batched else x[tf.newaxis]
        (y0, x0, y1, x1), resized, (top, left) = self._layout(tf.shape(x)[1], tf.shape(x)[2])
        if self.crop != "none":
            x = x[:, y0:y1, x0:x1, :]
        if self.mirrors(view):
            x = tf.reverse(x, axis=[2])
        height, width = self.image_size
        if tuple(x.shape[1:3]) != (height, width):
            x = tf.image.resize(x, tf.stack(resized), method="area")
            x = tf.image.pad_to_bounding_box(x, top, left, height, width)
            x = tf.ensure_shape(x, [None, height, width, 1])
        x = self.normalise(x)
        return x if batched else x[0]

    def normalise(self, x: tf.Tensor) -> tf.Tensor:
        """(B, H, W, 1) counts -> [0, 1]: divide by the full scale (or each view's robust max), clip,
        then compress the range."""
        reference = robust_max(x, self.percentile) if self.scale is None else self.scale
        return compress(tf.maximum(x, 0.0) / reference, self.normalisation)

    def __call__(self, features: dict) -> dict:
        """{source view: counts} -> {input name: model input}; extra keys are ignored."""
        missing = [v for v in self.source_views if v not in features]
        if missing:
            raise ConfigError(f"study has no {' or '.join(missing)} view; the model reads "
                              f"{', '.join(self.source_views)}")
        return {name: self.transform_view(view, features[view])
                for name, view in zip(self.input_names, self.source_views)}

    def numpy(self, study: dict) -> dict[str, np.ndarray]:
        """One unbatched study {view: (H, W) counts} -> {input: (h, w, 1) float32 array}."""
        return {k: v.numpy() for k, v in self({v: np.asarray(study[v], np.float32) for v in self.source_views}).items()}

    def batch(self, studies: list[dict]) -> dict[str, np.ndarray]:
        """Raw studies {view: (H, W) counts} -> {input: (N, h, w, 1)}, one study at a time (sizes may differ)."""
        prepared = [self.numpy(study) for study in studies]
        return {name: np.stack([p[name] for p in prepared]) for name in self.input_names}

    # ---------------------------------------------------------------- inverse
    def as_anterior(self, view: str, image: np.ndarray) -> np.ndarray:
        """A (…, H, W) array in `view`'s source frame, oriented as the anterior view (the posterior mirrored,
        as the model sees it), so the two views' maps can be laid over each other."""
        return np.asarray(image)[..., ::-1] if self.mirrors(view) else np.asarray(image)

    def invert_maps(self, maps: dict[str, np.ndarray], study: dict) -> dict[str, np.ndarray]:
        """One study's maps {input: (h, w)} -> {source view: map on that view's grid and orientation}."""
        return {view: self.invert_map(view, maps[name], np.shape(study[view]))
                for name, view in zip(self.input_names, self.source_views)}

    def invert_map(self, view: str, heatmap: np.ndarray, source_shape) -> np.ndarray:
        """A (h, w) map in the model-input frame -> the source view's (H, W) grid and orientation.

        Each source pixel samples the map where the forward transform sent it (bilinear);
        pixels the crop removed get 0.
        """
        from scipy import ndimage

        geometry = self.geometry(view, source_shape)
        rows, cols = np.mgrid[0:geometry.source_shape[0], 0:geometry.source_shape[1]]
        model_yx = geometry.to_model(np.stack([rows, cols], axis=-1).astype(np.float64))
        values = ndimage.map_coordinates(np.asarray(heatmap, np.float64), [model_yx[..., 0], model_yx[..., 1]],
                                         order=1, mode="nearest")
        y0, x0, y1, x1 = geometry.crop
        inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
        return np.where(inside, values, 0.0).astype(np.float32)

    def box_to_model(self, view: str, box, source_shape) -> tuple[float, float, float, float]:
        """A source-view box (y0, x0, y1, x1, pixels) -> its box in the model input (mirroring swaps x)."""
        geometry = self.geometry(view, source_shape)
        corners = geometry.to_model(np.array([[box[0], box[1]], [box[2], box[3]]], np.float64))
        (ya, xa), (yb, xb) = corners
        return min(ya, yb), min(xa, xb), max(ya, yb), max(xa, xb)


def _crop_box(crop: str, height, width):
    """(y0, x0, y1, x1) of the `crop` box in a view of `height` x `width` (TF scalars or ints); at least one pixel."""
    fy0, fx0, fy1, fx1 = CROPS[crop]
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    y0, x0 = tf.cast(tf.floor(fy0 * h), tf.int32), tf.cast(tf.floor(fx0 * w), tf.int32)
    y1 = tf.maximum(tf.cast(tf.math.ceil(fy1 * h), tf.int32), y0 + 1)
    x1 = tf.maximum(tf.cast(tf.math.ceil(fx1 * w), tf.int32), x0 + 1)
    return y0, x0, y1, x1


def cropped_shape(crop: str, source_shape) -> tuple[int, int]:
    """(height, width) of a view of `source_shape` (H, W) after `crop`: what the resize step starts from."""
    y0, x0, y1, x1 = (int(v) for v in _crop_box(crop, int(source_shape[0]), int(source_shape[1])))
    return y1 - y0, x1 - x0


def compress(linear: tf.Tensor, normalisation: str) -> tf.Tensor:
    """Scaled counts -> [0, 1]: clip, then the `normalisation` range compression (sqrt, log or linear)."""
    x = tf.clip_by_value(linear, 0.0, 1.0)
    if normalisation == "sqrt":
        return tf.sqrt(x)
    if normalisation == "log":
        return tf.math.log1p(x * 99.0) / tf.math.log(100.0)
    return x


def expand(x: tf.Tensor, normalisation: str) -> tf.Tensor:
    """The inverse of `compress`: model-input values back to scaled counts (for count-level augmentation)."""
    if normalisation == "sqrt":
        return tf.square(x)
    if normalisation == "log":
        return (tf.exp(x * tf.math.log(100.0)) - 1.0) / 99.0
    return x


def robust_max(images: tf.Tensor, percentile: float = 99.5) -> tf.Tensor:
    """Per-image count at `percentile` of (B, H, W, 1) images, shaped (B, 1, 1, 1), at least 1.

    The smallest of the top-k pixels instead of a full sort: the bladder and injection site are
    the hottest few pixels, and clipping there keeps them from flattening the skeleton.
    """
    flat = tf.reshape(images, [tf.shape(images)[0], -1])
    n = tf.shape(flat)[1]
    k = tf.maximum(1, tf.cast(tf.math.ceil(tf.cast(n, tf.float32) * (1.0 - percentile / 100.0)), tf.int32))
    top = tf.math.top_k(flat, k=k, sorted=False).values
    return tf.reshape(tf.maximum(tf.reduce_min(top, axis=1), 1.0), [-1, 1, 1, 1])
