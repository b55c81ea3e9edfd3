"""`tfbonemet evaluate`: a trained model's figures of merit on one split, with patient-level bootstrap CIs.

The operating point (Youden, or a target sensitivity) is chosen on the validation split and then
applied unchanged to the split being evaluated, so the reported sensitivity/specificity there are
not tuned on the very studies they describe.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tfbonemet import metrics as metrics_lib
from tfbonemet.config import FitConfig, resolve
from tfbonemet.data.datasets import load_split
from tfbonemet.data.pipeline import TASKS, PipelineConfig, from_arrays, task_labels
from tfbonemet.errors import ConfigError, ModelError

TWO_VIEW_INPUTS = ("anterior", "posterior")


@dataclasses.dataclass
class LoadedRun:
    """A model together with the data options that feed it."""

    model: object  # keras.Model
    config: FitConfig
    run_dir: Path | None  # None for a bare .keras file
    views: str  # "two_view" or "anterior" (single input named "image")

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(TASKS[self.config.task])

    def pipeline(self, batch_size: int | None = None) -> PipelineConfig:
        return PipelineConfig.for_run(self.config, self.views, batch_size=batch_size or self.config.batch_size)


def input_names(model) -> list[str]:
    return [t.name.split(":")[0] for t in model.inputs]


def load_run(path, data_options: dict | None = None) -> LoadedRun:
    """A run directory (model.keras + config.json) or a bare .keras file plus data options.

    For a bare model the input size comes from the model itself and the task from its number of
    outputs; the data source, study count and seed come from `data_options` or the defaults.
    """
    import keras

    import tfbonemet.models  # noqa: F401  (registers the custom layers the saved model needs)
    from tfbonemet.train import resolved_config

    path = Path(path)
    if path.is_dir():
        model_path, config_path = path / "model.keras", path / "config.json"
        for required in (model_path, config_path):
            if not required.is_file():
                raise ModelError(f"{required} is missing; is {path} a run directory from `tfbonemet fit`?")
        try:
            config = resolved_config(path)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{config_path} cannot be read: {exc}") from None
        run_dir = path
    elif path.suffix == ".keras" and path.is_file():
        model_path, config, run_dir = path, None, None
    else:
        raise ModelError(f"{path} is neither a run directory nor a .keras model file")
    try:
        model = keras.models.load_model(model_path)
    except Exception as exc:  # keras raises many types for a corrupt or foreign file
        raise ModelError(f"cannot load model {model_path}: {exc}") from None
    names = input_names(model)
    views = "two_view" if set(TWO_VIEW_INPUTS) <= set(names) else "anterior"
    height, width = model.inputs[0].shape[1:3]
    if config is None:
        num_outputs = model.outputs[0].shape[-1]
        task = next((t for t, c in TASKS.items() if len(c) == num_outputs), None)
        if task is None:
            raise ModelError(f"{path} outputs {num_outputs} classes; no task has that many")
        from tfbonemet.models import MODELS

        known = {"model": model.name} if model.name in MODELS else {}
        config = resolve(overrides={**(data_options or {}), **known, "task": task, "image_height": int(height),
                                    "image_width": int(width)})
    elif (config.image_height, config.image_width) != (height, width):
        raise ModelError(f"{model_path} takes {height}x{width} images but its config.json says "
                         f"{config.image_height}x{config.image_width}")
    return LoadedRun(model, config, run_dir, views)


def predict_split(run: LoadedRun, split: str, log=print):
    """(studies, task labels, class probabilities) for one split of the run's data."""
    studies = load_split(run.config, split, log=log)
    if len(studies) == 0:
        raise ConfigError(f"split {split!r} of data {run.config.data!r} holds no studies")
    labels = task_labels(studies.labels, run.config.task)
    ds = from_arrays({"anterior": studies.anterior, "posterior": studies.posterior}, labels, run.pipeline(),
                     training=False)
    probabilities = np.asarray(run.model.predict(ds, verbose=0), np.float64)
    return studies, labels, probabilities


def binary_figures(threshold: float):
    """The bootstrap statistic for binary tasks: threshold figures plus both curve areas."""
    def statistic(y, probabilities):
        figures = metrics_lib.binary_metrics(y, probabilities[:, 1], threshold)
        return {k: figures[k] for k in ("accuracy", "precision", "recall", "specificity", "f1", "auc")} | {
            "pr_auc": metrics_lib.pr_auc(y, probabilities[:, 1])}
    return statistic


def multiclass_figures(y, probabilities):
    figures = metrics_lib.per_class_metrics(y, probabilities, range(probabilities.shape[1]))
    return {"accuracy": float(np.mean(probabilities.argmax(1) == y)),
            **{f"macro_{k}": v for k, v in figures["macro"].items()},
            **{f"micro_{k}": v for k, v in figures["micro"].items()}}


