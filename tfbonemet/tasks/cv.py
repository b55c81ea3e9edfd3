"""`tfbonemet cv`: patient-level k-fold cross-validation, reported as per-fold and mean ± std figures.

Folds are drawn over patients (splits.assign_folds), so no patient's studies are both trained and
tested on. Fold k is the test fold; fold k+1 picks the best epoch (validation), the rest train,
so the test figures never steer training. Each fold is an ordinary run directory under the CV
directory; rerunning the same command continues an interrupted CV where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np

from tfbonemet import metrics as metrics_lib
from tfbonemet import train
from tfbonemet.config import FitConfig
from tfbonemet.data import datasets, synthetic
from tfbonemet.data.pipeline import PipelineConfig, task_labels
from tfbonemet.data.splits import assign_folds
from tfbonemet.errors import ConfigError

FIGURES = ("accuracy", "precision", "recall", "specificity", "f1", "auc")


def all_studies(config: FitConfig, log) -> synthetic.StudyArrays:
    parts = [datasets.load_split(config, split, log=log) for split in datasets.SPLITS]
    return synthetic.StudyArrays(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                                   ("anterior", "posterior", "labels", "patient_hash", "split")),
                                 [box for p in parts for box in p.lesion_boxes])


def subset(studies: synthetic.StudyArrays, keep: np.ndarray) -> synthetic.StudyArrays:
    return synthetic.StudyArrays(studies.anterior[keep], studies.posterior[keep], studies.labels[keep],
                                 studies.patient_hash[keep], studies.split[keep],
                                 [b for b, k in zip(studies.lesion_boxes, keep) if k])


def cross_validate(config: FitConfig, folds: int, log=print) -> Path:
    """Train `folds` runs and write cv.json (per fold and mean ± std test figures); returns the CV directory."""
    train.validate(config)
    if folds < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got {folds}")
    cv_dir = Path(config.output_dir) / (config.run_name or f"cv{folds}-{config.model}")
    cv_dir.mkdir(parents=True, exist_ok=True)
    studies = all_studies(config, log)
    binary = task_labels(studies.labels, "binary")
    fold_of = assign_folds(studies.patient_hash, binary, folds, seed=config.seed)
    if len(np.unique(fold_of)) < folds:
        raise ConfigError(f"{len(np.unique(studies.patient_hash))} patients cannot fill {folds} folds")
    results = []
    for k in range(folds):
        test, val = fold_of == k, fold_of == (k + 1) % folds
        log(f"Fold {k + 1}/{folds}: train {int((~test & ~val).sum())}, validation {int(val.sum())}, "
            f"test {int(test.sum())} studies")
        splits = datasets.from_studies(subset(studies, ~test & ~val)), datasets.from_studies(subset(studies, val))
        run_dir = cv_dir / f"fold-{k}"
        if not run_dir.exists():
            train.fit(dataclasses.replace(config, output_dir=str(cv_dir), run_name=run_dir.name), log, *splits)
        elif not (run_dir / "metrics.json").exists():
            train.resume(run_dir, log, *splits)
        results.append(test_figures(run_dir, subset(studies, test)))
        log(f"Fold {k + 1} test: " + ", ".join(f"{f} {results[-1][f]:.3f}" for f in FIGURES))
    summary = {"folds": folds, "task": config.task, "model": config.model, "per_fold": results,
               "mean": {f: float(np.nanmean([r[f] for r in results])) for f in FIGURES},
               "std": {f: float(np.nanstd([r[f] for r in results])) for f in FIGURES}}
    train.write_json(cv_dir / "cv.json", summary)
    log("Cross-validation (test folds): " + ", ".join(
        f"{f} {summary['mean'][f]:.3f} ± {summary['std'][f]:.3f}" for f in FIGURES))
    log(f"CV directory: {cv_dir}")
    return cv_dir


def test_figures(run_dir: Path, test: synthetic.StudyArrays) -> dict:
    """The fold's model on its held-out test fold."""
    config = train.resolved_config(run_dir)
    recipe = train.fit_recipe(config)
    model = keras.models.load_model(run_dir / recipe.model_file)
    pipeline = PipelineConfig.for_run(config, recipe.views)
    split = datasets.from_studies(test)
    probabilities = model.predict(split.batches(pipeline, training=False, task=config.task), verbose=0)
    return {"fold_dir": run_dir.name, **metrics_lib.classification_metrics(split.task_labels(config.task),
                                                                            probabilities)}
