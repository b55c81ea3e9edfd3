"""Write phantom studies as real NM DICOM files, as a gamma camera's whole-body sweep exports them.

Two layouts: both views as two frames of one NM Image (one detector per view, the view named in
each Detector Information item's View Code Sequence), or one single-frame file per view sharing
the study and series. Identifiers are synthetic and say so.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

from tfbonemet.data.phantom import CLASS_NAMES, PhantomStudy

NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
UID_ROOT = "1.2.826.0.1.3680043.10.1137."  # synthetic-study UIDs, derived from the study id
VIEW_CODES = {  # code meaning is what readers match on; scheme is local to this package
    "anterior": ("TFBM-ANT", "ANTERIOR"),
    "posterior": ("TFBM-POST", "POSTERIOR"),
}
LABELS_CSV = "labels.csv"
LESIONS_JSON = "lesions.json"


@dataclasses.dataclass(frozen=True)
class FakeIdentity:
    """Identifiers written into the DICOM header; the defaults are visibly synthetic."""

    patient_name: str = "PHANTOM^SYNTHETIC"
    patient_id: str | None = None  # None: the phantom's FAKE-... patient id
    birth_date: str = "19000101"
    study_date: str = "20000101"


def _uid(*parts: str) -> str:
    digest = int(hashlib.sha256("/".join(parts).encode()).hexdigest()[:24], 16)
    return (UID_ROOT + str(digest))[:64]


def _base_dataset(study: PhantomStudy, identity: FakeIdentity, series_key: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = NM_IMAGE_STORAGE
    ds.Modality = "NM"
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id or study.patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = identity.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.StudyInstanceUID = _uid(study.study_id)
    ds.SeriesInstanceUID = _uid(study.study_id, series_key)
    ds.StudyID = study.study_id[-8:]
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "tfbonemet phantom"
    ds.StudyDescription = "SYNTHETIC WHOLE BODY BONE SCAN"
    ds.BodyPartExamined = "WHOLEBODY"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "WHOLE BODY", "EMISSION"]
    ds.PixelSpacing = [f"{study.pixel_spacing_mm:.4f}", f"{study.pixel_spacing_mm:.4f}"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = study.anterior.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = 1
    ds.RescaleIntercept = 0
    rad = Dataset()
    rad.Radiopharmaceutical = "Tc-99m MDP"
    rad.RadionuclideTotalDose = "740"
    ds.RadiopharmaceuticalInformationSequence = Sequence([rad])
    return ds


def _detector_item(view: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodeMeaning = VIEW_CODES[view]
    code.CodingSchemeDesignator = "99TFBM"
    item = Dataset()
    item.ViewCodeSequence = Sequence([code])
    return item


def _save(ds: Dataset, path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    tmp = path.with_name(path.name + ".part")
    ds.save_as(tmp, enforce_file_format=True)
    os.replace(tmp, path)


def write_study(study: PhantomStudy, out_dir: str | Path, split_views: bool = False,
                identity: FakeIdentity = FakeIdentity()) -> list[Path]:
    """Write one study; returns the file paths (one multi-frame file, or one per view)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not split_views:
        ds = _base_dataset(study, identity, "WB")
        ds.SOPInstanceUID = _uid(study.study_id, "WB", "1")
        ds.SeriesDescription = "WB ANT/POST"
        ds.SeriesNumber, ds.InstanceNumber = 1, 1
        ds.NumberOfFrames = 2
        ds.FrameIncrementPointer = pydicom.tag.Tag(0x0054, 0x0020)  # Detector Vector
        ds.DetectorVector = [1, 2]
        ds.NumberOfDetectors = 2
        ds.DetectorInformationSequence = Sequence([_detector_item("anterior"), _detector_item("posterior")])
        ds.PixelData = np.stack([study.anterior, study.posterior]).astype("<u2").tobytes()
        path = out_dir / f"{study.study_id}.dcm"
        _save(ds, path)
        return [path]
    paths = []
    for number, view in enumerate(("anterior", "posterior"), start=1):
        ds = _base_dataset(study, identity, "WB")
        ds.SOPInstanceUID = _uid(study.study_id, "WB", view)
        ds.SeriesDescription = "WB ANT/POST"
        ds.SeriesNumber, ds.InstanceNumber = 1, number
        ds.NumberOfDetectors = 1
        ds.DetectorInformationSequence = Sequence([_detector_item(view)])
        ds.PixelData = getattr(study, view).astype("<u2").tobytes()
        path = out_dir / f"{study.study_id}_{view[:4].upper()}.dcm"
        _save(ds, path)
        paths.append(path)
    return paths


def write_dataset(studies, out_dir: str | Path, split_views: bool = False,
                  identity: FakeIdentity = FakeIdentity()) -> Path:
    """Write studies as DICOM plus `labels.csv` (file, study UID, patient, label) and `lesions.json`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, lesions = [], {}
    for study in studies:
        paths = write_study(study, out_dir, split_views=split_views, identity=identity)
        uid = _uid(study.study_id)
        for path in paths:
            rows.append({"file": path.name, "study_instance_uid": uid,
                         "patient_id": identity.patient_id or study.patient_id,
                         "label": CLASS_NAMES[study.label]})
        lesions[uid] = [dataclasses.asdict(lesion) for lesion in study.lesions]
    tmp = out_dir / (LABELS_CSV + ".part")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "study_instance_uid", "patient_id", "label"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out_dir / LABELS_CSV)
    tmp = out_dir / (LESIONS_JSON + ".part")
    tmp.write_text(json.dumps(lesions, indent=1))
    os.replace(tmp, out_dir / LESIONS_JSON)
    return out_dir
