"""Model results as DICOM that a PACS files with the scan: a Structured Report and CAM overlays.

Both are written with highdicom. By default they join the source study: the patient and study
modules are copied from the source images, so `dcentvfy` finds nothing to disagree about and a
PACS shows them beside the scan. With `deidentify=True` they go into a new pseudonymous study
instead: names, dates and accession numbers are left empty, the patient ID and every UID are
keyed pseudonyms (under the site secret, `$TFBONEMET_SECRET`), so one source study always maps to the
same pseudonymous study and nothing links back to the patient without the secret.

The report follows TID 1500 (Imaging Measurement Report): one measurement group per class, with
the class probability, whether the model calls the class present (indeterminate for every class
when the study falls in the referral band and is labelled refer), the algorithm's name and
version, the operating threshold and the study's uncertainty (in the positive class's group) and
references to the images.
"""
from __future__ import annotations

import dataclasses
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tfbonemet.io.atomic import write_bytes
from tfbonemet.io.pseudonym import keyed_hash, site_secret, study_key_for_uid
from tfbonemet.vocab import ANTERIOR, IMAGE, POSITIVE_CLASS, POSTERIOR, REFER

MANUFACTURER = "tfbonemet"
SR_SERIES_NUMBER, OVERLAY_SERIES_NUMBER = 9100, 9101
PRIVATE_SCHEME = "99TFBM"  # for class names no standard code describes
CLASS_CODES = {
    "normal": codes.SCT.Normal,
    "metastasis": codes.SCT.BonyMetastasis,
    "arthritis": Code("3723001", "SCT", "Arthritis"),
    "thyroid_carcinoma": codes.SCT.MalignantEpithelialNeoplasmOfThyroid,
}
NO_UNITS = codes.UCUM.NoUnits
# the test-time-shift spread of the probabilities (tfbonemet.models.tta): no standard concept names it
UNCERTAINTY = Code("UNCERTAINTY", PRIVATE_SCHEME, "Probability spread under test-time shifts")
# Which side of the patient lies at the image's left and right, and DICOM Patient Orientation
# (row direction, column direction): anterior is seen from the front, posterior from behind.
VIEW_SIDES = {ANTERIOR: ("R", "L"), POSTERIOR: ("L", "R")}
VIEW_ORIENTATION = {ANTERIOR: ("L", "F"), POSTERIOR: ("R", "F")}
VIEW_TEXT = {ANTERIOR: "ANT", POSTERIOR: "POST"}
MIN_OVERLAY_WIDTH = 256  # narrower views are enlarged (whole pixels) so the burned-in text stays legible


@dataclasses.dataclass(frozen=True)
class ModelResult:
    """What the report records about one study's prediction."""

    classes: tuple[str, ...]
    probabilities: tuple[float, ...]
    label: str
    threshold: float | None  # on P(metastasis) for binary models; None: the label is the most probable class
    model_name: str
    model_version: str
    uncertainty: float | None = None  # None: the model gives none (an export from before the output)
    referral_band: tuple[float, float] | None = None  # on P(metastasis); inside it the label is `refer`


def class_code(name: str) -> Code:
    return CLASS_CODES.get(name) or Code(name.upper()[:16], PRIVATE_SCHEME, name.replace("_", " "))


# ---- where results go: the source study, or a pseudonymous one ----------------------------------------

_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                  "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription",
                  "IssuerOfPatientID", "PatientAge", "PatientSize", "PatientWeight")


def pseudonymise(source: Dataset, secret: str | None = None) -> Dataset:
    """A header-only stand-in for a source image in a pseudonymous study: the fields results need
    (SOP class, image size, modality) with every identifier replaced by a keyed pseudonym or left empty."""
    secret = secret or site_secret()

    def uid(kind: str, value) -> str:
        return generate_uid(entropy_srcs=[secret, kind, str(value)])

    out = Dataset()
    for keyword in ("SOPClassUID", "Modality", "Rows", "Columns", "NumberOfFrames", "PixelSpacing", "ImageType"):
        if keyword in source:
            out[keyword] = source[keyword]
    out.SOPInstanceUID = uid("instance", source.SOPInstanceUID)
    out.SeriesInstanceUID = uid("series", source.SeriesInstanceUID)
    out.StudyInstanceUID = uid("study", source.StudyInstanceUID)
    patient = keyed_hash(str(source.get("PatientID", "")) or str(source.StudyInstanceUID), secret)
    out.PatientID = f"TFBM-{patient[:16]}"
    out.PatientName = f"PSEUDONYM^{patient[:8]}"
    out.StudyID = study_key_for_uid(str(source.StudyInstanceUID), secret)[:16]
    for keyword in ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber",
                    "ReferringPhysicianName"):
        setattr(out, keyword, "")
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = "tfbonemet: keyed-hash pseudonyms, no names or dates"
    return out


