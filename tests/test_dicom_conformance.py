"""Every DICOM file the package writes passes dicom3tools' validators: `dciodvfy` reports no
`Error` line, and `dcentvfy` finds nothing in the results that disagrees with their source study."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest

from dicom_tools import assert_conformant, entity_errors, iod_errors
from tfbonemet.data.phantom import BoneScanPhantom
from tfbonemet.data.phantom_dicom import write_study
from tfbonemet.io import dicom_results

RESULT = dicom_results.ModelResult(classes=("no_metastasis", "metastasis"), probabilities=(0.25, 0.75),
                                   label="metastasis", threshold=0.4, model_name="two_view_net",
                                   model_version="tfbonemet 0.1.0 weights sha256:0123456789ab")


@pytest.fixture(scope="module")
def study():
    return BoneScanPhantom(shape=(128, 32), seed=5).study(0, label=1)


def _overlay(shape, seed=0):
    return (np.random.default_rng(seed).random((*shape, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("split_views", [False, True], ids=["two-frame", "split-views"])
def test_phantom_nm_files_pass_dciodvfy(study, tmp_path, split_views):
    paths = write_study(study, tmp_path, split_views=split_views)
    assert len(paths) == (2 if split_views else 1)
    assert_conformant(paths)


def test_validator_catches_a_broken_file(study, tmp_path):
    """The check can fail: a file without its energy window, and a result filed under another patient."""
    path, = write_study(study, tmp_path)
    ds = pydicom.dcmread(path)
    del ds.EnergyWindowInformationSequence
    ds.save_as(tmp_path / "broken.dcm")
    assert any("EnergyWindowInformationSequence" in line for line in iod_errors(tmp_path / "broken.dcm"))
    source = pydicom.dcmread(path)
    source.PatientID = "FAKE-SOMEONE-ELSE"
    report = dicom_results.structured_report([source], RESULT)
    dicom_results.save(report, tmp_path / "sr.dcm")
    assert any("PatientID" in line for line in entity_errors([path, tmp_path / "sr.dcm"]))


@pytest.mark.parametrize("split_views", [False, True], ids=["two-frame", "split-views"])
def test_report_and_overlays_join_the_source_study(study, tmp_path, split_views):
    paths = write_study(study, tmp_path / "source", split_views=split_views)
    sources = [pydicom.dcmread(p) for p in paths]
    by_view = dicom_results.view_sources(paths)
    assert {v: frame for v, (_, frame) in by_view.items()} == {"anterior": 1, "posterior": 1 if split_views else 2}
    results = [dicom_results.structured_report(sources, RESULT)]
    results += dicom_results.overlay_captures({v: _overlay(study.anterior.shape, i) for i, v in enumerate(by_view)},
                                              by_view, "gradcam P(metastasis)=0.75")
    written = [dicom_results.save(ds, tmp_path / f"result-{i}.dcm") for i, ds in enumerate(results)]
    assert_conformant([*paths, *written])
    for path in written:
        ds = pydicom.dcmread(path)
        assert (ds.StudyInstanceUID, ds.PatientID, ds.PatientName) == (
            sources[0].StudyInstanceUID, sources[0].PatientID, sources[0].PatientName)
        assert ds.SeriesInstanceUID != sources[0].SeriesInstanceUID
    sc = [pydicom.dcmread(p) for p in written[1:]]
    assert [list(ds.PatientOrientation) for ds in sc] == [["L", "F"], ["R", "F"]]
    assert {ds.SeriesInstanceUID for ds in sc} == {sc[0].SeriesInstanceUID}
    assert sc[1].SourceImageSequence[0].ReferencedSOPInstanceUID == sources[-1].SOPInstanceUID


def test_pseudonymous_results_carry_no_identifier(study, tmp_path):
    paths = write_study(study, tmp_path / "source")
    [source] = [pydicom.dcmread(p) for p in paths]
    results = [dicom_results.structured_report([source], RESULT, deidentify=True, secret="site-a"),
               *dicom_results.overlay_captures({"anterior": _overlay(study.anterior.shape)}, {"anterior": (source, 1)},
                                               deidentify=True, secret="site-a")]
    written = [dicom_results.save(ds, tmp_path / f"pseudo-{i}.dcm") for i, ds in enumerate(results)]
    assert_conformant(written)
    identifiers = [str(source.PatientName), source.PatientID, source.PatientBirthDate, source.StudyDate,
                   source.StudyInstanceUID, source.SeriesInstanceUID, source.SOPInstanceUID, source.StudyID]
    for path in written:
        raw = path.read_bytes()
        assert not [i for i in identifiers if i.encode() in raw], path.name
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES" and ds.PatientID.startswith("TFBM-")
    again = dicom_results.structured_report([source], RESULT, deidentify=True, secret="site-a")
    other_secret = dicom_results.structured_report([source], RESULT, deidentify=True, secret="site-b")
    assert again.StudyInstanceUID == results[0].StudyInstanceUID != other_secret.StudyInstanceUID


def test_multiclass_report_names_each_class(study, tmp_path):
    path, = write_study(study, tmp_path)
    result = dicom_results.ModelResult(("normal", "metastasis", "arthritis", "thyroid_carcinoma"),
                                       (0.1, 0.2, 0.6, 0.1), "arthritis", None, "dscint", "tfbonemet 0.1.0")
    written = dicom_results.save(dicom_results.structured_report([pydicom.dcmread(path)], result), tmp_path / "sr.dcm")
    assert_conformant([path, written])
    items = list(_walk(pydicom.dcmread(written).ContentSequence))
    present = [i.ConceptNameCodeSequence[0].CodeMeaning for i in items
               if i.ValueType == "CODE" and i.ConceptCodeSequence[0].CodeMeaning == "Present"]
    assert present == ["Arthritis"]
    assert not [i for i in items if i.ConceptNameCodeSequence[0].CodeMeaning == "Threshold Value"]


def test_report_content(study, tmp_path):
    path, = write_study(study, tmp_path)
    source = pydicom.dcmread(path)
    report = pydicom.dcmread(dicom_results.save(dicom_results.structured_report([source], RESULT), tmp_path / "sr.dcm"))
    items = list(_walk(report.ContentSequence))
    numbers = [(i.ConceptNameCodeSequence[0].CodeMeaning, float(i.MeasuredValueSequence[0].NumericValue))
               for i in items if i.ValueType == "NUM"]
    assert ("Threshold Value", 0.4) in numbers
    assert sorted(v for n, v in numbers if n == "Probability") == [0.25, 0.75]
    texts = {i.TextValue for i in items if i.ValueType == "TEXT"}
    assert {"two_view_net", RESULT.model_version} <= texts
    called = {(i.ConceptNameCodeSequence[0].CodeValue, i.ConceptCodeSequence[0].CodeMeaning)
              for i in items if i.ValueType == "CODE" and i.ConceptCodeSequence[0].CodeMeaning in ("Present", "Absent")}
    assert ("94222008", "Present") in called  # SNOMED CT bony metastasis
    images = [i for i in items if i.ValueType == "IMAGE"]
    assert {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in images} == {source.SOPInstanceUID}


def _walk(sequence):
    for item in sequence:
        yield item
        yield from _walk(item.get("ContentSequence", []))