def choose_threshold(y, p_positive, target_sensitivity: float | None) -> tuple[str, float]:
    if len(np.unique(y)) < 2:
        raise ConfigError("the operating point needs both classes in the split it is chosen on")
    if target_sensitivity is not None:
        return f"sensitivity >= {target_sensitivity:g}", metrics_lib.sensitivity_threshold(y, p_positive,
                                                                                             target_sensitivity)
    return "Youden J", metrics_lib.youden_threshold(y, p_positive)


def with_ci(figures: dict, intervals: dict) -> dict:
    return {k: {"value": v, "ci95": list(intervals[k])} for k, v in figures.items()}


def evaluate(path, split: str = "test", target_sensitivity: float | None = None, n_bootstrap: int = 1000,
             data_options: dict | None = None, seed: int = 0, log=print) -> tuple[dict, np.ndarray, np.ndarray]:
    """All figures for `split` as a JSON-ready dict, plus the labels and probabilities behind them."""
    if target_sensitivity is not None and not 0 < target_sensitivity <= 1:
        raise ConfigError(f"target sensitivity must be in (0, 1], got {target_sensitivity}")
    run = load_run(path, data_options)
    studies, y, probabilities = predict_split(run, split, log=log)
    groups = studies.patient_hash
    results = {"split": split, "task": run.config.task, "classes": list(run.classes), "model": run.model.name,
               "data": run.config.data,
               "n_studies": int(len(y)), "n_patients": int(len(np.unique(groups))),
               "class_counts": np.bincount(y, minlength=len(run.classes)).tolist(),
               "bootstrap": {"resamples": n_bootstrap, "unit": "patient", "level": 0.95},
               "calibration": metrics_lib.calibration(y, probabilities)}
    if run.config.task == "binary" or probabilities.shape[1] == 2:
        p = probabilities[:, 1]
        if split != "validation":
            _, y_val, prob_val = predict_split(run, "validation", log=log)
            chosen_on = "validation"
        else:
            y_val, prob_val, chosen_on = y, probabilities, "validation (the evaluated split itself)"
        method, threshold = choose_threshold(y_val, prob_val[:, 1], target_sensitivity)
        points = {}
        for name, t in (("default", 0.5), ("operating_point", threshold)):
            statistic = binary_figures(t)
            intervals = metrics_lib.bootstrap_ci(statistic, y, probabilities, groups, n_bootstrap, seed=seed)
            y_pred = (p >= t).astype(int)
            points[name] = {"threshold": float(t), "figures": with_ci(statistic(y, probabilities), intervals),
                            "confusion_matrix": np.bincount(2 * y + y_pred, minlength=4).reshape(2, 2).tolist()}
        points["operating_point"].update(method=method, chosen_on=chosen_on)
        results["thresholds"] = points
        summary = {k: v["value"] for k, v in points["default"]["figures"].items()}
    else:
        figures = metrics_lib.per_class_metrics(y, probabilities, run.classes)
        intervals = metrics_lib.bootstrap_ci(multiclass_figures, y, probabilities, groups, n_bootstrap, seed=seed)
        results.update(figures)
        results["averages"] = with_ci(multiclass_figures(y, probabilities), intervals)
        results["confusion_matrix"] = np.bincount(len(run.classes) * y + probabilities.argmax(1),
                                                  minlength=len(run.classes) ** 2).reshape(
                                                      len(run.classes), -1).tolist()
        summary = {"accuracy": results["averages"]["accuracy"]["value"],
                   **{k: figures["macro"][k] for k in ("precision", "recall", "specificity", "f1", "auc",
                                                        "pr_auc")}}
    results["summary"] = {**summary, "ece": results["calibration"]["ece"], "brier": results["calibration"]["brier"]}
    return results, y, probabilities


def run_evaluation(path, split: str = "test", output_dir=None, log=print, **options) -> Path:
    """Evaluate and write metrics.json, report.md and the figures; returns the output directory."""
    from tfbonemet import report

    results, y, probabilities = evaluate(path, split, log=log, **options)
    path = Path(path)
    out = Path(output_dir) if output_dir else (path if path.is_dir() else path.parent) / f"eval-{split}"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output directory {out}: {exc.strerror}") from None
    report.write_report(out, results, y, probabilities, source=path.name)
    s = results["summary"]
    log(f"{split}: " + ", ".join(f"{k} {s[k]:.3f}" for k in ("accuracy", "recall", "specificity", "f1", "auc",
                                                              "pr_auc", "ece")))
    log(f"Report: {out / 'report.md'}")
    return out
