"""The PACS round trip: fetch a study's NM images over DICOMweb, predict, store the result back.

The images go through the same reader and runner as `tfbonemet predict` on files (they are
written to a private temporary folder, removed afterwards), so a study gives the same number from
a PACS as from disk. The result goes back as a Structured Report, plus one CAM overlay per view
with `explain`, into the source study (or a pseudonymous one with `deidentify`).
"""
from __future__ import annotations

import hashlib
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from tfbonemet.errors import ModelError
from tfbonemet.io import dicom_results, dicomweb
from tfbonemet.vocab import POSITIVE_CLASS

EXPLAIN_METHOD = "gradcam"
_MODEL_FILES = ("model.keras", "saved_model.pb")


def model_identity(runner, model_path) -> tuple[str, str]:
    """(name, version) for the report: the registered model name (else the file name), and the package
    version with a digest of the weights file, so a report names exactly the model that wrote it."""
    path = Path(model_path)
    run = getattr(runner, "run", None)
    name = getattr(getattr(run, "config", None), "model", None) or (path.stem if path.is_file() else path.name)
    weights = path if path.is_file() else next((path / f for f in _MODEL_FILES if (path / f).is_file()), None)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12] if weights else "unknown"
    try:
        version = metadata.version("tfbonemet")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return name, f"tfbonemet {version} weights sha256:{digest}"


def round_trip(url: str, study_instance_uid: str, model_path, explain: bool = False, deidentify: bool = False,
               secret: str | None = None, runner=None, client=None, log=print) -> dict:
    """Retrieve (WADO-RS) one study's NM images, predict, store (STOW-RS) an SR (+ overlays) back.

    Returns a summary without identifiers: label, class probabilities, threshold, what was stored
    and the seconds each step took. `runner`/`client` may be passed in to reuse them across studies.
    """
    from tfbonemet.io.discovery import StudyFiles, load_study
    from tfbonemet.tasks.predict import load_runner

    timings = {}
    start = time.perf_counter()
    client = client or dicomweb.connect(url)
    sources = dicomweb.retrieve_nm(client, study_instance_uid)
    timings["retrieve_s"] = time.perf_counter() - start
    runner = runner or load_runner(model_path)
    if explain and getattr(runner, "kind", None) != "keras":
        raise ModelError(f"--explain needs the Keras model (run directory or .keras), not a {runner.kind} model")
    with tempfile.TemporaryDirectory(prefix="tfbonemet-pacs-") as tmp:  # 0700, only this user reads the scan
        paths = []
        for number, ds in enumerate(sources):
            paths.append(Path(tmp) / f"{number:05d}.dcm")
            ds.save_as(paths[-1], enforce_file_format=True)
        [(key, views), *more] = load_study(StudyFiles("dicom", paths, study_instance_uid), runner.info, secret)
        if more:
            raise ModelError(f"the study holds {len(more) + 1} separate images for this single-view model; "
                             f"the PACS round trip reports one result per study")
        overlay_sources = dicom_results.view_sources(paths) if explain else {}
    step = time.perf_counter()
    result = study_result(runner, views, model_path)
    timings["predict_s"] = time.perf_counter() - step
    name, label, probabilities = result.model_name, result.label, result.probabilities
    outputs = [dicom_results.structured_report(sources, result, deidentify=deidentify, secret=secret)]
    if explain:
        step = time.perf_counter()
        outputs += _overlays(runner, views, overlay_sources, result, deidentify, secret)
        timings["explain_s"] = time.perf_counter() - step
    step = time.perf_counter()
    stored = dicomweb.store(client, outputs)
    timings["store_s"] = time.perf_counter() - step
    timings["total_s"] = time.perf_counter() - start
    summary = {"study": key, "label": label, **{f"p_{c}": round(float(p), 6) for c, p in
                                                  zip(runner.info.classes, probabilities)},
               "uncertainty": round(result.uncertainty, 6), "threshold": result.threshold, "model": name,
               "images_read": len(sources), "stored": stored,
               "stored_study": "pseudonymous" if deidentify else "source",
               **{k: round(v, 3) for k, v in timings.items()}}
    log(f"{key}: {label} ({', '.join(f'P({c})={p:.3f}' for c, p in zip(runner.info.classes, probabilities))}); "
        f"stored {stored} result instance{'s' if stored != 1 else ''} in the {summary['stored_study']} study")
    return summary


def study_result(runner, views: dict[str, np.ndarray], model_path) -> dicom_results.ModelResult:
    """What the report records for one study: the runner's probabilities and uncertainty, labelled as
    `predict` labels them (threshold, referral band)."""
    out = runner.outputs([views])
    probabilities = np.asarray(out["probabilities"])[0]
    label = runner.info.label_names[int(runner.info.label(probabilities[np.newaxis])[0])]
    name, version = model_identity(runner, model_path)
    threshold = runner.info.threshold
    return dicom_results.ModelResult(tuple(runner.info.classes), tuple(float(p) for p in probabilities), label,
                                     0.5 if threshold is None and len(probabilities) == 2 else threshold,
                                     name, version, float(out["uncertainty"][0]), runner.info.band)


def _overlays(runner, views: dict[str, np.ndarray], sources: dict, result, deidentify: bool, secret) -> list:
    """One labelled CAM overlay per view, as Secondary Captures (one series) referencing the source frames."""
    from tfbonemet.tasks.explain import explain_studies, overlay_rgb

    target = POSITIVE_CLASS if POSITIVE_CLASS in result.classes else result.label
    [explanation] = explain_studies(runner.run, [views], ["study"], EXPLAIN_METHOD, target)
    overlays = {view: overlay_rgb(explanation.views[view], explanation.maps[view]) for view in explanation.maps}
    caption = f"{EXPLAIN_METHOD} P({target})={explanation.probability:.2f}"
    return dicom_results.overlay_captures(overlays, sources, caption, deidentify=deidentify, secret=secret)


def run_pacs(url: str, model_path, study_uids=(), filters: dict | None = None, explain: bool = False,
             deidentify: bool = False, secret: str | None = None, log=print) -> list[dict]:
    """The round trip for each study named, or for every NM study a QIDO-RS search with `filters`
    finds when none is named; the model and connection are loaded once. Returns the summaries."""
    from tfbonemet.tasks.predict import load_runner

    client = dicomweb.connect(url)
    uids = list(study_uids) or dicomweb.search_studies(client, **(filters or {}))
    if not uids:
        log("no NM studies matched")
        return []
    runner = load_runner(model_path)
    return [round_trip(url, uid, model_path, explain=explain, deidentify=deidentify, secret=secret, runner=runner,
                       client=client, log=log) for uid in uids]

