"""TensorBoard beyond scalars, and the training-curve figure every run directory gets.

Each epoch, on the validation split: precision-recall curves (one per class), the validation AUC,
and CAM overlays of a fixed handful of validation studies (the same studies every epoch, so a
reader sees where the model looks as it learns); once per run: the hyperparameters (HParams
plugin), so runs can be compared by their settings. Written under RUN/logs/validation and
RUN/logs/hparams, beside what keras.callbacks.TensorBoard writes.
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import keras
import numpy as np

from tfbonemet import metrics as metrics_lib
from tfbonemet.vocab import POSITIVE_CLASS, TASKS

PR_THRESHOLDS = 101
CAM_STUDIES = 4
TRAINING_CURVES = "training_curves.png"


def pr_curve_data(target: np.ndarray, score: np.ndarray, num_thresholds: int = PR_THRESHOLDS) -> np.ndarray:
    """The PR-curve plugin's (6, num_thresholds) tensor: TP, FP, TN, FN, precision, recall per threshold."""
    thresholds = np.linspace(0, 1, num_thresholds)
    called = score[None, :] >= thresholds[:, None]
    positive = target.astype(bool)[None, :]
    tp, fp = (called & positive).sum(1), (called & ~positive).sum(1)
    fn, tn = (~called & positive).sum(1), (~called & ~positive).sum(1)
    precision = np.divide(tp, tp + fp, out=np.ones(num_thresholds), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros(num_thresholds), where=(tp + fn) > 0)
    return np.stack([tp, fp, tn, fn, precision, recall]).astype(np.float32)


def fixed_studies(labels: np.ndarray, count: int = CAM_STUDIES) -> list[int]:
    """The first studies of each class in turn (positives first), so the handful shows both kinds."""
    by_class = [list(np.flatnonzero(labels == c)) for c in sorted(np.unique(labels), reverse=True)]
    chosen = []
    while len(chosen) < min(count, len(labels)):
        for members in by_class:
            if members and len(chosen) < count:
                chosen.append(int(members.pop(0)))
    return chosen


class ValidationSummaries(keras.callbacks.Callback):
    """Per epoch: PR curves per class and validation AUC (scikit-learn); CAM overlays of fixed studies at
    each epoch whose validation AUC is the best so far, so the images follow the model fit keeps.

    The probabilities are the ones `validation` (the run's ValidationAUC, earlier in the callback
    list) has just computed: the split is predicted once per epoch, not once per consumer. CAMs at
    every epoch would cost about a second each on 2 cores (a float32 clone of the model and a traced
    gradient pass), a twelfth of an epoch of the default fit on the BS-80K chest crops.
    """

    def __init__(self, log_dir, validation, classes, preprocessor, cam_studies: dict, registry_name=None,
                 log=print):
        super().__init__()
        self.log_dir, self.validation = str(log_dir), validation
        self.classes, self.preprocessor, self.registry_name = tuple(classes), preprocessor, registry_name
        self.cam_studies, self.log = cam_studies, log  # name -> raw views {view: counts}
        self.writer = None
        self.best_auc = -np.inf

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        self.writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf
        from tensorboard.plugins.pr_curve import metadata as pr_metadata

        probabilities = np.asarray(self.validation.probabilities, np.float64)
        labels = self.validation.labels
        with self.writer.as_default(step=epoch):
            improved = False
            if np.all(np.isfinite(probabilities)):
                auc = metrics_lib.classification_metrics(labels, probabilities)["auc"]
                improved = not auc <= self.best_auc  # without both classes (AUC NaN) every epoch counts
                self.best_auc = auc if improved and np.isfinite(auc) else self.best_auc
                tf.summary.scalar("epoch_val_auc", auc)
                for c, name in enumerate(self.classes):
                    if len(self.classes) == 2 and c == 0:
                        continue  # binary: the positive class's curve says it all
                    meta = pr_metadata.create_summary_metadata(name, f"validation PR curve, {name} vs rest",
                                                               PR_THRESHOLDS)
                    tf.summary.write(f"pr_curves/{name}", pr_curve_data(labels == c, probabilities[:, c]),
                                     metadata=meta)
            if self.cam_studies and improved:
                self._cams(epoch)
        self.writer.flush()

    def _cams(self, epoch) -> None:
        """CAM overlays (views side by side, heat = map x probability, as `tfbonemet explain` draws them)."""
        import tensorflow as tf

        from tfbonemet.tasks.explain.cams import class_activation_maps
        from tfbonemet.tasks.explain.figures import overlay_rgb

        target = self.classes.index(POSITIVE_CLASS) if POSITIVE_CLASS in self.classes else len(self.classes) - 1
        names, studies = list(self.cam_studies), list(self.cam_studies.values())
        inputs = self.preprocessor.batch(studies)
        probabilities = np.asarray(self.model.predict(inputs, verbose=0))[:, target]
        try:
            maps = class_activation_maps(self.model, inputs, target, "gradcam", registry_name=self.registry_name)
        except Exception as exc:  # an image summary must never end a long training run
            self.log(f"Warning: TensorBoard CAM images stopped at epoch {epoch + 1}: {type(exc).__name__}: {exc}")
            self.cam_studies = {}
            return
        for i, (name, study) in enumerate(zip(names, studies)):
            source_maps = self.preprocessor.invert_maps({input_name: m[i] for input_name, m in maps.items()}, study)
            panels = [overlay_rgb(study[view], heat * probabilities[i]) for view, heat in source_maps.items()]
            height = max(p.shape[0] for p in panels)
            panels = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0)), constant_values=255) for p in panels]
            tf.summary.image(f"cams/{name}", np.concatenate(panels, axis=1)[None],
                             description=f"Grad-CAM of {self.classes[target]} x P = {probabilities[i]:.3f}")


