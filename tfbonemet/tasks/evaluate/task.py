"""`tfbonemet evaluate`: a trained model's figures of merit on one split, with patient-level bootstrap CIs.

Figures are reported at 0.5 and at the run's stored operating threshold (chosen on the validation
split when the run was trained, the one predict and the SavedModel use), so the reported
sensitivity and specificity are not tuned on the very studies they describe. With a target
sensitivity, a new threshold is chosen on validation instead. The model runs in float32 (`Run.model`),
whatever precision trained it: the probabilities are the ones the exported model serves.
"""
from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import numpy as np

from tfbonemet import metrics as metrics_lib
from tfbonemet.data import datasets
from tfbonemet.data.pipeline import BatchConfig
from tfbonemet.errors import ConfigError
from tfbonemet.io.atomic import check_writable, make_dir, write_text
from tfbonemet.io.integrity import digest
from tfbonemet.progress import counter, counting
from tfbonemet.run import Run, decide
from tfbonemet.tasks.evaluate import coverage


@dataclasses.dataclass
class SplitPredictions:
    """A run's probabilities for one split, with the keys `predict` gives the same studies."""

    keys: np.ndarray
    patients: np.ndarray
    labels: np.ndarray  # task labels
    probabilities: np.ndarray
    uncertainty: np.ndarray  # the test-time-shift spread per study (tfbonemet.models.tta)

    def __len__(self) -> int:
        return len(self.labels)


def predict_split(run: Run, split: str, log=print) -> SplitPredictions:
    """The run's model on one split of its data, through the run's own preprocessor and tf.data path."""
    data = datasets.open_split(run.config, split)
    if len(data) == 0:
        raise ConfigError(f"split {split!r} of data {run.config.data!r} holds no studies")
    log(f"Predicting {len(data)} {split} studies ...")
    ds = data.batches(run.preprocessor, BatchConfig(batch_size=run.config.batch_size), training=False,
                      task=run.config.task)
    out = run.predictor.predict(ds, verbose=0)
    return SplitPredictions(data.keys, data.patients, data.task_labels(run.config.task),
                            np.asarray(out["probabilities"], np.float64), np.asarray(out["uncertainty"], np.float64))


