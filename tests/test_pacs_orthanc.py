"""The PACS round trip against a real Orthanc with its DICOMweb plugin: phantom studies go in over
Orthanc's REST API, the round trip fetches them over WADO-RS, predicts and stores the results over
STOW-RS, and the results come back out of Orthanc filed under the same patient and study, passing
dicom3tools' validators."""
from __future__ import annotations

import csv
import io

import pydicom
import pytest
from click.testing import CliRunner

from dicom_tools import assert_conformant
from orthanc_server import OrthancServer
from tfbonemet.cli import cli
from tfbonemet.data.phantom import BoneScanPhantom
from tfbonemet.data.phantom_dicom import study_uid, write_study
from tfbonemet.errors import DataError
from tfbonemet.io import dicomweb
from tfbonemet.io.pseudonym import study_key_for_uid
from tfbonemet.tasks.pacs import round_trip, run_pacs


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def uploaded(orthanc, tmp_path_factory):
    """Two metastatic phantom studies: one two-frame file, one file per view."""
    folder = tmp_path_factory.mktemp("phantom-dicom")
    studies = BoneScanPhantom(shape=(128, 32), seed=11).studies(2)
    files = {}
    for study, split in zip(studies, (False, True)):
        files[study_uid(study)] = write_study(study, folder / study.study_id, split_views=split)
        for path in files[study_uid(study)]:
            assert orthanc.upload(path)["Status"] == "Success"
    return files


def _study_files(orthanc, uid: str) -> list[pydicom.Dataset]:
    [orthanc_id] = [s["ID"] for s in orthanc.get("/studies?expand")
                    if s["MainDicomTags"]["StudyInstanceUID"] == uid] or [None]
    assert orthanc_id is not None, f"study {uid} not in Orthanc"
    instances = orthanc.get(f"/studies/{orthanc_id}/instances")
    return [pydicom.dcmread(io.BytesIO(orthanc.instance_file(i["ID"]))) for i in instances]


def test_qido_finds_the_uploaded_studies(orthanc, uploaded):
    found = dicomweb.search_studies(dicomweb.connect(orthanc.dicomweb))
    assert set(uploaded) <= set(found)


def test_round_trip_stores_report_and_overlays_in_the_source_study(orthanc, uploaded, tiny_run_dir, tmp_path):
    summaries = run_pacs(orthanc.dicomweb, tiny_run_dir, explain=True, log=lambda *_: None)  # QIDO: every NM study
    by_key = {summary["study"]: summary for summary in summaries}  # named by keyed pseudonym only
    assert sorted(by_key) == sorted(study_key_for_uid(uid) for uid in uploaded)
    for uid, paths in uploaded.items():
        summary = by_key[study_key_for_uid(uid)]
        assert summary["images_read"] == len(paths) and summary["stored"] == 3  # SR + one overlay per view
        assert uid not in str(summary)
        stored = _study_files(orthanc, uid)
        sources = [pydicom.dcmread(p) for p in paths]
        results = [ds for ds in stored if ds.Modality != "NM"]
        assert sorted(ds.Modality for ds in results) == ["OT", "OT", "SR"]
        assert {(ds.PatientID, str(ds.PatientName)) for ds in stored} == {
            (sources[0].PatientID, str(sources[0].PatientName))}
        written = []
        for n, ds in enumerate(results):
            written.append(tmp_path / f"{uid[-12:]}-{n}.dcm")
            ds.save_as(written[-1], enforce_file_format=True)
        assert_conformant([*paths, *written])


def test_deidentified_round_trip_makes_a_pseudonymous_study(orthanc, uploaded, tiny_run_dir):
    uid, paths = next(iter(uploaded.items()))
    source = pydicom.dcmread(paths[0])
    before = set(orthanc.get("/studies"))
    summary = round_trip(orthanc.dicomweb, uid, tiny_run_dir, deidentify=True, log=lambda *_: None)
    assert summary["stored"] == 1 and summary["stored_study"] == "pseudonymous"
    [new] = set(orthanc.get("/studies")) - before
    [report] = [pydicom.dcmread(io.BytesIO(orthanc.instance_file(i["ID"])))
                for i in orthanc.get(f"/studies/{new}/instances")]
    assert report.Modality == "SR" and report.PatientIdentityRemoved == "YES"
    assert report.PatientID != source.PatientID and report.StudyInstanceUID != uid
    assert str(source.PatientName) != str(report.PatientName) and report.PatientBirthDate == ""


def test_predict_command_over_dicomweb(orthanc, uploaded, tiny_run_dir, tmp_path):
    """`tfbonemet predict RUN --dicomweb URL --study UID`: one row per study, an SR stored back into each."""
    uids = sorted(uploaded)
    reports = {uid: sum(ds.Modality == "SR" for ds in _study_files(orthanc, uid)) for uid in uids}
    args = ["predict", str(tiny_run_dir), "--dicomweb", orthanc.dicomweb, "-o", str(tmp_path / "p.csv")]
    result = CliRunner().invoke(cli, args + [a for uid in uids for a in ("--study", uid)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "p.csv").read_text())))
    assert sorted(r["study"] for r in rows) == sorted(study_key_for_uid(uid) for uid in uids)
    assert all(uid not in result.output for uid in uids)
    for uid in uids:
        assert sum(ds.Modality == "SR" for ds in _study_files(orthanc, uid)) == reports[uid] + 1


def test_predict_command_needs_a_source(tiny_run_dir):
    result = CliRunner().invoke(cli, ["predict", str(tiny_run_dir)])
    assert result.exit_code == 2 and "give PATHS to predict on, or a PACS with --dicomweb URL" in result.output


def test_unknown_study_is_one_clear_error(orthanc, uploaded, tiny_run_dir):
    with pytest.raises(DataError, match="no NM images"):
        round_trip(orthanc.dicomweb, "1.2.3.4.5", tiny_run_dir, log=lambda *_: None)
    with pytest.raises(DataError, match=r"127\.0\.0\.1:1/dicom-web: series search failed"):
        round_trip("http://user:secret@127.0.0.1:1/dicom-web", "1.2.3", tiny_run_dir, log=lambda *_: None)
