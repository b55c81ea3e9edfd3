"""`tfbonemet predict` inputs: DICOM studies and folders, PNG/JPEG files, output formats, and each bad input."""
from __future__ import annotations

import csv
import io
import json
import os

import numpy as np
import pydicom.data
import pytest
from click.testing import CliRunner
from PIL import Image

from tfbonemet.cli import cli
from tfbonemet.data.phantom import BoneScanPhantom
from tfbonemet.data.phantom_dicom import write_dataset
from tfbonemet.errors import DataError, ModelError
from tfbonemet.io.integrity import record
from tfbonemet.tasks.predict import discover, iter_predictions, load_runner

JPEG2000 = pydicom.data.get_testdata_file("JPEG2000.dcm")


@pytest.fixture(scope="module")
def runner(tiny_run_dir):
    return load_runner(tiny_run_dir)


@pytest.fixture(scope="module")
def phantom_dicom(tmp_path_factory):
    """Three multi-frame studies and two studies written as one file per view."""
    root = tmp_path_factory.mktemp("dicom")
    write_dataset(BoneScanPhantom(shape=(128, 32), seed=1).studies(3), root / "multiframe")
    write_dataset(BoneScanPhantom(shape=(160, 40), seed=2).studies(2), root / "split", split_views=True)
    return root


def test_dicom_folders_grouped_by_study_in_batches(runner, phantom_dicom):
    studies = discover([phantom_dicom])
    assert len(studies) == 5
    done = []
    rows = list(iter_predictions(runner, studies, batch_size=2, on_batch=done.append))
    assert done == [2, 2, 1] and len(rows) == 5
    assert all(len(r["study"]) == 16 and r["label"] in runner.info.classes for r in rows)
    np.testing.assert_allclose([r["p_no_metastasis"] + r["p_metastasis"] for r in rows], 1.0, atol=1e-5)
    # same studies one at a time: batching does not change an answer
    single = list(iter_predictions(runner, studies, batch_size=1))
    assert [r["study"] for r in single] == [r["study"] for r in rows]
    np.testing.assert_allclose([r["p_metastasis"] for r in single], [r["p_metastasis"] for r in rows], atol=1e-5)


