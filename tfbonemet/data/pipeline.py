"""tf.data input pipelines: studies -> ({"anterior", "posterior"} or {"image"}, label) batches.

Deterministic preprocessing (mirror, resize, normalise) runs once and is cached; shuffling,
class-balanced sampling and augmentation (tfbonemet.data.augment) run on training batches only.
A repeated training stream is a pure function of the seed, so a resumed run can skip the batches
it has already seen and continue with exactly the batches an uninterrupted run would have had.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from tfbonemet.data.phantom import CLASS_NAMES
from tfbonemet.data.preprocess import mirror_posterior, normalise_counts, resize_with_pad, thoracic_crop

TASKS = {
    "binary": ("no_metastasis", "metastasis"),
    "multiclass": CLASS_NAMES,
}
VIEW_SETS = {
    "two_view": ("anterior", "posterior"),
    "anterior": ("anterior",),
    "posterior": ("posterior",),
    "image": ("image",),  # single-image datasets (chest X-ray)
}
CROPS = ("none", "thorax")  # thorax: the thoracic workflow (Lin et al. 2021) on whole-body views


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
    balanced: bool = False  # training batches sample every class equally often
    cache: str = ""  # tf.data cache: "" keeps preprocessed examples in memory, else a file prefix
    crop: str = "none"  # key of CROPS, applied before resizing

    @classmethod
    def for_run(cls, config, views: str, **overrides) -> "PipelineConfig":
        """The preprocessing a run (a FitConfig) trains with; training, evaluation and export share it."""
        values = dict(image_height=config.image_height, image_width=config.image_width, views=views,
                      normalisation=config.normalisation, batch_size=config.batch_size, crop=config.crop)
        return cls(**{**values, **overrides})


def input_names(views: str) -> tuple[str, ...]:
    return VIEW_SETS[views] if views == "two_view" else ("image",)


def preprocess_views(features: dict, config: PipelineConfig) -> dict:
    """Raw counts of each view -> normalised float images named as the model's inputs."""
    out = {}
    for view in VIEW_SETS[config.views]:
        x = tf.cast(features[view], tf.float32)
        if x.shape.rank == 2:
            x = x[..., tf.newaxis]
        if config.crop == "thorax":
            x = thoracic_crop(x)
        if view == "posterior":
            x = mirror_posterior(x)
        x = resize_with_pad(x, config.image_height, config.image_width)
        x = normalise_counts(x, config.percentile, config.normalisation)
        out["image" if config.views != "two_view" else view] = x
    return out


def from_arrays(views: dict[str, np.ndarray], labels: np.ndarray, config: PipelineConfig, training: bool,
                augment: Callable | None = None, seed: int = 0, sample_weights: np.ndarray | None = None,
                repeat: bool = False, skip_batches: int = 0) -> tf.data.Dataset:
    """Batches from in-memory count arrays keyed by view name."""
    features = {name: views[name] for name in VIEW_SETS[config.views]}
    elements = (features, labels) if sample_weights is None else (features, labels, sample_weights)
    ds = tf.data.Dataset.from_tensor_slices(elements)
    return batch_pipeline(ds, config, training, augment=augment, seed=seed, labels=labels, repeat=repeat,
                          skip_batches=skip_batches)


def batch_pipeline(ds: tf.data.Dataset, config: PipelineConfig, training: bool, augment: Callable | None = None,
                   seed: int = 0, labels: np.ndarray | None = None, repeat: bool = False,
                   skip_batches: int = 0) -> tf.data.Dataset:
    """(raw features, label[, weight]) elements -> cached, shuffled, batched, augmented, prefetched.

    `augment(features, seed)` gets a per-batch seed (seed, batch index). With `repeat` the
    training stream never ends (fit with steps_per_epoch) and `skip_batches` fast-forwards it.
    `labels` (the labels in element order) size the shuffle buffer and the balanced sampler.
    """
    def prepare(features, *rest):
        return (preprocess_views(features, config), *rest)

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=config.deterministic)
    ds = ds.cache(config.cache)
    if training:
        num_examples = len(labels) if labels is not None else config.shuffle_buffer
        buffer = max(1, min(config.shuffle_buffer, num_examples))
        if config.balanced:
            ds = balanced_sample(ds, labels, buffer, seed)
            ds = ds if repeat else ds.take(num_examples)
        else:
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
            ds = ds.repeat() if repeat else ds
    ds = ds.batch(config.batch_size, drop_remainder=False)
    if training and augment is not None:
        def augment_element(element, index):
            features, *rest = element
            return (augment(features, tf.stack([tf.constant(seed, tf.int64), index])), *rest)
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.counter()).skip(skip_batches)
        ds = ds.map(augment_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=config.deterministic)
    elif skip_batches:
        ds = ds.skip(skip_batches)
    options = tf.data.Options()
    options.deterministic = config.deterministic
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def balanced_sample(ds: tf.data.Dataset, labels: np.ndarray, buffer: int, seed: int) -> tf.data.Dataset:
    """An endless stream drawing each present class with equal probability (minority examples repeat)."""
    if labels is None:
        raise ValueError("balanced sampling needs the labels")
    classes = np.unique(np.asarray(labels))
    per_class = [ds.filter(lambda _, label, *rest, c=int(c): tf.equal(tf.cast(label, tf.int64), c))
                 .shuffle(buffer, seed=seed + int(c), reshuffle_each_iteration=True).repeat()
                 for c in classes]
    return tf.data.Dataset.sample_from_datasets(per_class, weights=[1.0 / len(classes)] * len(classes), seed=seed)


def class_weights(labels: Sequence[int], num_classes: int) -> dict[int, float]:
    """Inverse-frequency weights, normalised so the average weight per example is 1."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes).astype(float)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return {i: float(w) for i, w in enumerate(weights)}