def predictions_csv(run: Run, predictions: SplitPredictions) -> str:
    """One row per study: key (as `predict` writes it), true and predicted label (or refer), class
    probabilities and uncertainty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["study", "true_label", "label", *(f"p_{c}" for c in run.classes), "uncertainty"])
    for key, y, decided, p, u in zip(predictions.keys, predictions.labels, run.labels_of(predictions.probabilities),
                                     predictions.probabilities, predictions.uncertainty):
        writer.writerow([key, run.classes[y], run.label_names[decided], *(f"{v:.6f}" for v in p), f"{u:.6f}"])
    return buffer.getvalue()


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


def with_ci(figures: dict, intervals: dict) -> dict:
    return {k: {"value": v, "ci95": list(intervals[k])} for k, v in figures.items()}


def evaluate(path, split: str = "test", target_sensitivity: float | None = None, n_bootstrap: int = 1000,
             data_options: dict | None = None, seed: int = 0, log=print) -> tuple[dict, Run, SplitPredictions]:
    """All figures for `split` as a JSON-ready dict, plus the run and the predictions behind them."""
    if target_sensitivity is not None and not 0 < target_sensitivity <= 1:
        raise ConfigError(f"target sensitivity must be in (0, 1], got {target_sensitivity}")
    run = Run.load(path, data_options)
    predictions = predict_split(run, split, log=log)
    y, probabilities, groups = predictions.labels, predictions.probabilities, predictions.patients
    results = {"split": split, "task": run.config.task, "classes": list(run.classes), "model": run.model.name,
               "model_sha256": digest(run.model_path), "data": run.config.data,
               "n_studies": int(len(y)), "n_patients": int(len(np.unique(groups))),
               "class_counts": np.bincount(y, minlength=len(run.classes)).tolist(),
               "bootstrap": {"resamples": n_bootstrap, "unit": "patient", "level": 0.95},
               "calibration": metrics_lib.calibration(y, probabilities),
               "temperature_scaling": temperature_scaling(run, split, predictions, log),
               "uncertainty": coverage.uncertainty_summary(predictions.uncertainty,
                                                           decide(probabilities, run.threshold) != y)}
    if probabilities.shape[1] == 2:
        p = probabilities[:, 1]
        stored = run.metrics.get("operating_point", {})
        method, threshold = stored.get("rule", "default 0.5"), run.threshold
        chosen_on = stored.get("chosen_on", "none (no stored threshold)")
        if target_sensitivity is not None:
            val = predict_split(run, "validation", log=log) if split != "validation" else predictions
            threshold = metrics_lib.operating_threshold(val.labels, val.probabilities[:, 1], "sensitivity",
                                                        target_sensitivity)
            method, chosen_on = f"sensitivity >= {target_sensitivity:g}", "validation"
        points = {}
        with counter(f"Bootstrapping {n_bootstrap} patient resamples at 2 thresholds", 2 * n_bootstrap, log,
                     unit="resample") as advance:
            for name, t in (("default", 0.5), ("operating_point", threshold)):
                statistic = binary_figures(t)
                intervals = metrics_lib.bootstrap_ci(counting(statistic, advance), y, probabilities, groups,
                                                     n_bootstrap, seed=seed)
                y_pred = (p >= t).astype(int)
                points[name] = {"threshold": float(t), "figures": with_ci(statistic(y, probabilities), intervals),
                                "confusion_matrix": np.bincount(2 * y + y_pred, minlength=4).reshape(2, 2).tolist()}
        points["operating_point"].update(method=method, chosen_on=chosen_on)
        results["thresholds"] = points
        with counter(f"Bootstrapping {n_bootstrap} patient resamples of risk-coverage", n_bootstrap, log,
                     unit="resample") as advance:
            results["referral"] = coverage.coverage_results(y, p, predictions.uncertainty, groups, threshold,
                                                            run.band, n_bootstrap, seed, advance)
        summary = {k: v["value"] for k, v in points["default"]["figures"].items()}
    else:
        figures = metrics_lib.per_class_metrics(y, probabilities, run.classes)
        with counter(f"Bootstrapping {n_bootstrap} patient resamples", n_bootstrap, log, unit="resample") as advance:
            intervals = metrics_lib.bootstrap_ci(counting(multiclass_figures, advance), y, probabilities, groups,
                                                 n_bootstrap, seed=seed)
        results.update(figures)
        results["averages"] = with_ci(multiclass_figures(y, probabilities), intervals)
        results["confusion_matrix"] = np.bincount(len(run.classes) * y + probabilities.argmax(1),
                                                  minlength=len(run.classes) ** 2).reshape(
                                                      len(run.classes), -1).tolist()
        summary = {"accuracy": results["averages"]["accuracy"]["value"],
                   **{k: figures["macro"][k] for k in ("precision", "recall", "specificity", "f1", "auc",
                                                        "pr_auc")}}
    results["summary"] = {**summary, "ece": results["calibration"]["ece"], "brier": results["calibration"]["brier"],
                          "ece_scaled": results["temperature_scaling"]["calibration"]["ece"]}
    return results, run, predictions


def temperature_scaling(run: Run, split: str, predictions: SplitPredictions, log) -> dict:
    """Calibration after dividing the logits by the run's temperature, fitted on validation when the run
    finished (on validation now for a run that stored none)."""
    temperature = run.temperature
    if temperature is None:
        val = predict_split(run, "validation", log=log) if split != "validation" else predictions
        temperature = metrics_lib.fit_temperature(val.labels, val.probabilities)
    scaled = metrics_lib.with_temperature(predictions.probabilities, temperature)
    return {"temperature": float(temperature), "fitted_on": "validation",
            "calibration": metrics_lib.calibration(predictions.labels, scaled)}


def run_evaluation(path, split: str = "test", output_dir=None, log=print, **options) -> Path:
    """Evaluate and write metrics.json, predictions.csv, report.md and the figures; returns the output directory."""
    from tfbonemet.tasks.evaluate import report

    path = Path(path)
    out = check_writable(Path(output_dir) if output_dir else (path if path.is_dir() else path.parent) / f"eval-{split}")
    results, run, predictions = evaluate(path, split, log=log, **options)
    out = make_dir(out)
    write_text(out / "predictions.csv", predictions_csv(run, predictions))
    report.write_report(out, results, predictions.labels, predictions.probabilities, source=path.name,
                        groups=predictions.patients)
    s = results["summary"]
    log(f"{split}: " + ", ".join(f"{k} {s[k]:.3f}" for k in ("accuracy", "recall", "specificity", "f1", "auc",
                                                              "pr_auc", "ece")))
    if "thresholds" in results:
        point = results["thresholds"]["operating_point"]
        f = point["figures"]
        log(f"At the operating threshold {point['threshold']:.3f} ({point['method']}): "
            f"F1 {f['f1']['value']:.3f}, recall {f['recall']['value']:.3f}, specificity {f['specificity']['value']:.3f}")
    if "band" in results.get("referral", {}):
        f = results["referral"]["band"]["figures"]
        log(f"At the referral band: answers {f['coverage']['value']:.0%}; sensitivity "
            f"{f['sensitivity_answered']['value']:.3f} among answered vs {f['sensitivity_all']['value']:.3f} among "
            f"all, specificity {f['specificity_answered']['value']:.3f} vs {f['specificity_all']['value']:.3f}")
    t = results["temperature_scaling"]
    log(f"ECE {results['calibration']['ece']:.3f}, after temperature {t['temperature']:.2f} (fitted on validation) "
        f"{t['calibration']['ece']:.3f}")
    log(f"Report: {out / 'report.md'}")
    return out
