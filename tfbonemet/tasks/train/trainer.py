"""`tfbonemet fit`: data -> tf.data -> registered model -> run directory.

A run directory holds model.keras (best epoch by validation AUC), config.json (the resolved
configuration), history.csv, metrics.json (validation figures) and TensorBoard logs. While a
run trains, backup/ holds the last finished epoch (weights, optimizer, epoch) so `resume`
continues a killed run; the training stream is a pure function of the seed, so the resumed run
sees the batches the uninterrupted run would have seen.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from tfbonemet import execution
from tfbonemet import metrics as metrics_lib
from tfbonemet.config import FitConfig
from tfbonemet.data import datasets
from tfbonemet.data.augment import make_augment
from tfbonemet.data.pipeline import CROPS, TASKS, PipelineConfig, class_weights, input_names
from tfbonemet.data.preprocess import NORMALISATIONS
from tfbonemet.errors import ConfigError
from tfbonemet.execution import JIT_MODES, PRECISIONS, STRATEGIES
from tfbonemet.models import MODELS, build_model, finetune, input_convention
from tfbonemet.models.registry import check_options

LOSSES = ("crossentropy", "focal")
SAMPLINGS = ("natural", "balanced")
LR_SCHEDULES = ("constant", "cosine")
CHOICES = {"task": tuple(TASKS), "precision": PRECISIONS, "jit": JIT_MODES, "strategy": STRATEGIES,
           "loss": LOSSES, "sampling": SAMPLINGS, "lr_schedule": LR_SCHEDULES, "model": tuple(sorted(MODELS)),
           "normalisation": NORMALISATIONS, "crop": CROPS}
FINISHED = ("model.keras", "metrics.json")


def validate(config: FitConfig) -> None:
    for name, choices in CHOICES.items():
        if getattr(config, name) not in choices:
            raise ConfigError(f"unknown {name} {getattr(config, name)!r}; choose one of {', '.join(choices)}")
    for name in ("epochs", "batch_size", "num_studies", "image_height", "image_width"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config, name)}")
    for name in ("learning_rate", "finetune_lr_factor", "focal_gamma"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(config, name)}")
    if config.early_stopping < 0 or config.head_epochs < 0:
        raise ConfigError("early_stopping and head_epochs must not be negative")
    if config.head_epochs >= config.epochs and config.init_backbone:
        raise ConfigError(f"head_epochs ({config.head_epochs}) must be below epochs ({config.epochs}) "
                          f"to leave epochs for fine-tuning the unfrozen backbone")
    if config.init_backbone and not Path(config.init_backbone).is_file():
        raise ConfigError(f"backbone weight file {config.init_backbone} does not exist")
    check_options(config.model, config.model_options)
    datasets.check_source(config.data)
    make_augment(config.augmentation, config.normalisation)


def make_run_dir(config: FitConfig) -> Path:
    """Create a fresh run directory under output_dir, failing clearly if that is not possible."""
    root = Path(config.output_dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"output directory {root} exists and is a file")
    name = config.run_name or f"{dt.datetime.now():%Y%m%d-%H%M%S}-{config.model}"
    run_dir = root / name
    try:
        root.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir(exist_ok=False)
    except FileExistsError:
        raise ConfigError(f"run directory {run_dir} already exists; choose another --run-name "
                          f"or continue it with --resume {run_dir}") from None
    except OSError as exc:
        raise ConfigError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    if not os.access(run_dir, os.W_OK):
        raise ConfigError(f"run directory {run_dir} is not writable")
    return run_dir


class ValidationAUC(keras.callbacks.Callback):
    """Adds `val_auc` (scikit-learn ROC AUC, one-vs-rest macro for multiclass) to each epoch's logs."""

    def __init__(self, dataset, labels):
        super().__init__()
        self.dataset = dataset
        self.labels = np.asarray(labels)

    def on_epoch_end(self, epoch, logs=None):
        probabilities = self.model.predict(self.dataset, verbose=0)
        logs = logs if logs is not None else {}
        logs["val_auc"] = metrics_lib.classification_metrics(self.labels, probabilities)["auc"]


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping on val_auc whose patience counter carries over a resume (seeded from history.csv)."""

    def __init__(self, patience: int, history: list[dict]):
        super().__init__(monitor="val_auc", mode="max", patience=patience)
        self.history = history

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        scores = [float(row["val_auc"]) for row in self.history if row.get("val_auc") not in (None, "", "nan")]
        if scores:
            best = int(np.argmax(scores))
            self.best, self.wait = scores[best], len(scores) - 1 - best


class RandomStateBackup(keras.callbacks.Callback):
    """Backs up the layers' random-generator states (dropout masks) beside BackupAndRestore's weights.

    BackupAndRestore restores weights and optimizer but not SeedGenerator states, so a resumed
    run would draw other dropout masks than the uninterrupted run. Listed before it, this writes
    an epoch's states before that epoch's backup and keeps the previous epoch's as well, so a
    kill between the two writes still finds the states matching the backup.
    """

    def __init__(self, backup_dir: Path):
        super().__init__()
        self.path = Path(backup_dir) / "random_state.json"

    def states(self):
        return [v for v in self.model.variables if v.name == "seed_generator_state"]

    def saved(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def on_train_begin(self, logs=None):
        states = self.saved().get(str(backed_up_epoch(self.path.parent)))
        if states is not None and len(states) == len(self.states()):
            for variable, value in zip(self.states(), states):
                variable.assign(np.asarray(value, dtype=variable.dtype))

    def on_epoch_end(self, epoch, logs=None):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = {k: v for k, v in self.saved().items() if int(k) == epoch}
        write_json(self.path, {**kept, str(epoch + 1): [np.asarray(v).tolist() for v in self.states()]})


def save_atomic(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(path.stem + ".part" + path.suffix)
    model.save(tmp)
    os.replace(tmp, path)


def write_json(path: Path, payload) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=float))
    os.replace(tmp, path)


def read_history(path: Path, before_epoch: int) -> list[dict]:
    """history.csv rows of epochs before `before_epoch`, rewriting the file without later rows.

    A run killed after logging an epoch but before backing it up repeats that epoch on resume;
    dropping its row keeps one row per epoch.
    """
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    kept = [row for row in rows if int(row["epoch"]) < before_epoch]
    if len(kept) != len(rows):
        with path.open("w", newline="") as fh:
            if kept:
                writer = csv.DictWriter(fh, fieldnames=list(kept[0]))
                writer.writeheader()
                writer.writerows(kept)
    return kept


def backed_up_epoch(backup_dir: Path) -> int | None:
    """Epochs finished according to a BackupAndRestore directory (None if there is no backup)."""
    meta = backup_dir / "training_metadata.json"
    return json.loads(meta.read_text())["epoch"] if meta.exists() else None


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What is trained on what: the model builder, the inputs it takes and the classes it predicts.

    `task` None keeps a dataset's own classes (pre-training on chest X-rays).
    """

    build: Callable[[], keras.Model]
    views: str  # key of pipeline.VIEW_SETS
    task: str | None
    class_names: tuple[str, ...]
    model_file: str = "model.keras"


