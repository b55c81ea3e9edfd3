"""Write phantom studies as real NM DICOM files, as a gamma camera's whole-body sweep exports them.

Two layouts: both views as two frames of one NM Image (one detector per view, the view named in
each Detector Information item's View Code Sequence), or one single-frame file per view sharing
the study and series. The NM Image IOD is filled as the standard asks (energy window, isotope and
agent codes, sweep speed and length, collimator, orientation codes), so `dciodvfy` reports no
errors. Identifiers are synthetic and say so; UIDs derive from the study id, so a rewrite of the
same study gives the same UIDs.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, NuclearMedicineImageStorage, generate_uid

from tfbonemet.data.phantom import CLASS_NAMES, PhantomStudy
from tfbonemet.data.provenance import PHANTOM_MANUFACTURER
from tfbonemet.io.atomic import open_for_write, write_text
from tfbonemet.vocab import ANTERIOR, POSTERIOR, VIEWS

NM_IMAGE_STORAGE = NuclearMedicineImageStorage
VIEW_CODES = {ANTERIOR: codes.SCT.AnteriorProjection, POSTERIOR: codes.SCT.PosteriorProjection}
LABELS_CSV = "labels.csv"
LESIONS_JSON = "lesions.json"
ENERGY_WINDOW_KEV = (126.0, 154.0)  # Tc-99m photopeak, 140 keV +- 10 %
SCAN_VELOCITY_MM_S = 2.0  # 12 cm/min, a usual whole-body sweep
_ENERGY_WINDOW_VECTOR = pydicom.tag.Tag(0x0054, 0x0010)
_DETECTOR_VECTOR = pydicom.tag.Tag(0x0054, 0x0020)


@dataclasses.dataclass(frozen=True)
class FakeIdentity:
    """Identifiers written into the DICOM header; the defaults are visibly synthetic."""

    patient_name: str = "PHANTOM^SYNTHETIC"
    patient_id: str | None = None  # None: the phantom's FAKE-... patient id
    birth_date: str = "19000101"
    study_date: str = "20000101"


def study_uid(study: PhantomStudy) -> str:
    return generate_uid(entropy_srcs=["tfbonemet-phantom", study.study_id])


def _uid(study: PhantomStudy, *parts: str) -> str:
    return generate_uid(entropy_srcs=["tfbonemet-phantom", study.study_id, *parts])


def _code(code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


def _base_dataset(study: PhantomStudy, identity: FakeIdentity, views: tuple[str, ...]) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = NM_IMAGE_STORAGE
    ds.Modality = "NM"
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id or study.patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = identity.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.StudyInstanceUID = study_uid(study)
    ds.SeriesInstanceUID = _uid(study, "WB")
    ds.StudyID = study.study_id[-8:]
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = PHANTOM_MANUFACTURER
    ds.StudyDescription = "SYNTHETIC WHOLE BODY BONE SCAN"
    ds.SeriesDescription = "WB ANT/POST"
    ds.SeriesNumber = 1
    ds.BodyPartExamined = "WHOLEBODY"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "WHOLE BODY", "EMISSION"]
    rows, columns = study.anterior.shape
    spacing = study.pixel_spacing_mm
    ds.PixelSpacing = [f"{spacing:.6g}", f"{spacing:.6g}"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    counts = np.stack([getattr(study, view) for view in views])
    top = max(float(np.percentile(counts, 99.5)), 1.0)
    ds.WindowCenter, ds.WindowWidth = f"{top / 2:.6g}", f"{top:.6g}"
    # NM Image: a whole-body sweep at constant speed over the image length
    ds.CountsAccumulated = int(counts.sum(dtype=np.int64))
    ds.ScanVelocity = f"{SCAN_VELOCITY_MM_S:g}"
    ds.ScanLength = round(rows * spacing)
    ds.ActualFrameDuration = round(1000 * rows * spacing / SCAN_VELOCITY_MM_S)
    # NM Multi-frame: one frame per view, each in energy window 1, from its own detector
    ds.NumberOfFrames = len(views)
    ds.FrameIncrementPointer = [_ENERGY_WINDOW_VECTOR, _DETECTOR_VECTOR]
    ds.NumberOfEnergyWindows = 1
    ds.EnergyWindowVector = [1] * len(views)
    ds.NumberOfDetectors = len(views)
    ds.DetectorVector = list(range(1, len(views) + 1))
    ds.DetectorInformationSequence = Sequence([_detector_item(view, rows, columns, spacing) for view in views])
    # NM Isotope: Tc-99m MDP in the 140 keV photopeak window
    window_range = Dataset()
    window_range.EnergyWindowLowerLimit, window_range.EnergyWindowUpperLimit = (f"{v:g}" for v in ENERGY_WINDOW_KEV)
    window = Dataset()
    window.EnergyWindowRangeSequence = Sequence([window_range])
    window.EnergyWindowName = "Tc99m"
    ds.EnergyWindowInformationSequence = Sequence([window])
    rad = Dataset()
    rad.Radiopharmaceutical = "Tc-99m MDP"
    rad.RadiopharmaceuticalCodeSequence = Sequence([_code(codes.SCT.TechnetiumTc99mMedronate)])
    rad.RadionuclideCodeSequence = Sequence([_code(codes.SCT._99mTechnetium)])
    rad.RadionuclideTotalDose = "740"
    ds.RadiopharmaceuticalInformationSequence = Sequence([rad])
    # NM/PET Patient Orientation: supine, head first
    orientation = _code(codes.SCT.Recumbent)
    orientation.PatientOrientationModifierCodeSequence = Sequence([_code(codes.SCT.Supine)])
    ds.PatientOrientationCodeSequence = Sequence([orientation])
    ds.PatientGantryRelationshipCodeSequence = Sequence([_code(codes.SCT.Headfirst)])
    ds.PixelData = counts.astype("<u2").tobytes()
    return ds


def _detector_item(view: str, rows: int, columns: int, spacing: float) -> Dataset:
    """One detector per view. Anterior is seen from the front (the patient's right on the image left),
    posterior from behind (the patient's left on the image left), as acquired."""
    sign = 1 if view == ANTERIOR else -1  # LPS: +x towards the patient's left, +y posterior, +z head
    item = Dataset()
    item.CollimatorType = "PARA"
    item.CollimatorGridName = "LEHR"
    item.ImagePositionPatient = [f"{v:.6g}" for v in (-sign * (columns - 1) / 2 * spacing, -sign * 300.0, 0.0)]
    item.ImageOrientationPatient = [sign, 0, 0, 0, 0, -1]
    item.ViewCodeSequence = Sequence([_code(VIEW_CODES[view])])
    item.ViewCodeSequence[0].ViewModifierCodeSequence = Sequence()
    return item


def _save(ds: Dataset, path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    with open_for_write(path) as fh:
        ds.save_as(fh, enforce_file_format=True)


def write_study(study: PhantomStudy, out_dir: str | Path, split_views: bool = False,
                identity: FakeIdentity = FakeIdentity()) -> list[Path]:
    """Write one study; returns the file paths (one two-frame file, or one file per view)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layouts = [(f"{v[:4].upper()}", (v,)) for v in VIEWS] if split_views else [("", VIEWS)]
    paths = []
    for number, (suffix, views) in enumerate(layouts, start=1):
        ds = _base_dataset(study, identity, views)
        ds.SOPInstanceUID = _uid(study, "WB", *views)
        ds.InstanceNumber = number
        path = out_dir / f"{study.study_id}{'_' + suffix if suffix else ''}.dcm"
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
        uid = study_uid(study)
        for path in paths:
            rows.append({"file": path.name, "study_instance_uid": uid,
                         "patient_id": identity.patient_id or study.patient_id,
                         "label": CLASS_NAMES[study.label]})
        lesions[uid] = [dataclasses.asdict(lesion) for lesion in study.lesions]
    with open_for_write(out_dir / LABELS_CSV, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "study_instance_uid", "patient_id", "label"])
        writer.writeheader()
        writer.writerows(rows)
    write_text(out_dir / LESIONS_JSON, json.dumps(lesions, indent=1))
    return out_dir
