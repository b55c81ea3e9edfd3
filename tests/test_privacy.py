"""No patient name, ID, birth date, study date or UID reaches a built dataset: only keyed hashes."""
from __future__ import annotations

import pydicom
import pytest
import tensorflow_datasets as tfds

from tfbonemet.data.phantom import BoneScanPhantom
from tfbonemet.data.phantom_dicom import FakeIdentity, write_dataset
from tfbonemet.io.pseudonym import keyed_hash
from tfds_builders.bone_scintigraphy.bone_scintigraphy_dataset_builder import Builder

IDENTITY = FakeIdentity(patient_name="QUIXOTE^ALONSO", patient_id="MRN-73519-QX",
                        birth_date="19471203", study_date="20230917")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    source = tmp_path_factory.mktemp("source")
    phantom = BoneScanPhantom(shape=(64, 16), seed=11)
    write_dataset([phantom.study(i, label=i % 2) for i in range(10)], source, identity=IDENTITY)
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = Builder(config="binary", data_dir=str(data_dir), secret="site-secret")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(source)))
    return source, data_dir, builder


def test_identifiers_appear_in_the_source(built):
    """The fake identifiers are really there to be leaked (so the next test means something)."""
    source, _, _ = built
    ds = pydicom.dcmread(next(source.glob("*.dcm")))
    assert (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.StudyDate) == (
        IDENTITY.patient_name, IDENTITY.patient_id, IDENTITY.birth_date, IDENTITY.study_date)
    assert IDENTITY.patient_id.encode() in (source / "labels.csv").read_bytes()


def test_no_identifier_in_any_built_file(built):
    source, data_dir, _ = built
    uids = {pydicom.dcmread(path).StudyInstanceUID for path in source.glob("*.dcm")}
    secrets = [IDENTITY.patient_name, "QUIXOTE", "ALONSO", IDENTITY.patient_id, IDENTITY.birth_date,
               IDENTITY.study_date, *uids]
    files = [path for path in data_dir.rglob("*") if path.is_file()]
    assert any(path.name.endswith(".tfrecord-00000-of-00001") for path in files)
    for path in files:
        content = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in content, f"{secret!r} found in {path}"


def test_records_carry_the_keyed_hash(built):
    _, _, builder = built
    hashes = {ex["patient_hash"].decode() for split in builder.info.splits
              for ex in tfds.as_numpy(builder.as_dataset(split=split))}
    assert hashes == {keyed_hash(IDENTITY.patient_id, "site-secret")}