def fit_recipe(config: FitConfig) -> Recipe:
    """The recipe of `tfbonemet fit`: the registered model on the scans, for the configured task."""
    class_names = tuple(TASKS[config.task])

    def build():
        return build_model(config.model, image_size=(config.image_height, config.image_width),
                           num_classes=len(class_names), **config.model_options)
    views = "two_view" if input_convention(config.model) == "two_view" else "anterior"
    return Recipe(build, views, config.task, class_names)


@dataclasses.dataclass
class Stage:
    """A contiguous range of epochs trained with one compiled optimizer (head-only, or all layers)."""

    name: str
    first_epoch: int
    last_epoch: int  # exclusive
    learning_rate: float
    frozen_backbone: bool


def stages(config: FitConfig) -> list[Stage]:
    """Plain training is one stage; fine-tuning a pre-trained backbone is head-first, then all at a lower rate."""
    if not config.init_backbone or not config.head_epochs:
        return [Stage("train", 0, config.epochs, config.learning_rate, False)]
    return [Stage("head", 0, config.head_epochs, config.learning_rate, True),
            Stage("finetune", config.head_epochs, config.epochs, config.learning_rate * config.finetune_lr_factor,
                  False)]


def compile_model(model: keras.Model, config: FitConfig, stage: Stage, steps_per_epoch: int, jit: bool) -> None:
    rate = stage.learning_rate
    if config.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, (stage.last_epoch - stage.first_epoch) * steps_per_epoch)
    if config.loss == "focal":
        loss = keras.losses.CategoricalFocalCrossentropy(gamma=config.focal_gamma)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    else:
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss, metrics=metrics, jit_compile=jit)


