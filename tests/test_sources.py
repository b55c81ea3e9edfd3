"""Manual-dir layouts (DICOM + labels.csv, BS-80K, manifest.csv): records, pixels, and bad label files."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tfbonemet.data import sources
from tfbonemet.data.phantom import BoneScanPhantom
from tfbonemet.data.phantom_dicom import write_dataset
from tfbonemet.errors import DataError
from tfbonemet.io.discovery import read_view

DUMMY = Path(__file__).parents[1] / "tfds_builders" / "bone_scintigraphy" / "dummy_data"


@pytest.fixture(scope="module")
def studies():
    phantom = BoneScanPhantom(shape=(64, 16), seed=4)
    return [phantom.study(i, label=label, patient=i // 2) for i, label in enumerate([1, 1, 0, 2, 3, 0])]


@pytest.fixture
def dicom_dir(tmp_path, studies):
    return write_dataset(studies, tmp_path / "dicom")


@pytest.fixture
def copy_of(tmp_path, monkeypatch):
    """A copy of a dummy layout to change; a changed copy is no longer what its phantom mark lists, so a
    site secret is set (a test of the secret itself removes it)."""
    monkeypatch.setenv("TFBONEMET_SECRET", "test-site-secret")

    def copy(layout: str) -> Path:
        return Path(shutil.copytree(DUMMY / layout, tmp_path / layout))
    return copy


@pytest.mark.parametrize("layout", ["dicom", "bs80k", "manifest"])
def test_detect_layout(layout):
    assert sources.detect_layout(DUMMY / layout) == layout


def test_empty_directory(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path}: is empty: expected labels.csv"):
        sources.read_source(tmp_path)


def test_unrecognised_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="has no recognised layout"):
        sources.read_source(tmp_path)


def test_dicom_layout_records_and_pixels(dicom_dir, studies):
    records = sources.read_source(dicom_dir, secret="s")
    assert len(records) == len(studies)
    by_label = sorted(r.label for r in records)
    assert by_label == sorted(s.class_name for s in studies)
    assert len({r.patient_hash for r in records}) == 3  # two studies per patient
    truth = {s.anterior.tobytes(): s for s in studies}
    for record in records:
        views = record.load()
        study = truth[views["anterior"].tobytes()]
        np.testing.assert_array_equal(views["posterior"], study.posterior)
        assert record.label == study.class_name
        assert len(views["lesion_boxes"]) == len(study.lesions)
        for box in views["lesion_boxes"]:
            assert box["kind"] in sources.LESION_KINDS
            assert np.all((box["anterior"] >= 0) & (box["anterior"] <= 1))
            assert box["anterior"][0] <= box["anterior"][2] and box["anterior"][1] <= box["anterior"][3]


def test_dicom_layout_labelled_by_study_uid_only(dicom_dir, studies):
    labels = dicom_dir / "labels.csv"
    lines = labels.read_text().splitlines()
    labels.write_text("\n".join(",".join(line.split(",")[1:]) for line in lines) + "\n")  # drop `file`
    assert len(sources.read_source(dicom_dir)) == len(studies)


def test_labels_naming_a_missing_image(dicom_dir):
    labels = dicom_dir / "labels.csv"
    labels.write_text(labels.read_text().replace("PHANTOM-0004-000002.dcm", "missing.dcm"))
    with pytest.raises(DataError, match=r"labels\.csv:4: names 'missing\.dcm', which is not a file"):
        sources.read_source(dicom_dir)


def test_unknown_label(dicom_dir):
    labels = dicom_dir / "labels.csv"
    lines = labels.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ",cancer"
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"labels\.csv:2: unknown label 'cancer'; expected one of normal"):
        sources.read_source(dicom_dir)


def test_label_file_without_needed_columns(dicom_dir):
    (dicom_dir / "labels.csv").write_text("name,diagnosis\nx.dcm,normal\n")
    with pytest.raises(DataError, match=r"labels\.csv: missing column\(s\) label, file or study_instance_uid"):
        sources.read_source(dicom_dir)


def test_skip_bad_label_lines(dicom_dir, studies):
    labels = dicom_dir / "labels.csv"
    labels.write_text(labels.read_text().replace("PHANTOM-0004-000002.dcm", "missing.dcm"))
    problems = []
    records = sources.read_source(dicom_dir, on_bad=problems.append)
    assert len(records) == len(studies) - 1
    assert len(problems) == 1 and "missing.dcm" in str(problems[0])


def test_bs80k_positive_if_either_view_is(copy_of):
    root = copy_of("bs80k")
    ant, post = root / "chestRANT" / "chestRANT.txt", root / "chestRPOST" / "chestRPOST.txt"
    ant.write_text("0000.jpg 0\n0001.jpg 1\n0002.jpg 0\n")
    post.write_text("0000.jpg 1\n0001.jpg 0\n0002.jpg 0\n")
    records = sources.read_source(root)
    assert [r.label for r in records] == ["metastasis", "metastasis", "no_metastasis"]
    views = records[0].load()
    assert views["anterior"].dtype == np.uint16 and views["anterior"].shape == (16, 8)
    assert views["anterior"].max() <= 255  # 8-bit JPEG values kept, not stretched


def test_bs80k_file_in_one_view_only(copy_of):
    root = copy_of("bs80k")
    post = root / "chestRPOST" / "chestRPOST.txt"
    post.write_text("\n".join(post.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(DataError, match=r"chestRANT/0009\.jpg: has no matching file listed in .*chestRPOST"):
        sources.read_source(root)


def test_bs80k_bad_label_line(copy_of):
    root = copy_of("bs80k")
    (root / "chestRANT" / "chestRANT.txt").write_text("0000.jpg 2\n")
    with pytest.raises(DataError, match=r"chestRANT\.txt:1: expected 'filename label' with label 0 or 1"):
        sources.read_source(root)


def test_bs80k_missing_label_list(copy_of):
    root = copy_of("bs80k")
    (root / "chestRPOST" / "chestRPOST.txt").unlink()
    with pytest.raises(DataError, match=r"chestRPOST: missing its label list chestRPOST\.txt"):
        sources.read_source(root)


def test_manifest_reads_png_and_two_frame_dicom(copy_of):
    records = sources.read_source(copy_of("manifest"))
    assert len(records) == 10
    shapes = {record.load()["anterior"].shape for record in records}
    assert shapes == {(32, 8), (64, 16)}


def test_manifest_mismatched_view_sizes(copy_of):
    root = copy_of("manifest")
    Image.fromarray(np.ones((10, 8), np.uint16)).save(root / "images" / "s0_pos.png")
    record = sources.read_source(root)[0]
    with pytest.raises(DataError, match=r"manifest\.csv:2: anterior \(32, 8\) and posterior \(10, 8\) views differ"):
        record.load()


def test_manifest_needs_patient_ids(copy_of):
    root = copy_of("manifest")
    manifest = root / "manifest.csv"
    manifest.write_text(manifest.read_text().replace(",P0\n", ",\n", 1))
    with pytest.raises(DataError, match=r"manifest\.csv:2: empty patient_id"):
        sources.read_source(root)


def test_one_image_reader_keeps_16_bit_greys_equal_channels_and_refuses_colour(tmp_path):
    Image.fromarray(np.full((32, 24), 40000, np.uint16)).save(tmp_path / "deep.png")
    grey = np.tile(np.arange(24, dtype=np.uint8) * 10, (32, 1))
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "grey-rgb.png")
    Image.fromarray(np.full((32, 24, 3), (255, 0, 0), np.uint8)).save(tmp_path / "red.png")
    assert read_view(tmp_path / "deep.png").max() == 40000
    np.testing.assert_array_equal(read_view(tmp_path / "grey-rgb.png"), grey)
    with pytest.raises(DataError, match=r"red\.png: is a colour image"):
        read_view(tmp_path / "red.png")


def test_read_image_not_an_image(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"x\.png: not a readable image"):
        read_view(tmp_path / "x.png")


def test_malformed_lesion_file(dicom_dir):
    (dicom_dir / "lesions.json").write_text('{"1.2.3": [{"kind": "metastasis"}]}')
    with pytest.raises(DataError, match=r"lesions\.json: not a lesion list .*KeyError"):
        sources.read_source(dicom_dir)
    (dicom_dir / "lesions.json").write_text('{"1.2.3": [{"kind": "fracture", "box_anterior": [0, 0, 1, 1], '
                                            '"box_posterior": [0, 0, 1, 1]}]}')
    with pytest.raises(DataError, match=r"lesions\.json: unknown lesion kind\(s\) fracture"):
        sources.read_source(dicom_dir)


def test_read_view_decodes_real_compressed_nm_dicom():
    from pydicom.data import get_testdata_file

    image = read_view(Path(get_testdata_file("JPEG2000.dcm")))
    assert image.dtype == np.uint16 and image.shape == (1024, 256) and image.min() == 0


def test_report_filed_in_a_study_stops_or_is_skipped(dicom_dir):
    import pydicom

    first = sorted(dicom_dir.glob("*.dcm"))[0]
    report = pydicom.dcmread(first)
    for keyword in ("PixelData", "Rows", "Columns"):
        delattr(report, keyword)
    report.SOPClassUID = report.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    report.SOPInstanceUID = report.file_meta.MediaStorageSOPInstanceUID = report.SOPInstanceUID + ".9"
    report.Modality = "SR"
    report.save_as(dicom_dir / "report.dcm")
    with pytest.raises(DataError, match=r"report\.dcm: is not an image .*modality SR"):
        for record in sources.read_source(dicom_dir):
            record.load()
    problems = []
    lenient = sources.read_source(dicom_dir, on_bad=problems.append)
    assert all(record.load()["anterior"].shape == (64, 16) for record in lenient)
    assert [str(p) for p in problems] == [f"{dicom_dir / 'report.dcm'}: is not an image (SOP class "
                                          f"1.2.840.10008.5.1.4.1.1.88.11, modality SR)"]


def test_pseudonyms_are_keyed_hashes_and_a_missing_secret_is_loud(monkeypatch, capsys):
    import hashlib
    import hmac

    from tfbonemet.io import pseudonym

    assert pseudonym.keyed_hash("MRN-1", "site") == hmac.new(b"site", b"MRN-1", hashlib.sha256).hexdigest()[:16]
    assert pseudonym.keyed_hash("MRN-1", "site") != pseudonym.keyed_hash("MRN-1", "other")
    for name in ("TFBONEMET_SECRET", "TFBONEMET_SECRET_FILE", "TFBONEMET_SALT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(pseudonym, "_warned", False)
    assert pseudonym.site_secret() == pseudonym.PUBLIC_SECRET
    assert "no site secret set" in capsys.readouterr().err
    monkeypatch.setenv("TFBONEMET_SALT", "old-name")  # the deprecated name still works
    assert pseudonym.site_secret() == "old-name"


def test_real_data_need_a_secret_phantom_data_do_not(copy_of, dicom_dir, monkeypatch):
    for name in ("TFBONEMET_SECRET", "TFBONEMET_SECRET_FILE", "TFBONEMET_SALT"):
        monkeypatch.delenv(name, raising=False)
    root = copy_of("manifest")
    (root / ".tfbonemet-phantom").unlink()  # as if real
    with pytest.raises(DataError, match="no site secret set"):
        sources.read_source(root)
    assert sources.read_source(root, allow_public_secret=True)
    assert sources.read_source(dicom_dir)  # phantom DICOM, known by its Manufacturer
    monkeypatch.setenv("TFBONEMET_SECRET", "site")
    assert sources.read_source(root)