def hparams_of(config) -> dict:
    """The configuration's scalar settings (HParams takes bool, int, float and str), paths left out."""
    skip = ("output_dir", "run_name", "data_dir", "manual_dir", "init_backbone")
    out = {}
    for key, value in dataclasses.asdict(config).items():
        if key in skip or value is None:
            continue
        out[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


class HParamsSummary(keras.callbacks.Callback):
    """Writes the run's hyperparameters once, so TensorBoard's HParams tab can compare runs by them."""

    def __init__(self, log_dir, config, trial_id: str):
        super().__init__()
        self.log_dir, self.values, self.trial_id = str(log_dir), hparams_of(config), trial_id

    def on_train_begin(self, logs=None):
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hp

        with tf.summary.create_file_writer(self.log_dir).as_default():
            hp.hparams_config(hparams=[hp.HParam(k) for k in self.values],
                              metrics=[hp.Metric("epoch_val_auc", group="validation", display_name="val AUC")])
            hp.hparams(self.values, trial_id=self.trial_id)


def tensorboard_callbacks(run_dir, validation, val_split, preprocessor, config, cam_studies: int = CAM_STUDIES,
                          log=print) -> list[keras.callbacks.Callback]:
    """The callbacks a training run adds beside keras.callbacks.TensorBoard (same RUN/logs folder),
    after `validation` (the run's ValidationAUC) in the callback list."""
    logs = Path(run_dir) / "logs"
    wanted = set(fixed_studies(validation.labels, cam_studies))
    studies = {f"validation-{i:03d}": study for i, study in val_split.raw_studies(preprocessor.source_views)
               if i in wanted}
    return [ValidationSummaries(logs / "validation", validation, TASKS[config.task], preprocessor, studies,
                                config.model, log),
            HParamsSummary(logs / "hparams", config, Path(run_dir).name)]


def read_history(path) -> dict[str, np.ndarray]:
    """history.csv as column -> float array (empty cells: NaN)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {key: np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])
            for key in (rows[0] if rows else {})}


def training_curves_figure(history: dict[str, np.ndarray]):
    """Loss (training and validation) and validation AUC per epoch, the best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = history["epoch"] + 1
    fig, (loss_ax, auc_ax) = plt.subplots(1, 2, figsize=(9, 3.6))
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        if key in history:
            loss_ax.plot(epochs, history[key], "o-", ms=3, label=label)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    loss_ax.legend(fontsize=8)
    for key, label in (("val_auc", "validation AUC"), ("val_accuracy", "validation accuracy")):
        if key in history:
            auc_ax.plot(epochs, history[key], "o-", ms=3, label=label)
    if "val_auc" in history and np.isfinite(history["val_auc"]).any():
        best = int(np.nanargmax(history["val_auc"]))
        auc_ax.axvline(epochs[best], color="grey", ls=":", label=f"best epoch {int(epochs[best])} (kept)")
    auc_ax.set(xlabel="epoch", ylabel="validation figure", title="Validation", ylim=(0, 1.02))
    auc_ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def write_training_curves(run_dir) -> Path:
    """RUN/training_curves.png from RUN/history.csv."""
    from tfbonemet.tasks.evaluate.plots import save_figure

    run_dir = Path(run_dir)
    return save_figure(training_curves_figure(read_history(run_dir / "history.csv")), run_dir / TRAINING_CURVES)
