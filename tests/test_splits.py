"""Patient-level splits: deterministic, stratified, and never one patient in two splits or folds."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from tfbonemet.data.phantom import BoneScanPhantom
from tfbonemet.data.splits import assign_folds, assign_splits
from tfbonemet.io.pseudonym import keyed_hash


@pytest.fixture(scope="module")
def follow_up_studies():
    """80 studies of 40 phantom patients (1-3 scans each); a patient's scans share one body."""
    phantom = BoneScanPhantom(shape=(64, 16), seed=5)
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(40), rng.integers(1, 4, 40))[:80]
    studies = [phantom.study(i, patient=int(p)) for i, p in enumerate(patients)]
    keys = [keyed_hash(s.patient_id, "test") for s in studies]
    labels = [int(s.is_metastatic) for s in studies]
    return keys, labels, studies


def _patients_per_group(keys, groups):
    seen = defaultdict(set)
    for key, group in zip(keys, groups):
        seen[key].add(group)
    return seen


def test_studies_of_one_patient_share_a_body(follow_up_studies):
    keys, _, studies = follow_up_studies
    first, second = [s for s, k in zip(studies, keys) if k == keys[0]][:2]
    assert first.patient_id == second.patient_id and first.study_id != second.study_id


def test_no_patient_in_two_splits(follow_up_studies):
    keys, labels, _ = follow_up_studies
    assert len(set(keys)) < len(keys)  # several studies per patient
    splits = assign_splits(keys, labels, seed=3)
    assert all(len(groups) == 1 for groups in _patients_per_group(keys, splits).values())


def test_splits_are_deterministic_per_seed(follow_up_studies):
    keys, labels, _ = follow_up_studies
    np.testing.assert_array_equal(assign_splits(keys, labels, seed=1), assign_splits(keys, labels, seed=1))
    assert not np.array_equal(assign_splits(keys, labels, seed=1), assign_splits(keys, labels, seed=2))


def test_splits_are_stratified_by_patient_label(follow_up_studies):
    keys, labels, _ = follow_up_studies
    splits = assign_splits(keys, labels, seed=0)
    patient_label = defaultdict(int)
    for key, label in zip(keys, labels):
        patient_label[key] = max(patient_label[key], label)
    patient_split = {k: s for k, s in zip(keys, splits)}
    for stratum in (0, 1):
        members = [k for k, lab in patient_label.items() if lab == stratum]
        counts = {name: sum(patient_split[k] == name for k in members) for name in ("train", "validation", "test")}
        for name, fraction in (("train", 0.7), ("validation", 0.15), ("test", 0.15)):
            assert abs(counts[name] - fraction * len(members)) <= 1, (stratum, counts)


def test_custom_fractions_and_bad_fractions():
    keys = [f"p{i}" for i in range(10)]
    splits = assign_splits(keys, [0] * 10, fractions=(("train", 0.8), ("test", 0.2)))
    assert sorted(splits).count("test") == 2 and set(splits) == {"train", "test"}
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(keys, [0] * 10, fractions=(("train", 0.8), ("test", 0.1)))
    with pytest.raises(ValueError, match="same length"):
        assign_splits(keys, [0] * 9)


def test_folds_keep_patients_whole_and_balanced(follow_up_studies):
    keys, labels, _ = follow_up_studies
    folds = assign_folds(keys, labels, folds=5, seed=0)
    assert all(len(groups) == 1 for groups in _patients_per_group(keys, folds).values())
    np.testing.assert_array_equal(folds, assign_folds(keys, labels, folds=5, seed=0))
    patient_fold = {k: f for k, f in zip(keys, folds)}
    per_fold = np.bincount(list(patient_fold.values()), minlength=5)
    assert per_fold.max() - per_fold.min() <= 1  # round-robin over patients
    positive_patients = {k for k, lab in zip(keys, labels) if lab}
    positives = np.bincount([patient_fold[k] for k in positive_patients], minlength=5)
    assert positives.max() - positives.min() <= 1
    with pytest.raises(ValueError, match="at least 2 folds"):
        assign_folds(keys, labels, folds=1)


def test_keyed_hash_is_stable_and_secret_dependent():
    assert keyed_hash("FAKE-1", "a") == keyed_hash("FAKE-1", "a")
    assert keyed_hash("FAKE-1", "a") != keyed_hash("FAKE-1", "b")
    assert "FAKE" not in keyed_hash("FAKE-1", "a")
