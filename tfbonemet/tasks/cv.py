"""`tfbonemet cv`: patient-level k-fold cross-validation, reported as per-fold and mean ± std figures.

Folds are drawn over patients (splits.assign_folds), so no patient's studies are both trained and
tested on. Fold k is the test fold; fold k+1 picks the best epoch (validation), the rest train,
so the test figures never steer training. Each fold is an ordinary run directory under the CV
directory, tested through its own Run (preprocessor included); rerunning the same command
continues an interrupted CV where it stopped.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from tfbonemet import metrics as metrics_lib
from tfbonemet.config import FitConfig
from tfbonemet.data import datasets
from tfbonemet.data.pipeline import BatchConfig
from tfbonemet.data.splits import assign_folds
from tfbonemet.errors import ConfigError
from tfbonemet.io.atomic import make_dir, write_json
from tfbonemet.run import Run
from tfbonemet.tasks.train import trainer
from tfbonemet.tasks.train.validation import validate
from tfbonemet.vocab import SPLITS

FIGURES = ("accuracy", "precision", "recall", "specificity", "f1", "auc")


def cross_validate(config: FitConfig, folds: int, log=print) -> Path:
    """Train `folds` runs and write cv.json (per fold and mean ± std test figures); returns the CV directory."""
    validate(config)
    if folds < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got {folds}")
    cv_dir = make_dir(Path(config.output_dir) / (config.run_name or f"cv{folds}-{config.model}"))
    studies = datasets.concatenate([datasets.open_split(config, split) for split in SPLITS])
    binary = studies.task_labels("binary") if config.task != "binary" else studies.task_labels(config.task)
    fold_of = assign_folds(studies.patients, binary, folds, seed=config.seed)
    if len(np.unique(fold_of)) < folds:
        raise ConfigError(f"{len(np.unique(studies.patients))} patients cannot fill {folds} folds")
    results = []
    for k in range(folds):
        test, val = fold_of == k, fold_of == (k + 1) % folds
        log(f"Fold {k + 1}/{folds}: train {int((~test & ~val).sum())}, validation {int(val.sum())}, "
            f"test {int(test.sum())} studies")
        splits = studies.subset(~test & ~val), studies.subset(val)
        run_dir = cv_dir / f"fold-{k}"
        if not run_dir.exists():
            trainer.fit(dataclasses.replace(config, output_dir=str(cv_dir), run_name=run_dir.name), log, *splits)
        elif not (run_dir / "metrics.json").exists():
            trainer.resume(run_dir, log, *splits)
        results.append(test_figures(run_dir, studies.subset(test)))
        log(f"Fold {k + 1} test: " + ", ".join(f"{f} {results[-1][f]:.3f}" for f in FIGURES))
    summary = {"folds": folds, "task": config.task, "model": config.model, "per_fold": results,
               "mean": {f: float(np.nanmean([r[f] for r in results])) for f in FIGURES},
               "std": {f: float(np.nanstd([r[f] for r in results])) for f in FIGURES}}
    write_json(cv_dir / "cv.json", summary)
    log("Cross-validation (test folds): " + ", ".join(
        f"{f} {summary['mean'][f]:.3f} ± {summary['std'][f]:.3f}" for f in FIGURES))
    log(f"CV directory: {cv_dir}")
    return cv_dir


def test_figures(run_dir: Path, test: datasets.Split) -> dict:
    """The fold's run on its held-out test fold, through the run's own preprocessor, at its stored threshold."""
    run = Run.load(run_dir)
    ds = test.batches(run.preprocessor, BatchConfig(batch_size=run.config.batch_size), training=False,
                      task=run.config.task)
    probabilities = run.model.predict(ds, verbose=0)
    labels = test.task_labels(run.config.task)
    figures = metrics_lib.classification_metrics(labels, probabilities)
    if run.threshold is not None:
        figures = {**metrics_lib.binary_metrics(labels, probabilities[:, 1], run.threshold), "auc": figures["auc"]}
    return {"fold_dir": run_dir.name, **figures}
