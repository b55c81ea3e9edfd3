"""tf.data input pipelines: studies -> ({"anterior", "posterior"} or {"image"}, label) batches.

Deterministic preprocessing (mirror, resize, normalise) runs once and is cached; shuffling and
augmentation run per epoch on training batches only.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from tfbonemet.data.phantom import CLASS_NAMES
from tfbonemet.data.preprocess import mirror_posterior, normalise_counts, resize_with_pad

TASKS = {
    "binary": ("no_metastasis", "metastasis"),
    "multiclass": CLASS_NAMES,
}
VIEW_SETS = {
    "two_view": ("anterior", "posterior"),
    "anterior": ("anterior",),
    "posterior": ("posterior",),
}


def task_labels(labels: np.ndarray, task: str) -> np.ndarray:
    """Map 4-class phantom/clinical labels to the task's label space."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    labels = np.asarray(labels, np.int64)
    if task == "binary":
        return (labels == CLASS_NAMES.index("metastasis")).astype(np.int64)
    return labels


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    image_height: int = 512
    image_width: int = 128
    views: str = "two_view"  # key of VIEW_SETS; a single view feeds the input named "image"
    normalisation: str = "sqrt"
    percentile: float = 99.5
    batch_size: int = 16
    shuffle_buffer: int = 1024
    deterministic: bool = True


def input_names(views: str) -> tuple[str, ...]:
    return VIEW_SETS[views] if views == "two_view" else ("image",)


def preprocess_views(features: dict, config: PipelineConfig) -> dict:
    """Raw counts of each view -> normalised float images named as the model's inputs."""
    out = {}
    for view in VIEW_SETS[config.views]:
        x = tf.cast(features[view], tf.float32)
        if x.shape.rank == 2:
            x = x[..., tf.newaxis]
        if view == "posterior":
            x = mirror_posterior(x)
        x = resize_with_pad(x, config.image_height, config.image_width)
        x = normalise_counts(x, config.percentile, config.normalisation)
        out["image" if config.views != "two_view" else view] = x
    return out


def from_arrays(views: dict[str, np.ndarray], labels: np.ndarray, config: PipelineConfig, training: bool,
                augment: Callable | None = None, seed: int = 0,
                sample_weights: np.ndarray | None = None) -> tf.data.Dataset:
    """Batches from in-memory count arrays keyed by view name."""
    features = {name: views[name] for name in VIEW_SETS[config.views]}
    elements = (features, labels) if sample_weights is None else (features, labels, sample_weights)
    ds = tf.data.Dataset.from_tensor_slices(elements)
    return batch_pipeline(ds, config, training, augment=augment, seed=seed, num_examples=len(labels))


def batch_pipeline(ds: tf.data.Dataset, config: PipelineConfig, training: bool, augment: Callable | None = None,
                   seed: int = 0, num_examples: int | None = None) -> tf.data.Dataset:
    """(raw features, label[, weight]) elements -> cached, shuffled, batched, augmented, prefetched."""
    def prepare(features, *rest):
        return (preprocess_views(features, config), *rest)

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=config.deterministic).cache()
    if training:
        buffer = min(config.shuffle_buffer, num_examples or config.shuffle_buffer)
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(config.batch_size, drop_remainder=False)
    if training and augment is not None:
        ds = ds.map(lambda x, *rest: (augment(x), *rest), num_parallel_calls=tf.data.AUTOTUNE,
                    deterministic=config.deterministic)
    options = tf.data.Options()
    options.deterministic = config.deterministic
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def class_weights(labels: Sequence[int], num_classes: int) -> dict[int, float]:
    """Inverse-frequency weights, normalised so the average weight per example is 1."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes).astype(float)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return {i: float(w) for i, w in enumerate(weights)}
