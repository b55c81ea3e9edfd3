"""The one rule: a figure the package reports is computed on the path the model is trained and served on.

With and without the thoracic crop, the same raw study gives the same model input through every
path; evaluate's per-study probabilities, uncertainty and label (refer inside the referral band)
equal predict's with the run directory, the exported SavedModel and TFLite, and the DICOM SR's; and
a class-activation map comes back to the source view where its evidence was.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tfbonemet.config import resolve
from tfbonemet.data import datasets
from tfbonemet.data.pipeline import BatchConfig
from tfbonemet.io.dicom_results import UNCERTAINTY
from tfbonemet.preprocessing import ScanPreprocessor

CROPS = ["none", "thorax"]


@pytest.fixture(scope="module")
def dicom_tfds(tmp_path_factory):
    """Phantom NM DICOM written to disk and built into a TFDS dataset, as a user would."""
    from tfbonemet.data.phantom import BoneScanPhantom
    from tfbonemet.data.phantom_dicom import write_dataset

    root = tmp_path_factory.mktemp("invariants")
    phantom = BoneScanPhantom(shape=(256, 64), seed=5)
    write_dataset(phantom.studies(24), root / "dicom")
    data_dir = root / "tfds"
    datasets.tfds_builder("tfds:bone_scintigraphy/binary", str(data_dir), str(root / "dicom"))
    return root


def source(root, **overrides):
    return resolve(overrides={"data": "tfds:bone_scintigraphy/binary", "data_dir": str(root / "tfds"), **overrides})


# the uncropped whole-body run is in the slow suite: the thorax run takes the same steps, plus the crop
@pytest.fixture(scope="module", params=[pytest.param("none", marks=pytest.mark.slow), "thorax"])
def trained(request, dicom_tfds):
    """A one-epoch run on the TFDS build, with or without the thoracic crop, referring half the studies."""
    from tfbonemet.tasks.train.trainer import fit

    crop = request.param
    config = source(dicom_tfds, image_height=96 if crop == "thorax" else 128, image_width=32, epochs=1,
                    batch_size=8, crop=crop, model_options={"filters": [8, 16, 16]}, refer_coverage=0.5,
                    output_dir=str(dicom_tfds / "runs"), run_name=f"run-{crop}")
    return fit(config, log=lambda *_: None)


@pytest.mark.parametrize("crop", CROPS)
def test_same_raw_study_gives_the_same_model_input_on_every_path(dicom_tfds, crop):
    """tf.data (fit, evaluate, cv, export parity) == predict's reader == explain, from one DICOM study."""
    from tfbonemet.run import ModelInfo
    from tfbonemet.tasks.predict import discover, load_study

    preprocessor = ScanPreprocessor("two_view", (96, 32), crop=crop)
    split = datasets.open_split(source(dicom_tfds), "validation")
    batches = split.batches(preprocessor, BatchConfig(batch_size=64), training=False, task="binary")
    streamed = next(iter(batches.as_numpy_iterator()))[0]
    info = ModelInfo(preprocessor, ("no_metastasis", "metastasis"))
    read = {key: views for study in discover([dicom_tfds / "dicom"]) for key, views in load_study(study, info)}
    for i, key in enumerate(split.keys):
        served = preprocessor.batch([read[key]])
        raw = {view: read[key][view] for view in preprocessor.source_views}
        explained = preprocessor.numpy(raw)
        for name in preprocessor.input_names:
            np.testing.assert_allclose(streamed[name][i], served[name][0], atol=1e-6)
            np.testing.assert_allclose(explained[name], served[name][0], atol=1e-6)


def near_an_edge(p, run) -> bool:
    """Nearer the threshold or a band edge than rows' 1e-6 rounding and batch sums' 1e-7: a tie."""
    return any(abs(p - edge) <= 2e-6 for edge in (run.threshold, *(run.band or ())))