def fit(config: FitConfig, log=print, train_split: datasets.Split | None = None,
        val_split: datasets.Split | None = None) -> Path:
    """Train `config.model` and write a new run directory; returns its path.

    `train_split`/`val_split` replace the configured source's splits (cross-validation folds).
    """
    validate(config)
    run_dir = make_run_dir(config) if execution.is_chief() else Path(tempfile.mkdtemp(prefix="tfbonemet-worker-"))
    recipe = fit_recipe(config)
    config = dataclasses.replace(config, **dict(zip(("precision", "jit"), resolve_execution(config, recipe, log))))
    (run_dir / "config.json").write_text(config.to_json())
    return train_recipe(config, recipe, run_dir, log, train_split, val_split)


def resume(run_dir, log=print, train_split: datasets.Split | None = None,
           val_split: datasets.Split | None = None) -> Path:
    """Continue a killed run from its last backed-up epoch, with the configuration it started with."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.json)")
    if all((run_dir / name).exists() for name in FINISHED):
        raise ConfigError(f"run {run_dir} has already finished")
    config = resolved_config(run_dir)
    validate(config)
    log(f"Resuming {run_dir}")
    return train_recipe(config, fit_recipe(config), run_dir, log, train_split, val_split)


def resolve_execution(config: FitConfig, recipe: Recipe, log) -> tuple[str, str]:
    """Concrete precision and jit for the run (config.json records these, so a resume matches)."""
    key = {"model": config.model, "options": config.model_options, "views": recipe.views,
           "classes": len(recipe.class_names), "size": [config.image_height, config.image_width]}
    precision, jit = execution.choose(config.precision, config.jit, recipe.build, key, config.batch_size, log)
    return precision, "on" if jit else "off"


def train_recipe(config: FitConfig, recipe: Recipe, run_dir: Path, log, train_split: datasets.Split | None = None,
                 val_split: datasets.Split | None = None) -> Path:
    """Train into `run_dir` (continuing from its backups, if any) and write the model and metrics."""
    keras.utils.set_random_seed(config.seed)
    strategy = execution.make_strategy(config.strategy)
    replicas = strategy.num_replicas_in_sync
    train_split = train_split or datasets.open_split(config, "train")
    val_split = val_split or datasets.open_split(config, "validation")
    if len(train_split) == 0 or len(val_split) == 0:
        raise ConfigError(f"too few studies ({config.num_studies}) for a train/validation split")
    num_classes = len(recipe.class_names)
    y_train, y_val = train_split.task_labels(recipe.task), val_split.task_labels(recipe.task)
    pipeline = PipelineConfig.for_run(config, recipe.views, batch_size=config.batch_size * replicas,
                                      deterministic=config.deterministic, balanced=config.sampling == "balanced")
    steps = math.ceil(len(y_train) / pipeline.batch_size)
    val_ds = val_split.batches(pipeline, training=False, task=recipe.task)
    augment = make_augment(config.augmentation, config.normalisation)
    weights = None
    if config.class_weighting and config.sampling == "natural":
        weights = class_weights(y_train, num_classes)

    with execution.dtype_policy(config.precision), strategy.scope():
        model = recipe.build()
        if config.init_backbone:
            finetune.load_backbone_weights(model, config.init_backbone)
            log(f"Loaded pre-trained backbone weights from {config.init_backbone}")
        log(f"Training {config.model} ({model.count_params():,} parameters) on {len(y_train)} studies, "
            f"validating on {len(y_val)}; inputs {', '.join(input_names(recipe.views))} "
            f"{config.image_height}x{config.image_width}; precision {config.precision}, XLA {config.jit}; "
            f"{replicas} replica(s), global batch {pipeline.batch_size}"
            + (f"; augmentation {config.augmentation}" if augment else "")
            + ("; class-balanced sampling" if pipeline.balanced else ""))
        for stage in stages(config):
            _train_stage(model, config, recipe, stage, run_dir, pipeline, train_split, val_ds, y_val, augment, weights,
                         steps, log)
    return _finish(recipe, run_dir, model, val_ds, y_val, log)


def _train_stage(model, config, recipe, stage, run_dir, pipeline, train_split, val_ds, y_val, augment, weights, steps,
                 log):
    backup_dir = run_dir / "backup" / stage.name
    start = backed_up_epoch(backup_dir)
    start = stage.first_epoch if start is None else start
    history = read_history(run_dir / "history.csv", before_epoch=start)
    if stage.first_epoch < start < stage.last_epoch:
        log(f"Resuming stage {stage.name} at epoch {start + 1} of {config.epochs}")
    if stage.name != "train":
        if stage.frozen_backbone:
            finetune.freeze_backbone(model)
        else:
            finetune.unfreeze(model, fraction=1.0)
        log(f"Stage {stage.name}: epochs {stage.first_epoch + 1}-{stage.last_epoch}, "
            f"learning rate {stage.learning_rate:g}, backbone {'frozen' if stage.frozen_backbone else 'trainable'}")
    compile_model(model, config, stage, steps, config.jit == "on")
    train_ds = train_split.batches(pipeline, training=True, task=recipe.task, augment=augment, seed=config.seed,
                                   repeat=True, skip_batches=(start - stage.first_epoch) * steps)
    if config.loss == "focal":
        num_classes = len(recipe.class_names)
        train_ds = train_ds.map(lambda x, y, *rest: (x, keras.ops.one_hot(y, num_classes), *rest))
        val_ds = val_ds.map(lambda x, y: (x, keras.ops.one_hot(y, num_classes)))
    scores = [float(row["val_auc"]) for row in history if row.get("val_auc") not in (None, "", "nan")]
    callbacks = [
        ValidationAUC(val_ds, y_val),
        keras.callbacks.ModelCheckpoint(run_dir / "best.keras", monitor="val_auc", mode="max", save_best_only=True,
                                        initial_value_threshold=max(scores) if scores else None),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False, profile_batch=0),
        # kept until the run is finished, so a resume after this stage restores its end state
        RandomStateBackup(backup_dir),
        keras.callbacks.BackupAndRestore(str(backup_dir), double_checkpoint=True, delete_checkpoint=False),
    ]
    if config.early_stopping:
        callbacks.insert(2, ResumableEarlyStopping(config.early_stopping, history))
    model.fit(train_ds, validation_data=val_ds, epochs=stage.last_epoch, initial_epoch=stage.first_epoch,
              steps_per_epoch=steps, class_weight=weights, callbacks=callbacks, shuffle=False,
              verbose=1 if sys.stdout.isatty() else 2)


def _finish(recipe, run_dir, model, val_ds, y_val, log) -> Path:
    best_path = run_dir / "best.keras"
    if best_path.exists():
        model = keras.models.load_model(best_path)
        best_path.unlink()
    save_atomic(model, run_dir / recipe.model_file)
    probabilities = model.predict(val_ds, verbose=0)
    figures = metrics_lib.classification_metrics(y_val, probabilities)
    with (run_dir / "history.csv").open(newline="") as fh:
        epochs_run = sum(1 for _ in csv.DictReader(fh))
    write_json(run_dir / "metrics.json", {"split": "validation", "task": recipe.task, "epochs_run": epochs_run,
                                          "classes": list(recipe.class_names), **figures})
    shutil.rmtree(run_dir / "backup", ignore_errors=True)
    log("Validation: " + ", ".join(f"{k} {figures[k]:.3f}" for k in
                                   ("accuracy", "precision", "recall", "specificity", "f1", "auc")))
    log(f"Run directory: {run_dir}")
    return run_dir


def resolved_config(run_dir: Path) -> FitConfig:
    """The configuration a run was trained with."""
    return FitConfig(**json.loads((Path(run_dir) / "config.json").read_text()))