def _targets(sources: list[Dataset], deidentify: bool, secret: str | None) -> list[Dataset]:
    if not sources:
        raise ValueError("results need at least one source image")
    return [pseudonymise(s, secret) for s in sources] if deidentify else sources


def _copy_study(result: Dataset, reference: Dataset) -> None:
    """Patient and study attributes the highdicom constructors do not copy (description, age, ...)."""
    for keyword in _PATIENT_STUDY:
        if keyword in reference and keyword not in result:
            result[keyword] = reference[keyword]
    for keyword in ("PatientIdentityRemoved", "DeidentificationMethod"):
        if keyword in reference:
            result[keyword] = reference[keyword]


# ---- Structured Report ----------------------------------------------------------------------------------

def structured_report(sources: list[Dataset], result: ModelResult, deidentify: bool = False,
                      secret: str | None = None, instance_number: int = 1) -> hd.sr.ComprehensiveSR:
    """A TID 1500 report of one study's result, referencing `sources` (the images the model read)."""
    evidence = _targets(sources, deidentify, secret)
    rule = ("most probable class" if result.threshold is None else
            f"{POSITIVE_CLASS} if P({POSITIVE_CLASS}) >= operating threshold {result.threshold:g}")
    parameters = [f"label: {rule}"[:64]]
    if result.referral_band is not None:
        low, high = result.referral_band
        parameters.append(f"{REFER} if {low:.4g} < P({POSITIVE_CLASS}) < {high:.4g}"[:64])
    algorithm = hd.sr.AlgorithmIdentification(name=result.model_name, version=result.model_version,
                                              parameters=parameters)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[MANUFACTURER, result.model_name, result.model_version]),
            name=result.model_name[:64], manufacturer_name=MANUFACTURER, model_name=result.model_name[:64]))
    images = [hd.sr.SourceImageForMeasurementGroup(s.SOPClassUID, s.SOPInstanceUID) for s in evidence]
    groups = []
    carrier = POSITIVE_CLASS if POSITIVE_CLASS in result.classes else result.classes[0]
    for name, probability in zip(result.classes, result.probabilities):
        measurements = [hd.sr.Measurement(name=codes.DCM.Probability, value=float(probability), unit=NO_UNITS,
                                          algorithm_id=algorithm)]
        if name == POSITIVE_CLASS and result.threshold is not None:
            measurements.append(hd.sr.Measurement(name=codes.DCM.ThresholdValue, value=float(result.threshold),
                                                  unit=NO_UNITS, algorithm_id=algorithm))
        if name == carrier and result.uncertainty is not None and np.isfinite(result.uncertainty):
            measurements.append(hd.sr.Measurement(name=UNCERTAINTY, value=float(result.uncertainty), unit=NO_UNITS,
                                                  algorithm_id=algorithm))
        if result.label == REFER:
            called = codes.SCT.Indeterminate
        else:
            called = codes.SCT.Present if name == result.label else codes.SCT.Absent
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"P({name})"),
            finding_type=class_code(name), algorithm_id=algorithm, measurements=measurements,
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(class_code(name), called)],
            source_images=images))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.NuclearMedicineProcedure, imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport, referenced_images=evidence)
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence, content=report[0], series_instance_uid=generate_uid(), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=instance_number, manufacturer=MANUFACTURER,
        is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = f"{MANUFACTURER} {result.model_name}: {result.label}"[:64]
    _copy_study(sr, evidence[0])
    return sr


# ---- CAM overlays as Secondary Captures ------------------------------------------------------------------

