"""The fit plan: everything a run needs, resolved once before it trains.

`plan_fit` reads a FitConfig top-down: the splits, the input size, the recipe, the intensity scale,
the preprocessor, the strategy and its global batch, then the precision and XLA choice. The trainer
only runs a plan: a new fit, each worker of a multi-worker fit and `fit --resume` (whose plan comes
from the run directory, with nothing left to choose) all train from one.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import tensorflow as tf

from tfbonemet import execution
from tfbonemet.config import FitConfig
from tfbonemet.data import datasets
from tfbonemet.data.pipeline import BatchConfig, class_weights
from tfbonemet.errors import ConfigError
from tfbonemet.preprocessing import ScanPreprocessor
from tfbonemet.preprocessing.augment import make_augment
from tfbonemet.run import preprocessor_for, validate
from tfbonemet.tasks.train import distribute
from tfbonemet.tasks.train.recipe import Recipe, Stage, fit_recipe, input_size, intensity_scale, stages


@dataclasses.dataclass(frozen=True)
class FitPlan:
    """A resolved run: its configuration (input size, intensity scale, precision and jit concrete), recipe,
    preprocessor, splits, strategy and global batch; what the training stream and the stages derive from it."""

    config: FitConfig
    recipe: Recipe
    preprocessor: ScanPreprocessor
    train_split: datasets.Split
    val_split: datasets.Split
    strategy: tf.distribute.Strategy
    batching: BatchConfig  # the global batch: config.batch_size per replica

    @property
    def stages(self) -> list[Stage]:
        return stages(self.config)

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @property
    def multi_worker(self) -> bool:
        return distribute.is_multi_worker(self.strategy)

    @property
    def writer(self) -> bool:
        """Whether this process writes the run directory: a non-chief worker only reads it."""
        return not self.multi_worker or distribute.is_chief()

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_split) / self.batching.batch_size)

    @functools.cached_property
    def y_train(self) -> np.ndarray:
        return self.train_split.task_labels(self.recipe.task)

    @functools.cached_property
    def y_val(self) -> np.ndarray:
        return self.val_split.task_labels(self.recipe.task)

    @functools.cached_property
    def val_ds(self) -> tf.data.Dataset:
        return self.val_split.batches(self.preprocessor, self.batching, training=False, task=self.recipe.task)

    @functools.cached_property
    def augment(self):
        """The training batches' augmentation, or None."""
        return make_augment(self.config.augmentation, self.config.normalisation)

    @functools.cached_property
    def class_weights(self) -> dict | None:
        """Per-class loss weights with natural sampling (balanced sampling needs none), or None."""
        if self.config.class_weighting and self.config.sampling == "natural":
            return class_weights(self.y_train, len(self.recipe.class_names))
        return None


def plan_fit(config: FitConfig, log=print, train_split: datasets.Split | None = None,
             val_split: datasets.Split | None = None) -> FitPlan:
    """The plan of `tfbonemet fit`. `train_split`/`val_split` replace the configured source's splits
    (cross-validation folds)."""
    validate(config)
    if config.strategy == "multi-worker":
        distribute.join_job(config)  # refused now, before the strategy waits for the other workers
        distribute.make_strategy(config.strategy)  # before the first TensorFlow op (the intensity sample)
    train_split = train_split or datasets.open_split(config, "train")
    val_split = val_split or datasets.open_split(config, "validation")
    height, width = input_size(config, train_split, log)
    config = dataclasses.replace(config, image_height=height, image_width=width)
    recipe = fit_recipe(config)
    config = dataclasses.replace(config, intensity_scale=intensity_scale(config, recipe, train_split, log))
    preprocessor = preprocessor_for(config, recipe.views, (height, width))
    return make_plan(config, recipe, preprocessor, train_split, val_split, log)


def make_plan(config: FitConfig, recipe: Recipe, preprocessor: ScanPreprocessor, train_split: datasets.Split,
              val_split: datasets.Split, log=print, choose_execution: bool = True) -> FitPlan:
    """The plan of a recipe on its splits: the strategy and its global batch, checked against the
    training studies, and (`choose_execution`) the precision and XLA choice, timed where worth it."""
    if config.strategy == "multi-worker" and not config.run_name:
        raise ConfigError("strategy multi-worker needs --run-name: every worker must name the same run directory")
    if len(train_split) == 0 or len(val_split) == 0:
        raise ConfigError(f"too few studies ({len(train_split)} train, {len(val_split)} validation) for training")
    strategy = distribute.make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    check_batch_size(config.batch_size, replicas, len(train_split))  # before the probe times batches of that size
    if choose_execution:
        multi_worker = config.strategy == "multi-worker"
        total_steps = None if multi_worker else math.ceil(len(train_split) / config.batch_size) * config.epochs
        precision, jit = resolve_execution(config, recipe, log, total_steps)
        config = dataclasses.replace(config, precision=precision, jit=jit)
    batching = BatchConfig(batch_size=config.batch_size * replicas, deterministic=config.deterministic,
                           balanced=config.sampling == "balanced")
    return FitPlan(config, recipe, preprocessor, train_split, val_split, strategy, batching)


def check_batch_size(batch_size: int, replicas: int, studies: int) -> None:
    if batch_size * replicas > studies:
        raise ConfigError(f"batch size {batch_size * replicas} is larger than the {studies} training "
                          f"studies; use --batch-size {max(1, studies // replicas)} or less")


def resolve_execution(config: FitConfig, recipe: Recipe, log, total_steps: int | None = None) -> tuple[str, str]:
    """Concrete precision and jit for the run (config.json records these, so a resume matches).

    `total_steps` (the run's training steps) lets a run too short to repay the timing probe skip it.

    Workers of a multi-worker run must build the same graph, so on CPUs they skip the per-machine
    timing probe and take the baseline (float32 without XLA unless asked otherwise).
    """
    if config.strategy == "multi-worker" and not execution.has_gpu():
        precision, jit = execution.candidates(config.precision, config.jit)[0]
    else:
        key = {"model": config.model, "options": config.model_options, "views": recipe.views,
               "classes": len(recipe.class_names), "size": [config.image_height, config.image_width]}
        precision, jit = execution.choose(config.precision, config.jit, recipe.build, key, config.batch_size, log,
                                          total_steps=total_steps)
    return precision, "on" if jit else "off"
