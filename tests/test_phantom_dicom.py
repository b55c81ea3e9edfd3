"""Phantom studies survive a round trip through real DICOM files."""
import csv
import json

import numpy as np
import pydicom
import pytest

from tfbonemet.data.phantom import BoneScanPhantom
from tfbonemet.data.phantom_dicom import NM_IMAGE_STORAGE, write_dataset, write_study


@pytest.fixture(scope="module")
def studies():
    return BoneScanPhantom(shape=(128, 32), seed=3, class_probs=(0.5, 0.5, 0, 0)).studies(4)


def test_two_frame_file_round_trip(studies, tmp_path):
    study = studies[0]
    (path,) = write_study(study, tmp_path)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == NM_IMAGE_STORAGE and ds.Modality == "NM"
    assert int(ds.NumberOfFrames) == 2
    frames = ds.pixel_array
    assert frames.dtype == np.uint16 and frames.shape == (2, 128, 32)
    views = [item.ViewCodeSequence[0].CodeMeaning for item in ds.DetectorInformationSequence]
    assert views == ["ANTERIOR", "POSTERIOR"]
    np.testing.assert_array_equal(frames[0], study.anterior)
    np.testing.assert_array_equal(frames[1], study.posterior)


def test_split_view_files_share_study_and_series(studies, tmp_path):
    study = studies[1]
    paths = write_study(study, tmp_path, split_views=True)
    assert len(paths) == 2
    a, p = (pydicom.dcmread(path) for path in paths)
    assert a.StudyInstanceUID == p.StudyInstanceUID and a.SeriesInstanceUID == p.SeriesInstanceUID
    assert a.SOPInstanceUID != p.SOPInstanceUID
    assert a.DetectorInformationSequence[0].ViewCodeSequence[0].CodeMeaning == "ANTERIOR"
    np.testing.assert_array_equal(p.pixel_array, study.posterior)


def test_dataset_labels_and_lesions(studies, tmp_path):
    write_dataset(studies, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "labels.csv")))
    assert [row["label"] for row in rows] == [s.class_name for s in studies]
    lesions = json.loads((tmp_path / "lesions.json").read_text())
    assert sum(len(v) for v in lesions.values()) == sum(len(s.lesions) for s in studies)
    assert not list(tmp_path.glob("*.part"))


def test_identifiers_are_visibly_synthetic(studies, tmp_path):
    (path,) = write_study(studies[2], tmp_path)
    ds = pydicom.dcmread(path)
    assert "PHANTOM" in str(ds.PatientName) and ds.PatientID.startswith("FAKE-")
