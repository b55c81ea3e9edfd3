"""The package's words, defined once: views, model inputs, classes, tasks and split names.

Every module that names a view, an input, a class or a split imports it from here, so a dataset,
a model and an exported signature can never disagree on spelling or order.
"""
from __future__ import annotations

import numpy as np

from tfbonemet.errors import ConfigError

ANTERIOR, POSTERIOR = "anterior", "posterior"
VIEWS = (ANTERIOR, POSTERIOR)  # the two planar views of a whole-body bone scan, in input order
IMAGE = "image"  # the one input of a single-view model (fed the anterior view, or a lone image)
# What a model reads: both views as inputs `anterior` + `posterior`, or one view as the input `image`.
VIEW_SETS = {"two_view": VIEWS, "anterior": (ANTERIOR,), "posterior": (POSTERIOR,), "image": (IMAGE,)}

CLASS_NAMES = ("normal", "metastasis", "arthritis", "thyroid_carcinoma")  # clinical 4-class labels
NO_METASTASIS = "no_metastasis"
TASKS = {
    "binary": (NO_METASTASIS, "metastasis"),
    "multiclass": CLASS_NAMES,
}
POSITIVE_CLASS = "metastasis"
REFER = "refer"  # the label of a study inside the referral band: a physician reads it (tfbonemet.referral)
SPLITS = ("train", "validation", "test")


def input_names(views: str) -> tuple[str, ...]:
    """Model input names for a VIEW_SETS key: the views themselves for two-view models, else `image`."""
    if views not in VIEW_SETS:
        raise ConfigError(f"unknown view set {views!r}; choose one of {', '.join(VIEW_SETS)}")
    return VIEWS if views == "two_view" else (IMAGE,)


def tensor_name(tensor) -> str:
    """A Keras input tensor's name without TensorFlow's `:0` suffix."""
    return tensor.name.split(":")[0]


def model_input_names(model) -> list[str]:
    return [tensor_name(t) for t in model.inputs]


def label_map(dataset_classes, task: str | None) -> np.ndarray:
    """Dataset label index -> task label index; `task=None` keeps the dataset's own classes.

    Only classes that mean the same thing are mapped: the 4 clinical classes fold into the binary
    task, and a 2-class dataset serves the binary task only if its classes are the binary task's.
    A chest X-ray's `normal`/`pneumonia` is refused rather than silently read as metastasis.
    """
    names = tuple(dataset_classes)
    if task is None:
        return np.arange(len(names), dtype=np.int64)
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if names == TASKS[task]:
        return np.arange(len(names), dtype=np.int64)
    if names == CLASS_NAMES and task == "binary":
        return np.array([int(n == POSITIVE_CLASS) for n in names], np.int64)
    raise ConfigError(f"dataset classes ({', '.join(names)}) do not fit task {task!r} "
                      f"({', '.join(TASKS[task])})")


def task_labels(labels, task: str, dataset_classes=CLASS_NAMES) -> np.ndarray:
    """Labels in `dataset_classes` order -> the task's label indices."""
    return label_map(dataset_classes, task)[np.asarray(labels, np.int64)]


# Option values the CLI offers; the modules that act on them import them from here, so `--help`
# lists them without loading TensorFlow.
CROP_NAMES = ("none", "thorax")
NORMALISATIONS = ("sqrt", "linear", "log")
INTENSITY_SCALES = ("auto", "percentile")  # or a number: the full-scale value of display-scaled images
DISPLAY_FULL_SCALE = 255  # 8-bit display-scaled images (JPEG/PNG crops)
PHANTOM_DIFFICULTIES = ("easy", "realistic", "hard")  # keys of tfbonemet.data.phantom.DIFFICULTIES
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")
JIT_MODES = ("on", "off", "auto")
STRATEGIES = ("default", "mirrored", "multi-worker")
LOSSES = ("crossentropy", "focal")
SAMPLINGS = ("natural", "balanced")
LR_SCHEDULES = ("constant", "cosine")
AGGREGATIONS = ("concat", "sum", "mean", "max", "attention")
THRESHOLD_RULES = ("max_f1", "youden", "sensitivity")
EXPORT_FORMATS = ("savedmodel", "tflite", "all")
PREDICTION_FORMATS = ("csv", "json")
