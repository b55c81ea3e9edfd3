"""`tfbonemet fit`: data -> tf.data -> registered model -> run directory.

A run directory holds model.keras (best epoch by validation AUC), config.json, history.csv,
metrics.json (validation figures) and TensorBoard logs.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
from pathlib import Path

import keras
import numpy as np

from tfbonemet import metrics as metrics_lib
from tfbonemet.config import FitConfig
from tfbonemet.data.datasets import load_split
from tfbonemet.data.pipeline import TASKS, PipelineConfig, class_weights, from_arrays, input_names, task_labels
from tfbonemet.errors import ConfigError
from tfbonemet.models import MODELS, build_model, input_convention

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def validate(config: FitConfig) -> None:
    if config.model not in MODELS:
        raise ConfigError(f"unknown model {config.model!r}; choose one of {', '.join(sorted(MODELS))}")
    if config.task not in TASKS:
        raise ConfigError(f"unknown task {config.task!r}; choose one of {', '.join(TASKS)}")
    if config.precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {config.precision!r}; choose one of {', '.join(PRECISIONS)}")
    for name in ("epochs", "batch_size", "num_studies", "image_height", "image_width"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.learning_rate <= 0:
        raise ConfigError(f"learning_rate must be positive, got {config.learning_rate}")


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
        raise ConfigError(f"run directory {run_dir} already exists; choose another --run-name") from None
    except OSError as exc:
        raise ConfigError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    if not os.access(run_dir, os.W_OK):
        raise ConfigError(f"run directory {run_dir} is not writable")
    return run_dir


@contextlib.contextmanager
def dtype_policy(precision: str):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


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


def save_atomic(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(path.stem + ".part" + path.suffix)
    model.save(tmp)
    os.replace(tmp, path)


def write_json(path: Path, payload) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=float))
    os.replace(tmp, path)


def fit(config: FitConfig, log=print) -> Path:
    """Train `config.model` and write the run directory; returns its path."""
    validate(config)
    run_dir = make_run_dir(config)
    (run_dir / "config.json").write_text(config.to_json())
    keras.utils.set_random_seed(config.seed)
    train, val = load_split(config, "train", log=log), load_split(config, "validation", log=log)
    num_classes = len(TASKS[config.task])
    y_train, y_val = task_labels(train.labels, config.task), task_labels(val.labels, config.task)
    if len(train) == 0 or len(val) == 0:
        raise ConfigError(f"too few studies ({config.num_studies}) for a train/validation split")

    views = "two_view" if input_convention(config.model) == "two_view" else "anterior"
    pipeline = PipelineConfig(image_height=config.image_height, image_width=config.image_width, views=views,
                              normalisation=config.normalisation, batch_size=config.batch_size)
    arrays_of = lambda s: {"anterior": s.anterior, "posterior": s.posterior}  # noqa: E731
    train_ds = from_arrays(arrays_of(train), y_train, pipeline, training=True, seed=config.seed)
    val_ds = from_arrays(arrays_of(val), y_val, pipeline, training=False)

    with dtype_policy(config.precision):
        model = build_model(config.model, image_size=(config.image_height, config.image_width),
                            num_classes=num_classes, **config.model_options)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        best_path = run_dir / "best.keras"
        callbacks = [
            ValidationAUC(val_ds, y_val),
            keras.callbacks.ModelCheckpoint(best_path, monitor="val_auc", mode="max", save_best_only=True),
            keras.callbacks.CSVLogger(str(run_dir / "history.csv")),
            keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False, profile_batch=0),
        ]
        log(f"Training {config.model} ({model.count_params():,} parameters) on {len(train)} studies, "
            f"validating on {len(val)}; inputs {', '.join(input_names(views))} "
            f"{config.image_height}x{config.image_width}, precision {config.precision}")
        model.fit(train_ds, validation_data=val_ds, epochs=config.epochs,
                  class_weight=class_weights(y_train, num_classes) if config.class_weighting else None,
                  callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
        if best_path.exists():
            model = keras.models.load_model(best_path)
            best_path.unlink()
        save_atomic(model, run_dir / "model.keras")
        probabilities = model.predict(val_ds, verbose=0)
    figures = metrics_lib.classification_metrics(y_val, probabilities)
    write_json(run_dir / "metrics.json", {"split": "validation", "task": config.task,
                                          "classes": list(TASKS[config.task]), **figures})
    log("Validation: " + ", ".join(f"{k} {figures[k]:.3f}" for k in
                                   ("accuracy", "precision", "recall", "specificity", "f1", "auc")))
    log(f"Run directory: {run_dir}")
    return run_dir


def resolved_config(run_dir: Path) -> FitConfig:
    """The configuration a run was trained with."""
    return FitConfig(**json.loads((Path(run_dir) / "config.json").read_text()))

