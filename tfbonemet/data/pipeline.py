"""tf.data input pipelines: raw studies -> ({input name: image}, label) batches.

The run's ScanPreprocessor (crop, mirror, resize, normalise) runs once per study and is cached;
shuffling, class-balanced sampling and augmentation (tfbonemet.preprocessing.augment) run on
training batches only. A repeated training stream is a pure function of the seed, so a resumed
run can skip the batches it has already seen and continue with exactly the batches an
uninterrupted run would have had.

Sharding (multi-worker training) is explicit: input pipeline i of n keeps studies i, i+n, i+2n, ...
of the split, before any preprocessing, so every study is prepared by exactly one worker; tf.data's
own auto-sharding is then switched off.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from tfbonemet.preprocessing import ScanPreprocessor


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    """How studies are batched; what they look like is the preprocessor's business."""

    batch_size: int = 16
    shuffle_buffer: int = 1024
    deterministic: bool = True
    balanced: bool = False  # training batches sample every class equally often
    cache: str = ""  # tf.data cache: "" keeps preprocessed examples in memory, else a file prefix
    num_shards: int = 1  # input pipelines (workers) reading the split
    shard_index: int = 0  # which of them this one is


def batch_pipeline(ds: tf.data.Dataset, preprocessor: ScanPreprocessor, config: BatchConfig, training: bool,
                   augment: Callable | None = None, seed: int = 0, labels: np.ndarray | None = None,
                   repeat: bool = False, skip_batches: int = 0) -> tf.data.Dataset:
    """(raw views, label[, weight]) elements -> preprocessed, cached, shuffled, batched, augmented, prefetched.

    `augment(features, seed)` gets a per-batch seed (seed, batch index). With `repeat` the
    training stream never ends (fit with steps_per_epoch) and `skip_batches` fast-forwards it.
    `labels` (the labels in element order) size the shuffle buffer and the balanced sampler.
    """
    def prepare(features, *rest):
        return (preprocessor(features), *rest)

    sharded = config.num_shards > 1
    if sharded:
        ds = ds.shard(config.num_shards, config.shard_index)
        labels = None if labels is None else np.asarray(labels)[config.shard_index::config.num_shards]
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
        # batch k of shard i is the stream's batch k * n + i: no two workers draw the same augmentation
        counter = tf.data.Dataset.counter(config.shard_index, config.num_shards)
        ds = tf.data.Dataset.zip(ds, counter).skip(skip_batches)
        ds = ds.map(augment_element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=config.deterministic)
    elif skip_batches:
        ds = ds.skip(skip_batches)
    options = tf.data.Options()
    options.deterministic = config.deterministic
    if sharded:
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
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
