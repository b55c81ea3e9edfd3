"""`tfbonemet cv`: patient-level k-fold cross-validation, per fold and pooled out of fold.

Folds are drawn over patients (splits.assign_folds), so no patient's studies are both trained and
tested on. Fold k is the test fold; the other folds are split by patient the way a data build
splits what it is given (train / validation, stratified), so each model trains on as much as
`tfbonemet fit` would and the test fold never steers training. Each fold is an ordinary run
directory under the CV directory, tested through its own Run (preprocessor included); its test
predictions are pooled into `predictions.csv` (probability, uncertainty, the fold's threshold,
referral and temperature), and the pooled out-of-fold figures (ROC AUC, PR AUC, F1 at each fold's
stored threshold; with a referral band, the share answered and sensitivity and specificity among
the answered and all studies; ECE before and after each fold's temperature) get patient-bootstrap
95 % intervals. Rerunning the same command continues an interrupted cross-validation where it stopped.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from tfbonemet import metrics as metrics_lib
from tfbonemet import referral
from tfbonemet.config import FitConfig
from tfbonemet.data import datasets
from tfbonemet.data.pipeline import BatchConfig
from tfbonemet.data.splits import TRAIN_VALIDATION, assign_folds, assign_splits
from tfbonemet.errors import ConfigError
from tfbonemet.io.atomic import make_dir, write_json, write_text
from tfbonemet.run import Run, validate
from tfbonemet.tasks.train import trainer
from tfbonemet.tasks.train.run_dir import sweep_runs
from tfbonemet.vocab import SPLITS

FIGURES = ("accuracy", "precision", "recall", "specificity", "f1", "auc")
COLUMNS = ("study", "patient", "fold", "label", "probability", "uncertainty", "threshold", "refer", "temperature")
PREDICTIONS_CSV = "predictions.csv"


def cross_validate(config: FitConfig, folds: int, log=print) -> Path:
    """Train `folds` runs and write cv.json and the pooled predictions.csv; returns the CV directory."""
    validate(config)
    if folds < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got {folds}")
    studies = datasets.concatenate([datasets.open_split(config, split) for split in SPLITS])
    binary = studies.task_labels("binary")
    fold_of = assign_folds(studies.patients, binary, folds, seed=config.seed)
    if len(np.unique(fold_of)) < folds:
        raise ConfigError(f"{len(np.unique(studies.patients))} patients cannot fill {folds} folds")
    cv_dir = Path(config.output_dir) / (config.run_name or f"cv{folds}-{config.model}")
    sweep_runs(config.output_dir, log)
    created = not cv_dir.exists()
    try:
        return _cross_validate(config, folds, studies, binary, fold_of, make_dir(cv_dir), log)
    except BaseException:
        if created and cv_dir.is_dir() and not any(cv_dir.iterdir()):
            cv_dir.rmdir()  # refused or stopped before its first fold had trained an epoch
        raise


def _cross_validate(config: FitConfig, folds: int, studies, binary, fold_of, cv_dir: Path, log) -> Path:
    results, rows = [], []
    for k in range(folds):
        test = fold_of == k
        rest = np.flatnonzero(~test)
        split_of = assign_splits(studies.patients[rest], binary[rest], TRAIN_VALIDATION, seed=config.seed + k)
        train, val = np.zeros_like(test), np.zeros_like(test)
        train[rest[split_of == "train"]], val[rest[split_of == "validation"]] = True, True
        log(f"Fold {k + 1}/{folds}: train {int(train.sum())}, validation {int(val.sum())}, "
            f"test {int(test.sum())} studies")
        run_dir = cv_dir / f"fold-{k}"
        start = time.time()
        if not run_dir.exists():
            trainer.fit(dataclasses.replace(config, output_dir=str(cv_dir), run_name=run_dir.name), log,
                        studies.subset(train), studies.subset(val))
        elif not (run_dir / "metrics.json").exists():
            trainer.resume(run_dir, log, studies.subset(train), studies.subset(val))
        figures, fold_rows = test_fold(run_dir, studies.subset(test), k)
        results.append({**figures, "fit_seconds": round(time.time() - start, 1)})
        rows += fold_rows
        log(f"Fold {k + 1} test: " + ", ".join(f"{f} {figures[f]:.3f}" for f in FIGURES))
    summary = {"folds": folds, "task": config.task, "model": config.model, "per_fold": results,
               "mean": {f: float(np.nanmean([r[f] for r in results])) for f in FIGURES},
               "std": {f: float(np.nanstd([r[f] for r in results])) for f in FIGURES}}
    if config.task == "binary":
        summary["pooled"] = pooled_figures(rows)
    write_text(cv_dir / PREDICTIONS_CSV, predictions_csv(rows))
    write_json(cv_dir / "cv.json", summary)
    log("Cross-validation (test folds): " + ", ".join(
        f"{f} {summary['mean'][f]:.3f} ± {summary['std'][f]:.3f}" for f in FIGURES))
    if "pooled" in summary:
        log("Pooled out of fold: " + ", ".join(
            f"{f} {v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]" for f, v in summary["pooled"].items()))
    log(f"CV directory: {cv_dir}")
    return cv_dir


def test_fold(run_dir: Path, test: datasets.Split, fold: int) -> tuple[dict, list[dict]]:
    """The fold's run on its held-out test fold, through the run's own preprocessor, at its stored threshold;
    returns the figures and one row per study (pseudonymous keys only)."""
    run = Run.load(run_dir)
    ds = test.batches(run.preprocessor, BatchConfig(batch_size=run.config.batch_size), training=False,
                      task=run.config.task)
    start = time.time()
    out = run.predictor.predict(ds, verbose=0)
    seconds = time.time() - start
    start = time.time()
    run.model.predict(ds, verbose=0)  # timed alone: what the uncertainty's test-time shifts cost
    plain_seconds = time.time() - start
    probabilities = np.asarray(out["probabilities"], np.float64)
    labels = test.task_labels(run.config.task)
    figures = metrics_lib.classification_metrics(labels, probabilities)
    threshold = run.threshold
    if threshold is not None:
        figures = {**metrics_lib.binary_metrics(labels, probabilities[:, 1], threshold), "auc": figures["auc"]}
    refer = run.labels_of(probabilities) == len(run.classes)
    temperature = run.temperature or 1.0
    rows = [{"study": str(key), "patient": str(patient), "fold": fold, "label": int(label),
             "probability": float(p[-1]) if probabilities.shape[1] == 2 else float(p[label]),
             "uncertainty": float(u), "threshold": 0.5 if threshold is None else float(threshold),
             "refer": int(r), "temperature": float(temperature)}
            for key, patient, label, p, u, r in zip(test.keys, test.patients, labels, probabilities, out["uncertainty"],
                                                     refer)]
    return {"fold_dir": run_dir.name, **figures, "predict_seconds": round(seconds, 2),
            "predict_seconds_without_uncertainty": round(plain_seconds, 2)}, rows


def pooled_figures(rows: list[dict], n_resamples: int = 1000) -> dict:
    """ROC AUC, PR AUC and F1 (each study decided at its own fold's threshold), ECE before and after each
    fold's temperature and, when any study was referred, the share answered and sensitivity and
    specificity among the answered and all studies, over all folds' test studies, with
    patient-bootstrap 95 % intervals."""
    y = np.array([r["label"] for r in rows])
    scores = np.array([[r["probability"], r["threshold"], r.get("refer", 0), r.get("temperature", 1.0)]
                       for r in rows], np.float64)
    patients = np.array([r["patient"] for r in rows])
    with_referral = bool(scores[:, 2].any())

    def statistic(labels, s):
        decided = s[:, 0] >= s[:, 1]
        tp = float(np.sum(decided & (labels == 1)))
        f1 = 2 * tp / max(1.0, float(decided.sum() + (labels == 1).sum()))
        auc = roc_auc_score(labels, s[:, 0]) if len(np.unique(labels)) == 2 else float("nan")
        probabilities = np.stack([1 - s[:, 0], s[:, 0]], axis=1)
        scaled = metrics_lib.with_temperature(probabilities, s[:, 3:4])  # each study at its fold's temperature
        out = {"auc": float(auc), "pr_auc": metrics_lib.pr_auc(labels, s[:, 0]), "f1": f1,
               "ece": metrics_lib.calibration(labels, probabilities)["ece"],
               "ece_scaled": metrics_lib.calibration(labels, scaled)["ece"]}
        if with_referral:
            out.update(referral.split_figures(labels, decided, s[:, 2] == 0))
        return out
    values = statistic(y, scores)
    intervals = metrics_lib.bootstrap_ci(statistic, y, scores, patients, n_resamples=n_resamples)
    return {f: {"value": float(values[f]), "ci95": list(intervals[f])} for f in values}


def predictions_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