def test_cli_writes_csv_and_json(tiny_run_dir, phantom_dicom, tmp_path):
    for name in ("out.csv", "out.json"):
        result = CliRunner().invoke(cli, ["predict", str(tiny_run_dir), str(phantom_dicom / "multiframe"),
                                          "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert [r["study"] for r in rows] == [r["study"] for r in json.loads((tmp_path / "out.json").read_text())]
    assert set(rows[0]) == {"study", "label", "p_no_metastasis", "p_metastasis", "uncertainty"}
    assert all(0 <= float(r["uncertainty"]) <= 1 for r in rows)
    text = (tmp_path / "out.csv").read_text()
    assert "PHANTOM" not in text and "FAKE" not in text and "1.2.826" not in text  # no identifiers or UIDs


def test_png_views_paired_by_name(runner, phantom_dicom, tmp_path):
    study = BoneScanPhantom(shape=(128, 32), seed=5).study(0)
    Image.fromarray(study.anterior).save(tmp_path / "case7_ant.png")
    Image.fromarray(study.posterior).save(tmp_path / "case7_post.png")
    [row] = iter_predictions(runner, discover([tmp_path]))
    assert row["study"] == "case7"
    expected = runner.predict([{"anterior": study.anterior.astype(np.float32),
                                "posterior": study.posterior.astype(np.float32)}])
    assert row["p_metastasis"] == pytest.approx(float(expected[0, 1]), abs=1e-5)


def test_explain_writes_gradcam_overlays(runner, phantom_dicom, tmp_path):
    rows = list(iter_predictions(runner, discover([phantom_dicom / "multiframe"]), explain_dir=tmp_path))
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(f"{r['study']}-gradcam.png" for r in rows)


def one_line_error(args) -> str:
    result = CliRunner().invoke(cli, ["predict", *map(str, args)])
    assert result.exit_code == 1 and result.output.startswith("Error: "), result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    return result.output


def test_bad_models_one_line(phantom_dicom, tmp_path):
    assert "no such model" in one_line_error([tmp_path / "nope", phantom_dicom])
    assert "neither a run directory" in one_line_error([tmp_path, phantom_dicom])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "saved_model.pb").write_bytes(b"garbage")
    (tmp_path / "broken" / "metadata.json").write_text(json.dumps({"preprocessing": {
        "views": "two_view", "image_size": [8, 8], "normalisation": "sqrt", "percentile": 99.5},
        "classes": ["a", "b"], "threshold": 0.5, "integrity": record(tmp_path / "broken")}))
    assert "cannot load SavedModel" in one_line_error([tmp_path / "broken", phantom_dicom])
    (tmp_path / "m.tflite").write_bytes(b"garbage")
    (tmp_path / "metadata.json").write_text((tmp_path / "broken" / "metadata.json").read_text())
    assert "not a TFLite model" in one_line_error([tmp_path / "m.tflite", phantom_dicom])


def test_bad_inputs_name_the_file(runner, tiny_run_dir, phantom_dicom, tmp_path):
    with pytest.raises(DataError, match="no anterior or posterior view"):
        list(iter_predictions(runner, discover([JPEG2000])))
    anterior_only = phantom_dicom / "split" / sorted(p.name for p in (phantom_dicom / "split").glob("*_ANTE.dcm"))[0]
    message = one_line_error([tiny_run_dir, anterior_only])
    assert "no posterior view" in message and anterior_only.name in message
    rgb = np.zeros((64, 16, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    message = one_line_error([tiny_run_dir, tmp_path / "colour.png"])
    assert "colour.png" in message and "is a colour image" in message
    lossy = pydicom.data.get_testdata_file("JPEG-lossy.dcm")
    assert "JPEG-lossy.dcm" in one_line_error([tiny_run_dir, lossy])


def test_skip_bad_goes_on(runner, phantom_dicom):
    lossy = pydicom.data.get_testdata_file("JPEG-lossy.dcm")
    skipped = []
    rows = list(iter_predictions(runner, discover([lossy, phantom_dicom / "multiframe"]), skip_bad=True,
                                 on_skip=skipped.append))
    assert len(rows) == 3 and len(skipped) == 1 and "JPEG-lossy.dcm" in skipped[0]


def test_explain_needs_keras(tmp_path):
    class Lite:
        kind = "tflite"
        info = None
    with pytest.raises(ModelError, match="needs the Keras model"):
        next(iter_predictions(Lite(), [], explain_dir=tmp_path))


def test_same_stem_in_two_folders_gives_two_keys(runner, tmp_path):
    study = BoneScanPhantom(shape=(128, 32), seed=6).study(0)
    for folder in ("site-a", "site-b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(study.anterior).save(tmp_path / folder / "case1_ant.png")
        Image.fromarray(study.posterior).save(tmp_path / folder / "case1_post.png")
    rows = list(iter_predictions(runner, discover([tmp_path / "site-a", tmp_path / "site-b"])))
    assert sorted(r["study"] for r in rows) == ["site-a/case1", "site-b/case1"]


def test_grey_saved_as_rgb_predicts_as_grey(runner, tmp_path):
    study = BoneScanPhantom(shape=(128, 32), seed=7).study(0)
    grey = {view: (getattr(study, view) // 64).clip(0, 255).astype(np.uint8) for view in ("anterior", "posterior")}
    for folder, mode in (("grey", "L"), ("rgb", "RGB")):
        (tmp_path / folder).mkdir()
        for view, short in (("anterior", "ant"), ("posterior", "post")):
            Image.fromarray(grey[view]).convert(mode).save(tmp_path / folder / f"s_{short}.png")
    [as_grey] = iter_predictions(runner, discover([tmp_path / "grey"]))
    [as_rgb] = iter_predictions(runner, discover([tmp_path / "rgb"]))
    assert as_rgb["p_metastasis"] == as_grey["p_metastasis"]


def test_undecodable_file_name_is_written_to_the_output(tiny_run_dir, tmp_path):
    study = BoneScanPhantom(shape=(128, 32), seed=8).study(0)
    folder = tmp_path / "in"
    folder.mkdir()
    stem = os.fsdecode(b"caf\xe9")  # Latin-1 bytes: not UTF-8
    Image.fromarray(study.anterior).save(folder / f"{stem}_ant.png")
    Image.fromarray(study.posterior).save(folder / f"{stem}_post.png")
    out = tmp_path / "new" / "sub" / "p.csv"  # parents created
    result = CliRunner().invoke(cli, ["predict", str(tiny_run_dir), str(folder), "-o", str(out)])
    assert result.exit_code == 0, result.output
    [row] = csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")))
    assert row["study"] == "caf\\xe9"
    assert oct(out.stat().st_mode & 0o777) == "0o644"