def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def label_view(rgb: np.ndarray, view: str, caption: str = "") -> np.ndarray:
    """Burn in the view name and the patient's R/L sides (a banner above the image) and a caption
    (a banner below), enlarging narrow images by a whole factor so the text can be read."""
    from PIL import Image, ImageDraw

    factor = max(1, -(-MIN_OVERLAY_WIDTH // rgb.shape[1]))
    rgb = np.repeat(np.repeat(np.asarray(rgb, np.uint8), factor, axis=0), factor, axis=1)
    height, width = rgb.shape[:2]
    band = max(16, width // 12)
    canvas = Image.new("RGB", (width, height + 2 * band), "black")
    canvas.paste(Image.fromarray(rgb), (0, band))
    draw = ImageDraw.Draw(canvas)
    font = _font(int(band * 0.75))
    left, right = VIEW_SIDES.get(view, ("", ""))
    draw.text((band // 4, band // 2), left, fill="yellow", font=font, anchor="lm")
    draw.text((width - band // 4, band // 2), right, fill="yellow", font=font, anchor="rm")
    draw.text((width // 2, band // 2), VIEW_TEXT.get(view, view.upper()), fill="white", font=font, anchor="mm")
    if caption:
        small = _font(max(10, int(band * 0.55)))
        draw.text((width // 2, height + band + band // 2), caption, fill="white", font=small, anchor="mm")
    return np.asarray(canvas)


def overlay_captures(overlays: dict[str, np.ndarray], sources: dict[str, tuple[Dataset, int]], caption: str = "",
                     deidentify: bool = False, secret: str | None = None) -> list[hd.sc.SCImage]:
    """One RGB Secondary Capture per view, all in one new series.

    `overlays` maps a view to its CAM overlay (uint8 RGB in the view's own pixel grid), `sources`
    maps it to (source image, 1-based frame), as `view_sources` reads them. Each capture gets the
    view name, R/L markers and `caption` burned in, Patient Orientation for the view, and a Source
    Image reference.
    """
    series = generate_uid()
    out = []
    for number, (view, rgb) in enumerate(overlays.items(), start=1):
        view = view if view in sources else IMAGE  # a single-view model fed an image that names no view
        source, frame = sources[view]
        [target] = _targets([source], deidentify, secret)
        pixels = label_view(rgb, view, caption)
        factor = pixels.shape[1] // np.asarray(rgb).shape[1]
        spacing = target.get("PixelSpacing")
        capture = hd.sc.SCImage.from_ref_dataset(
            target, pixels, photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
            series_instance_uid=series, series_number=OVERLAY_SERIES_NUMBER, sop_instance_uid=generate_uid(),
            instance_number=number, manufacturer=MANUFACTURER,
            patient_orientation=VIEW_ORIENTATION.get(view, ("", "")),
            pixel_spacing=tuple(float(s) / factor for s in spacing) if spacing else None,
            transfer_syntax_uid=ExplicitVRLittleEndian)
        capture.ImageType = ["DERIVED", "SECONDARY"]
        capture.BodyPartExamined = source.get("BodyPartExamined", "WHOLEBODY")  # not a paired part: no Laterality
        capture.BurnedInAnnotation = "NO"  # view and side labels only: nothing that identifies the patient
        capture.SeriesDescription = (f"{MANUFACTURER} overlays" + (f": {caption}" if caption else ""))[:64]
        capture.DerivationDescription = f"Class activation map over the {view} view, burned-in labels"
        capture.ImageComments = "Model explanation heat map; not for diagnosis on its own."
        reference = Dataset()
        reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = target.SOPClassUID, target.SOPInstanceUID
        if int(target.get("NumberOfFrames", 1) or 1) > 1:
            reference.ReferencedFrameNumber = frame
        capture.SourceImageSequence = [reference]
        _copy_study(capture, target)
        out.append(capture)
    return out


def view_sources(paths) -> dict[str, tuple[Dataset, int]]:
    """view -> (header of the source image, 1-based frame) for a study's files, the views named by
    the package's DICOM reader (which decides them from the header, never from frame order)."""
    import pydicom

    from tfbonemet.io.dicom import read_views

    found = {}
    for path in paths:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        for frame, view in enumerate(read_views(path), start=1):  # the reader yields views in frame order
            found.setdefault(view, (header, frame))
    return found


def to_bytes(dataset: Dataset) -> bytes:
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def save(dataset: Dataset, path) -> Path:
    """Write a result atomically (0644): a reader never sees half a file."""
    return write_bytes(path, to_bytes(dataset))