def sr_result(report) -> dict:
    """P(metastasis), the uncertainty and the call per class, read back from a written SR."""
    items = list(walk(report.ContentSequence))
    numbers = {}
    for i, item in enumerate(items):
        if item.ValueType == "NUM":
            numbers.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(
                float(item.MeasuredValueSequence[0].NumericValue))
    calls = {item.ConceptNameCodeSequence[0].CodeMeaning: item.ConceptCodeSequence[0].CodeMeaning
             for item in items if item.ValueType == "CODE"
             and item.ConceptCodeSequence[0].CodeMeaning in ("Present", "Absent", "Indeterminate")}
    return {"probabilities": numbers["Probability"], "uncertainty": numbers[UNCERTAINTY.meaning][0], "calls": calls}


def walk(sequence):
    for item in sequence:
        yield item
        yield from walk(item.get("ContentSequence", []))


def test_evaluate_predict_savedmodel_tflite_and_sr_agree_per_study(trained, tmp_path):
    """Probability, uncertainty and label (refer included) of each study, from evaluate, predict on the run,
    the SavedModel and TFLite, and the DICOM SR `predict --dicomweb` stores."""
    import pydicom

    from tfbonemet.io import dicom_results
    from tfbonemet.run import Run
    from tfbonemet.tasks.evaluate import run_evaluation
    from tfbonemet.tasks.export import export
    from tfbonemet.tasks.pacs import study_result
    from tfbonemet.tasks.predict import discover, iter_predictions, load_runner, load_study

    run = Run.load(trained)
    assert run.band is not None
    out = run_evaluation(trained, "validation", output_dir=tmp_path / "eval", n_bootstrap=20, log=lambda *_: None)
    with (out / "predictions.csv").open() as fh:
        evaluated = {row["study"]: row for row in csv.DictReader(fh)}
    at_band = json.loads((out / "metrics.json").read_text())["referral"]["band"]
    referred = [row["label"] == "refer" for row in evaluated.values()]
    assert at_band["band"] == pytest.approx(list(run.band))
    assert at_band["figures"]["coverage"]["value"] == pytest.approx(1 - np.mean(referred))
    version = export(trained, tmp_path / "served", log=lambda *_: None)
    studies = discover([trained.parents[1] / "dicom"])
    labels, by_run = set(), None
    for model, tolerance in ((trained, 1e-4), (version.parent, 1e-4), (version / "tflite" / "float32.tflite", 1e-4)):
        predicted = {row["study"]: row for row in iter_predictions(load_runner(model), studies)}
        assert set(evaluated) <= set(predicted)
        for key, row in evaluated.items():
            p = float(row["p_metastasis"])
            assert abs(predicted[key]["p_metastasis"] - p) <= tolerance, (model, key)
            assert abs(predicted[key]["uncertainty"] - float(row["uncertainty"])) <= 2 * tolerance, (model, key)
            if not near_an_edge(p, run):
                assert predicted[key]["label"] == row["label"], (model, key, p, run.threshold, run.band)
        labels |= {row["label"] for row in predicted.values()}
        by_run = by_run or predicted
    assert "refer" in labels  # the band is chosen to refer half the validation studies
    runner = load_runner(trained)
    for study in studies:
        [(key, views)] = load_study(study, runner.info)
        result = study_result(runner, views, trained)
        report = dicom_results.structured_report([pydicom.dcmread(f) for f in study.files], result)
        read = sr_result(report)
        row = by_run[key]
        assert read["probabilities"][1] == pytest.approx(row["p_metastasis"], abs=1e-4)
        assert read["uncertainty"] == pytest.approx(row["uncertainty"], abs=2e-4)
        if not near_an_edge(row["p_metastasis"], run):
            expected = {"refer": "Indeterminate", "metastasis": "Present", "no_metastasis": "Absent"}[row["label"]]
            assert read["calls"]["Bony metastasis"] == expected, (key, row)


