"""DICOM reading: real compressed NM files, header-based view pairing, counts, and every bad input."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tfbonemet.io import dicom
from tfbonemet.data.phantom import BoneScanPhantom
from tfbonemet.data.phantom_dicom import write_dataset, write_study
from tfbonemet.errors import DataError


@pytest.fixture(scope="module")
def phantom_studies():
    return BoneScanPhantom(shape=(64, 16), seed=3).studies(3)


def _edit(path, change):
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)
    return path


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "JPGExtended.dcm"])
def test_real_whole_body_bone_scans_decode_to_uint16_counts(name):
    views = dicom.read_views(get_testdata_file(name))
    assert list(views) == ["image"]  # the header names no view
    image = views["image"]
    assert image.dtype == np.uint16 and image.shape == (1024, 256)
    assert 200 < image.max() < 300  # counts, not rescaled to 8 or 16 bits
    assert image.min() == 0  # JPEG2000.dcm decodes to int16 with -30: clipped


def test_undecodable_file_names_file_and_problem():
    path = get_testdata_file("JPEG-lossy.dcm")
    with pytest.raises(DataError, match=r"JPEG-lossy\.dcm: cannot decode pixel data \(JPEG Extended"):
        dicom.read_views(path)


@pytest.mark.parametrize("split_views", [False, True])
def test_two_view_studies_pair_by_header(tmp_path, phantom_studies, split_views):
    write_dataset(phantom_studies, tmp_path, split_views=split_views)
    studies = dicom.read_studies([tmp_path])
    assert len(studies) == len(phantom_studies)
    by_key = {s.study_key: s for s in studies}
    for truth in phantom_studies:
        study = by_key[dicom.study_key_for_uid(pydicom.dcmread(next(tmp_path.glob(truth.study_id + "*"))).StudyInstanceUID)]
        np.testing.assert_array_equal(study.anterior, truth.anterior)
        np.testing.assert_array_equal(study.posterior, truth.posterior)  # as acquired, not mirrored
        assert study.image is None and study.is_two_view
        assert len(study.source_files) == (2 if split_views else 1)


def test_frame_order_does_not_decide_the_view(tmp_path, phantom_studies):
    """Frames stored posterior-first, with the Detector Vector saying so, still read correctly."""
    truth = phantom_studies[0]
    path, = write_study(truth, tmp_path)
    def swap(ds):
        ds.PixelData = np.stack([truth.posterior, truth.anterior]).astype("<u2").tobytes()
        ds.DetectorVector = [2, 1]
    views = dicom.read_views(_edit(path, swap))
    np.testing.assert_array_equal(views["anterior"], truth.anterior)
    np.testing.assert_array_equal(views["posterior"], truth.posterior)


def test_view_from_series_description_and_snomed_code(tmp_path, phantom_studies):
    truth = phantom_studies[0]
    ant, post = write_study(truth, tmp_path, split_views=True)
    def by_description(ds):
        del ds.DetectorInformationSequence
        ds.SeriesDescription = "WB Ant"
    def by_snomed(ds):
        code = ds.DetectorInformationSequence[0].ViewCodeSequence[0]
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "399001007", "SCT", "Projection"
    assert list(dicom.read_views(_edit(ant, by_description))) == ["anterior"]
    assert list(dicom.read_views(_edit(post, by_snomed))) == ["posterior"]


def test_rescale_applied_and_negatives_clipped(tmp_path, phantom_studies):
    path, _ = write_study(phantom_studies[0], tmp_path, split_views=True)
    stored = np.arange(64 * 16, dtype=np.int16).reshape(64, 16) - 100
    def signed(ds):
        ds.PixelRepresentation = 1
        ds.PixelData = stored.astype("<i2").tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = 2, 10
    counts = dicom.read_views(_edit(path, signed))["anterior"]
    expected = np.clip(stored.astype(int) * 2 + 10, 0, None)
    assert counts.dtype == np.uint16
    np.testing.assert_array_equal(counts, expected)


def test_study_key_and_patient_hash_hide_identifiers(tmp_path, phantom_studies):
    write_dataset(phantom_studies[:1], tmp_path)
    ds = pydicom.dcmread(next(tmp_path.glob("*.dcm")))
    study, = dicom.read_studies([tmp_path], secret="site-a")
    other, = dicom.read_studies([tmp_path], secret="site-b")
    assert study.study_key not in (ds.StudyInstanceUID, str(ds.PatientID))
    assert study.study_key == dicom.study_key_for_uid(ds.StudyInstanceUID, "site-a") != other.study_key
    assert study.patient_hash != other.patient_hash


# ------------------------------------------------------------------ bad input

def test_corrupt_file(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    with pytest.raises(DataError, match=r"broken\.dcm: not a readable DICOM file"):
        dicom.read_studies([tmp_path])


def test_truncated_file(tmp_path, phantom_studies):
    path, = write_study(phantom_studies[0], tmp_path)
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(DataError, match=rf"{path.name}: cannot decode pixel data .*less than expected"):
        dicom.read_studies([path])


def test_missing_pixel_data(tmp_path, phantom_studies):
    path, _ = write_study(phantom_studies[0], tmp_path, split_views=True)
    _edit(path, lambda ds: delattr(ds, "PixelData"))
    with pytest.raises(DataError, match=rf"{path.name}: has no pixel data"):
        dicom.read_views(path)


def test_non_image_dicom(tmp_path, phantom_studies):
    path, _ = write_study(phantom_studies[0], tmp_path, split_views=True)
    def to_report(ds):
        for keyword in ("PixelData", "Rows", "Columns"):
            delattr(ds, keyword)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
        ds.Modality = "SR"
    _edit(path, to_report)
    with pytest.raises(DataError, match=rf"{path.name}: is not an image .*modality SR"):
        dicom.read_studies([path])


def test_mismatched_view_sizes(tmp_path, phantom_studies):
    ant, post = write_study(phantom_studies[0], tmp_path, split_views=True)
    def shrink(ds):
        ds.Rows = 32
        ds.PixelData = phantom_studies[0].posterior[:32].astype("<u2").tobytes()
    _edit(post, shrink)
    with pytest.raises(DataError, match=r"anterior \(64, 16\) and posterior \(32, 16\) views of one study differ"):
        dicom.read_studies([tmp_path])


def test_multiframe_without_view_information(tmp_path, phantom_studies):
    path, = write_study(phantom_studies[0], tmp_path)
    _edit(path, lambda ds: delattr(ds, "DetectorVector"))
    with pytest.raises(DataError, match=rf"{path.name}: 2 frames but no Detector Vector"):
        dicom.read_views(path)


def test_duplicate_view_in_one_study(tmp_path, phantom_studies):
    first, _ = write_study(phantom_studies[0], tmp_path, split_views=True)
    copy = tmp_path / "copy.dcm"
    copy.write_bytes(first.read_bytes())
    with pytest.raises(DataError, match=r"second anterior view of its study"):
        dicom.read_studies([tmp_path])


def test_empty_directory(tmp_path):
    with pytest.raises(DataError, match=r"no DICOM files found"):
        dicom.read_studies([tmp_path])


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: no such file or folder"):
        dicom.read_studies([tmp_path / "nowhere"])


def test_skip_bad_keeps_good_studies_and_reports_the_rest(tmp_path, phantom_studies):
    write_dataset(phantom_studies, tmp_path)
    (tmp_path / "broken.dcm").write_bytes(b"not dicom at all")
    skipped = []
    studies = dicom.read_studies([tmp_path], skip_bad=True, on_skip=lambda p, why: skipped.append((p.name, why)))
    assert len(studies) == len(phantom_studies)
    assert skipped == [("broken.dcm", skipped[0][1])] and "not a readable DICOM file" in skipped[0][1]


@pytest.mark.parametrize("meaning, view", [("Anterior projection", "anterior"), ("POSTERIOR", "posterior"),
                                           ("antero-posterior", None), ("Anteroposterior", None),
                                           ("POSTERO-ANTERIOR", None)])
def test_view_code_meaning_must_name_one_view(tmp_path, phantom_studies, meaning, view):
    path, _ = write_study(phantom_studies[0], tmp_path, split_views=True)
    def recode(ds):
        ds.SeriesDescription = "WB"
        code = ds.DetectorInformationSequence[0].ViewCodeSequence[0]
        code.CodeValue, code.CodingSchemeDesignator = "V-LOCAL", "99LOCAL"  # only the meaning can tell
        code.CodeMeaning = meaning
    assert list(dicom.read_views(_edit(path, recode))) == [view or "image"]
