"""Export round trips: Keras run -> SavedModel / TFLite -> reload -> predict, for a two-view and a single-view model."""
from __future__ import annotations

import json

import numpy as np
import pydicom.data
import pytest
import tensorflow as tf
from click.testing import CliRunner

from tfbonemet.cli import cli
from tfbonemet.data.datasets import open_split
from tfbonemet.data.phantom import BoneScanPhantom
from tfbonemet.data.phantom_dicom import write_dataset
from tfbonemet.errors import ModelError
from tfbonemet.run import Run
from tfbonemet.tasks import export as export_lib
from tfbonemet.tasks.predict import discover, iter_predictions, load_runner

from conftest import TINY

NM_FILES = [pydicom.data.get_testdata_file(name) for name in ("JPEG2000.dcm", "JPGExtended.dcm")]


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def two_view(tiny_run_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return export_lib.export(tiny_run_dir, root, fmt="all", calibration_samples=8, log=quiet)


@pytest.fixture(scope="module")
def single_view_run(tmp_path_factory):
    """A tiny single-view run of the registered `dscint`, trained through `fit` like any run."""
    from tfbonemet.config import resolve
    from tfbonemet.tasks.train.trainer import fit

    out = tmp_path_factory.mktemp("runs-single")
    options = {"filters": [8, 8, 16, 16, 16, 16], "hidden_units": 16}
    return fit(resolve(overrides={**TINY, "model": "dscint", "task": "binary", "model_options": options,
                                  "output_dir": str(out), "run_name": "dscint"}), log=quiet)


@pytest.fixture(scope="module")
def single_view(single_view_run, tmp_path_factory):
    return export_lib.export(single_view_run, tmp_path_factory.mktemp("exports-single"), fmt="all",
                             calibration_samples=8, log=quiet)


def test_tf_serving_layout_and_files(two_view):
    assert two_view.name == "1" and two_view.parent.name == "two_view_net"
    for name in ("saved_model.pb", "variables", "parity.json", "metadata.json", "MODEL_CARD.md"):
        assert (two_view / name).exists(), name
    assert sorted(p.stem for p in (two_view / "tflite").glob("*.tflite")) == sorted(export_lib.TFLITE_VARIANTS)
    assert [p.name for p in two_view.parent.iterdir()] == ["1"]  # no staging folder left behind


def test_parity_saved_and_within_tolerance(two_view):
    parity = json.loads((two_view / "parity.json").read_text())["artefacts"]
    assert set(parity) == {"savedmodel", *export_lib.TFLITE_VARIANTS}
    for name, result in parity.items():
        assert result["passed"] and result["max_abs_diff"] <= export_lib.TOLERANCES[name][0], name
    assert parity["savedmodel"]["max_abs_diff"] < 1e-5 and parity["float32"]["max_abs_diff"] < 1e-5


def test_model_card_has_io_and_no_identifiers(two_view, tiny_run_dir):
    meta = json.loads((two_view / "metadata.json").read_text())
    inputs = meta["network_data_format"]["inputs"]
    assert set(inputs) == {"anterior", "posterior"} and inputs["anterior"]["modality"] == "NM"
    assert set(meta["network_data_format"]["outputs"]) == {"probabilities", "uncertainty", "label"}
    assert meta["classes"] == ["no_metastasis", "metastasis"] and meta["metrics"]
    card = (two_view / "MODEL_CARD.md").read_text()
    assert "not a stand-alone diagnosis" in card.lower()
    run = Run.load(tiny_run_dir)
    text = card + json.dumps(meta)
    for split in ("train", "validation"):
        for patient in open_split(run.config, split).patients:
            assert patient not in text
    assert "FAKE-" not in text and "PHANTOM^" not in text


def test_signatures_named_with_preprocessing_inside(two_view, tiny_run_dir):
    loaded = tf.saved_model.load(str(two_view))
    assert set(export_lib.SIGNATURES) <= set(loaded.signatures)
    serve = loaded.signatures["serving_default"]
    assert set(serve.structured_input_signature[1]) == {"anterior", "posterior"}
    assert set(serve.structured_outputs) == {"probabilities", "uncertainty", "label"}
    run = Run.load(tiny_run_dir)
    studies = [study for _, study in open_split(run.config, "validation").raw_studies(("anterior", "posterior"))]
    outputs = load_runner(tiny_run_dir).outputs(studies)
    expected = outputs["probabilities"]
    counts = {v: tf.constant(np.stack([s[v] for s in studies])[..., None]) for v in ("anterior", "posterior")}
    got = serve(**counts)
    np.testing.assert_allclose(got["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(got["uncertainty"].numpy(), outputs["uncertainty"], atol=2e-5)
    assert (outputs["uncertainty"] > 0).any()
    np.testing.assert_array_equal(got["label"].numpy(), (expected[:, 1] >= run.threshold).astype(int))
    # any size: a 2x larger acquisition still runs (resized with padding inside)
    big = {v: tf.image.resize(t[:1], (256, 64), method="nearest") for v, t in counts.items()}
    assert serve(**big)["probabilities"].shape == (1, 2)
    # the bytes signature: 16-bit PNGs of the same counts give the same answer
    png = {v: tf.stack([tf.io.encode_png(tf.cast(t[0], tf.uint16))]) for v, t in counts.items()}
    from_png = loaded.signatures["serving_bytes"](**png)["probabilities"].numpy()
    np.testing.assert_allclose(from_png, expected[:1], atol=1e-5)


def test_next_version_and_savedmodel_only(two_view, tiny_run_dir):
    second = export_lib.export(tiny_run_dir, two_view.parent.parent, fmt="savedmodel", log=quiet)
    assert second.name == "2" and not (second / "tflite").exists() and (second / "saved_model.pb").is_file()
    # a TF Serving model folder predicts with its newest version
    assert load_runner(two_view.parent).signature is not None


def test_failed_parity_leaves_no_version(tiny_run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(export_lib.TOLERANCES, "savedmodel", (-1.0, 1.0, 0.0))
    with pytest.raises(ModelError, match="failed parity for savedmodel"):
        export_lib.export(tiny_run_dir, tmp_path, fmt="savedmodel", log=quiet)
    assert list(tmp_path.iterdir()) == []


def test_export_cli_bad_run_dir(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"not a zip")
    (tmp_path / "config.json").write_text("{}")
    for target in (tmp_path / "missing", tmp_path):
        result = CliRunner().invoke(cli, ["export", str(target), "--output-dir", str(tmp_path / "out")])
        assert result.exit_code == 1 and result.output.startswith("Error: ")
        assert len(result.output.strip().splitlines()) == 1 and str(target) in result.output
    assert not (tmp_path / "out").exists()


def test_two_view_round_trip_on_phantom_dicom(two_view, tiny_run_dir, tmp_path):
    write_dataset(BoneScanPhantom(shape=(128, 32)).studies(4), tmp_path)
    studies = discover([tmp_path])
    results = {}
    for model in (tiny_run_dir, two_view, two_view / "tflite" / "float32.tflite", two_view / "tflite" / "int8.tflite"):
        rows = list(iter_predictions(load_runner(model), studies))
        results[model] = {r["study"]: r["p_metastasis"] for r in rows}
    reference = results.pop(tiny_run_dir)
    assert len(reference) == 4
    for model, got in results.items():
        assert got.keys() == reference.keys()
        tolerance = export_lib.TOLERANCES["int8" if "int8" in str(model) else "float32"][0]
        np.testing.assert_allclose(list(got.values()), list(reference.values()), atol=tolerance)


def test_single_view_round_trip_on_pydicom_nm_scans(single_view, single_view_run):
    meta = json.loads((single_view / "metadata.json").read_text())
    assert list(meta["network_data_format"]["inputs"]) == ["image"]
    studies = discover(NM_FILES)
    results = {}
    for model in (single_view_run, single_view, single_view / "tflite" / "float16.tflite"):
        results[str(model)] = [r["p_metastasis"] for r in iter_predictions(load_runner(model), studies)]
    reference = results.pop(str(single_view_run))
    assert len(reference) == 2  # both bundled NM scans (one study UID) predicted, one row each
    for model, got in results.items():
        np.testing.assert_allclose(got, reference, atol=export_lib.TOLERANCES["float16"][0], err_msg=model)


def test_model_card_fields(two_view):
    meta = json.loads((two_view / "metadata.json").read_text())
    assert meta["version"] == "1.0.0" and meta["changelog"] == {"1.0.0": "first export of run tiny"}
    assert set(meta["framework_versions"]) >= {"tensorflow", "keras", "tfbonemet"}
    assert meta["license"] == "Apache-2.0" and meta["authors"] and meta["copyright"].startswith("Copyright")
    assert any("Guo et al. 2023" in r for r in meta["references"]) and len(meta["references"]) == 5
    assert "phantom" in meta["training_data"]["source"] and "ground truth" in meta["training_data"]["labels"]
    assert meta["out_of_scope_use"] and meta["intended_use"] and meta["limitations"]
    assert meta["operating_point"]["threshold"] == meta["threshold"]
    # the tiny run was never evaluated: the card says so rather than passing validation figures off as test ones
    assert "No test evaluation" in meta["metrics"]["statement"] and "test" not in meta["metrics"]
    assert "optimistic" in meta["metrics"]["validation"]["note"]
    card = (two_view / "MODEL_CARD.md").read_text()
    for heading in ("## Intended use", "## Out-of-scope use", "## Training data", "## Metrics", "## Limitations",
                    "## How to load", "## Framework versions", "## References", "## Changelog"):
        assert heading in card, heading
    assert "**No test evaluation" in card and "tfbonemet.load_model" in card
    assert "weak check" in card  # 6 validation studies: the parity gate says what it could not check


def test_tflite_files_carry_their_preprocessing(two_view):
    meta = json.loads((two_view / "metadata.json").read_text())
    for variant in export_lib.TFLITE_VARIANTS:
        embedded = export_lib.read_metadata(two_view / "tflite" / f"{variant}.tflite")
        assert embedded["preprocessing"] == meta["preprocessing"] and embedded["classes"] == meta["classes"]
        assert embedded["threshold"] == meta["threshold"] and set(embedded["inputs"]) == {"anterior", "posterior"}


def test_integrity_recorded_and_verified(two_view, tmp_path):
    import shutil

    meta = json.loads((two_view / "metadata.json").read_text())
    files = meta["integrity"]["files"]
    assert meta["integrity"]["algorithm"] == "sha256" and "saved_model.pb" in files
    assert "tflite/int8.tflite" in files and "MODEL_CARD.md" in files and "metadata.json" not in files
    assert export_lib.verify(two_view) == sorted(files)
    assert export_lib.verify(two_view / "tflite" / "float16.tflite") == ["tflite/float16.tflite"]
    copy = shutil.copytree(two_view, tmp_path / "1")
    damaged = copy / "tflite" / "float32.tflite"
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelError, match="float32.tflite: sha256 differs"):
        export_lib.verify(copy)
    (copy / "tflite" / "int8.tflite").unlink()
    with pytest.raises(ModelError, match="int8.tflite: missing"):
        export_lib.verify(copy / "tflite" / "int8.tflite")


def test_release_versions_follow_what_changed():
    from tfbonemet.tasks.export.model_card import release_version

    card = {"network_data_format": {"inputs": 1}, "preprocessing": {}, "classes": ["a", "b"], "task": "binary",
            "model_sha256": "aa", "source_run": "r1"}
    first = dict(card, version="1.0.0", changelog={"1.0.0": "first"})
    assert release_version(card, first, None) == ("1.0.1", {"1.0.1": "same weights, exported again", "1.0.0": "first"})
    assert release_version(dict(card, model_sha256="bb"), first, "retrained")[0] == "1.1.0"
    assert release_version(dict(card, classes=["a", "b", "c"]), first, None)[0] == "2.0.0"


def test_plain_keras_load_names_the_class_and_tfbonemet_loads_it(tiny_run_dir):
    import subprocess
    import sys

    code = ("import keras\ntry:\n    keras.models.load_model({path!r})\nexcept Exception as e:\n    print(e)\n"
            "import tfbonemet\nprint(tfbonemet.load_model({path!r}).name)").format(path=str(tiny_run_dir / "model.keras"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300).stdout
    assert "'BatchNormalization'" in out and "tfbonemet.models.batch_norm" in out  # the first custom class
    assert out.strip().splitlines()[-1] == "two_view_net"


def test_model_card_reads_evaluation_metrics_with_cis(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"auc": 0.9, "accuracy": 0.8, "n": 40}))
    (tmp_path / "eval-test").mkdir()
    (tmp_path / "eval-test" / "metrics.json").write_text(json.dumps({
        "split": "test", "n_studies": 48, "n_patients": 48, "model_sha256": "abc",
        "thresholds": {"operating_point": {"threshold": 0.4,
                                           "figures": {"auc": {"value": 0.91, "ci95": [0.85, 0.96]}}}}}))
    metrics = export_lib.run_metrics(tmp_path, "abc")
    assert metrics["test"]["figures"]["auc"]["ci95"] == [0.85, 0.96] and "statement" not in metrics
    assert export_lib.figure_text(metrics["test"]["figures"]["auc"]) == "0.910 (95% CI 0.850–0.960)"
    stale = export_lib.run_metrics(tmp_path, "another model file")
    assert "test" not in stale and "No test evaluation" in stale["statement"]
    assert stale["validation"]["figures"]["auc"] == 0.9