def test_predict_and_savedmodel_label_with_the_stored_threshold_and_band(trained, tmp_path):
    from tfbonemet.tasks.export import export
    from tfbonemet.tasks.predict import discover, iter_predictions, load_runner

    threshold = json.loads((trained / "metrics.json").read_text())["operating_point"]["threshold"]
    version = export(trained, tmp_path / "served", fmt="savedmodel", log=lambda *_: None)
    assert json.loads((version / "metadata.json").read_text())["threshold"] == pytest.approx(threshold)
    studies = discover([trained.parents[1] / "dicom"])
    low, high = json.loads((trained / "metrics.json").read_text())["referral"]["band"]
    assert json.loads((version / "metadata.json").read_text())["referral_band"] == pytest.approx([low, high])
    assert f"{low:.3f} < P(metastasis) < {high:.3f} are labelled refer" in (version / "MODEL_CARD.md").read_text()
    for model in (trained, version.parent):
        rows = list(iter_predictions(load_runner(model), studies))
        # rows hold p rounded to 1e-6, and batch sums differ at 1e-7: nearer than that is a tie
        clear = [row for row in rows if min(abs(row["p_metastasis"] - t) for t in (threshold, low, high)) > 2e-6]
        assert len(clear) >= len(rows) - 1, (threshold, [(r["study"], r["p_metastasis"]) for r in rows if r not in clear])
        for row in clear:
            p = row["p_metastasis"]
            assert row["label"] == ("refer" if low < p < high else "metastasis" if p >= threshold else "no_metastasis")


def one_lesion_detector(image_size):
    """A two-view model whose class evidence is the input itself: Grad-CAM then points at the hottest spot."""
    import keras

    inputs = {v: keras.Input((*image_size, 1), name=v) for v in ("anterior", "posterior")}
    pooled = []
    for view, x in inputs.items():
        maps = keras.layers.Conv2D(1, 1, kernel_initializer="ones", use_bias=False, name=f"{view}_conv")(x)
        maps = keras.layers.Identity(name=f"{view}_features")(maps)
        pooled.append(keras.layers.GlobalMaxPooling2D()(maps))
    fused = keras.layers.Concatenate()(pooled)
    dense = keras.layers.Dense(2, activation="softmax", name="probabilities")
    outputs = dense(fused)
    dense.set_weights([np.array([[-1.0, 1.0], [-1.0, 1.0]], np.float32), np.zeros(2, np.float32)])
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("crop", CROPS)
def test_cam_of_a_phantom_lesion_peaks_inside_its_box_in_each_source_view(crop):
    from tfbonemet.data.phantom import BoneScanPhantom
    from tfbonemet.run import Run
    from tfbonemet.tasks.explain import explain_studies

    study = BoneScanPhantom(shape=(512, 128), seed=3).study(7, label=1)
    lesion = max(study.lesions, key=lambda lesion: lesion.intensity)
    views = {"anterior": study.anterior.astype(np.float32), "posterior": study.posterior.astype(np.float32)}
    boxes = {"anterior": lesion.box_anterior, "posterior": lesion.box_posterior}
    if crop == "thorax":  # move the lesion's evidence into the thorax rows the crop keeps
        boxes = {v: (150, b[1], 150 + b[2] - b[0], b[3]) for v, b in boxes.items()}
    for view, (y0, x0, y1, x1) in boxes.items():  # one focus, hotter than bladder and kidneys
        views[view][y0:y1 + 1, x0:x1 + 1] += 4 * views[view].max()
    preprocessor = ScanPreprocessor("two_view", (128, 48), crop=crop, normalisation="linear", percentile=100)
    run = Run(resolve(), preprocessor, model_path=None)
    run._model = one_lesion_detector(preprocessor.image_size)
    [explanation] = explain_studies(run, [views], ["study"], "gradcam")
    for view, (y0, x0, y1, x1) in boxes.items():
        cam = explanation.maps[view]
        assert cam.shape == views[view].shape
        peak_y, peak_x = np.unravel_index(np.argmax(cam), cam.shape)
        margin = 2 + 512 // 128
        assert y0 - margin <= peak_y <= y1 + margin and x0 - margin <= peak_x <= x1 + margin, (view, (peak_y, peak_x))
