"""Patient-level split assignment: no patient ever appears in two splits.

Published bone-scan work has augmented before splitting and so leaked near-copies of test images
into training; here splits are decided on patients first, and augmentation only ever touches the
training stream (tfbonemet.data.augment). Patients arrive as keyed pseudonyms (tfbonemet.io.pseudonym).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np


def _patients_by_stratum(patient_keys, labels):
    """Group patients by their study-level label (a patient's highest label, so positives stay together)."""
    patient_label = defaultdict(int)
    for key, label in zip(patient_keys, labels):
        patient_label[key] = max(patient_label[key], int(label))
    strata = defaultdict(list)
    for key in sorted(patient_label):
        strata[patient_label[key]].append(key)
    return strata


# what a data build keeps of the patients it is given, by split
BUILD_FRACTIONS = (("train", 0.7), ("validation", 0.15), ("test", 0.15))
# the same train : validation ratio without a test split (cross-validation splits its training folds so)
TRAIN_VALIDATION = (("train", 0.7 / 0.85), ("validation", 0.15 / 0.85))


def assign_splits(patient_keys, labels, fractions=BUILD_FRACTIONS, seed: int = 0) -> np.ndarray:
    """Split name for each study, stratified by label, deterministic for a seed.

    Each stratum's patients are shuffled and cut by the cumulative fractions, so every split gets
    its share of each class (up to rounding) and a patient's studies all land together.
    """
    names = [name for name, _ in fractions]
    weights = np.array([float(f) for _, f in fractions])
    if np.any(weights < 0) or not np.isclose(weights.sum(), 1.0):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {dict(fractions)}")
    if len(patient_keys) != len(labels):
        raise ValueError("patient_keys and labels must have the same length")
    rng = np.random.default_rng(seed)
    split_of_patient = {}
    for stratum, patients in sorted(_patients_by_stratum(patient_keys, labels).items()):
        order = [patients[i] for i in rng.permutation(len(patients))]
        cuts = np.round(np.cumsum(weights) * len(order)).astype(int)
        start = 0
        for name, stop in zip(names, cuts):
            for key in order[start:stop]:
                split_of_patient[key] = name
            start = stop
    return np.array([split_of_patient[key] for key in patient_keys])


def assign_folds(patient_keys, labels, folds: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..folds-1) per study for patient-level stratified k-fold cross-validation."""
    if folds < 2:
        raise ValueError(f"need at least 2 folds, got {folds}")
    rng = np.random.default_rng(seed)
    fold_of_patient = {}
    offset = 0
    for stratum, patients in sorted(_patients_by_stratum(patient_keys, labels).items()):
        order = [patients[i] for i in rng.permutation(len(patients))]
        for i, key in enumerate(order):
            fold_of_patient[key] = (i + offset) % folds
        offset += len(order)  # continue the round-robin so small strata don't pile onto fold 0
    return np.array([fold_of_patient[key] for key in patient_keys])
