"""Phantom studies survive a round trip through real DICOM files, described as the NM IOD asks."""
import csv
import json

import numpy as np
import pydicom
import pytest

from tfbonemet.io.dicom import VIEW_CODE_VALUES
from tfbonemet.data.phantom import BoneScanPhantom
from tfbonemet.data.phantom_dicom import NM_IMAGE_STORAGE, study_uid, write_dataset, write_study


@pytest.fixture(scope="module")
def studies():
    return BoneScanPhantom(shape=(128, 32), seed=3, class_probs=(0.5, 0.5, 0, 0)).studies(4)


def _views(ds):
    return [VIEW_CODE_VALUES[item.ViewCodeSequence[0].CodeValue] for item in ds.DetectorInformationSequence]


def test_two_frame_file_round_trip(studies, tmp_path):
    study = studies[0]
    (path,) = write_study(study, tmp_path)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == NM_IMAGE_STORAGE and ds.Modality == "NM"
    assert int(ds.NumberOfFrames) == 2 and list(ds.DetectorVector) == [1, 2]
    frames = ds.pixel_array
    assert frames.dtype == np.uint16 and frames.shape == (2, 128, 32)
    assert _views(ds) == ["anterior", "posterior"]
    assert {item.ViewCodeSequence[0].CodingSchemeDesignator for item in ds.DetectorInformationSequence} == {"SCT"}
    np.testing.assert_array_equal(frames[0], study.anterior)
    np.testing.assert_array_equal(frames[1], study.posterior)
    assert int(ds.CountsAccumulated) == int(study.anterior.sum()) + int(study.posterior.sum())


def test_split_view_files_share_study_and_series(studies, tmp_path):
    study = studies[1]
    paths = write_study(study, tmp_path, split_views=True)
    assert len(paths) == 2
    a, p = (pydicom.dcmread(path) for path in paths)
    assert a.StudyInstanceUID == p.StudyInstanceUID == study_uid(study)
    assert a.SeriesInstanceUID == p.SeriesInstanceUID and a.SOPInstanceUID != p.SOPInstanceUID
    assert _views(a) == ["anterior"] and _views(p) == ["posterior"]
    np.testing.assert_array_equal(p.pixel_array, study.posterior)


def test_tc99m_mdp_whole_body_sweep(studies, tmp_path):
    (path,) = write_study(studies[0], tmp_path)
    ds = pydicom.dcmread(path)
    window = ds.EnergyWindowInformationSequence[0].EnergyWindowRangeSequence[0]
    assert (float(window.EnergyWindowLowerLimit), float(window.EnergyWindowUpperLimit)) == (126, 154)
    rad = ds.RadiopharmaceuticalInformationSequence[0]
    assert rad.RadionuclideCodeSequence[0].CodeValue == "72454006"  # SCT ^99m^Technetium
    assert rad.RadiopharmaceuticalCodeSequence[0].CodeValue == "96390006"  # SCT Tc-99m medronate
    length_mm = 128 * float(ds.PixelSpacing[0])
    assert int(ds.ScanLength) == round(length_mm)
    assert int(ds.ActualFrameDuration) == round(1000 * length_mm / float(ds.ScanVelocity))
    assert 0 < float(ds.WindowCenter) < float(ds.WindowWidth)


def test_uids_are_deterministic_and_distinct(studies, tmp_path):
    first, = write_study(studies[0], tmp_path / "a")
    again, = write_study(studies[0], tmp_path / "b")
    other, = write_study(studies[1], tmp_path / "c")
    a, b, c = (pydicom.dcmread(p) for p in (first, again, other))
    assert (a.StudyInstanceUID, a.SeriesInstanceUID, a.SOPInstanceUID) == (
        b.StudyInstanceUID, b.SeriesInstanceUID, b.SOPInstanceUID)
    assert a.StudyInstanceUID != c.StudyInstanceUID and a.SOPInstanceUID != c.SOPInstanceUID


def test_dataset_labels_and_lesions(studies, tmp_path):
    write_dataset(studies, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "labels.csv")))
    assert [row["label"] for row in rows] == [s.class_name for s in studies]
    assert [row["study_instance_uid"] for row in rows] == [study_uid(s) for s in studies]
    lesions = json.loads((tmp_path / "lesions.json").read_text())
    assert sum(len(v) for v in lesions.values()) == sum(len(s.lesions) for s in studies)
    assert not list(tmp_path.glob("*.part"))


def test_identifiers_are_visibly_synthetic(studies, tmp_path):
    (path,) = write_study(studies[2], tmp_path)
    ds = pydicom.dcmread(path)
    assert "PHANTOM" in str(ds.PatientName) and ds.PatientID.startswith("FAKE-")
