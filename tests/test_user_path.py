"""The path a real user takes, on data shaped like theirs, and a short fit that must learn.

BS-80K-layout phantom crops -> `data build` -> `fit` (defaults: input size from the data) ->
`predict` on a held-out folder -> `evaluate`; and an easy phantom on which a few epochs of
the default model clearly beat chance.
"""
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tfbonemet.cli import cli


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def listed_labels(folder):
    """BS-80K label lists: study key -> 1 if either view's list says metastasis.

    `predict` keys a study by its file stem, prefixed by the region when a folder holds several.
    """
    regions = sorted(p.name[:-3] for p in folder.glob("*ANT"))
    labels = {}
    for region in regions:
        for view in ("ANT", "POST"):
            for line in (folder / f"{region}{view}" / f"{region}{view}.txt").read_text().splitlines():
                name, label = line.split()
                key = name.rsplit(".", 1)[0] if len(regions) == 1 else f"{region}-{name.rsplit('.', 1)[0]}"
                labels[key] = max(labels.get(key, 0), int(label))
    return labels


@pytest.fixture(scope="module")
def bs80k_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    train, held_out, tfds_dir = root / "train", root / "held_out", root / "tfds"
    run("data", "phantom", train, "--layout", "bs80k", "--num-studies", 48, "--size", 512, 128, "--seed", 1,
        "--difficulty", "easy")
    run("data", "phantom", held_out, "--layout", "bs80k", "--num-studies", 10, "--size", 512, 128, "--seed", 2,
        "--difficulty", "easy")
    run("data", "build", "--dataset", "bone_scintigraphy", "--manual-dir", train, "--data-dir", tfds_dir)
    here = os.getcwd()
    os.chdir(root)  # a relative --data-dir, as users type it; later commands run from elsewhere
    try:
        output = run("fit", "--data", "tfds:bone_scintigraphy/binary", "--data-dir", "tfds", "--epochs", 2,
                     "--batch-size", 8, "--output-dir", root / "runs", "--run-name", "crops")
    finally:
        os.chdir(here)
    return root, root / "runs" / "crops", held_out, output


def test_fit_reads_crops_at_their_own_size(bs80k_run):
    _, run_dir, _, output = bs80k_run
    config = json.loads((run_dir / "config.json").read_text())
    # 512x128 whole-body phantoms give 85x34 crops: read as they are (multiples of 8), not upsampled
    assert (config["image_height"], config["image_width"]) == (80, 32)
    assert "Input size 80x32 per view, from the data's typical study size 85x34" in output
    # the run finds its data from any working directory, and keeps no source folder (a patient's name?)
    assert Path(config["data_dir"]).is_absolute() and "manual_dir" not in config
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 < metrics["operating_point"]["threshold"] < 1.0


def test_predict_labels_every_held_out_patient_with_the_stored_threshold(bs80k_run):
    root, run_dir, held_out, _ = bs80k_run
    out = root / "held_out.csv"
    run("predict", run_dir, held_out, "-o", out)
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    labels = listed_labels(held_out)
    assert sorted(r["study"] for r in rows) == sorted(labels)
    threshold = json.loads((run_dir / "metrics.json").read_text())["operating_point"]["threshold"]
    p = np.array([float(r["p_metastasis"]) for r in rows])
    assert ((p >= 0) & (p <= 1)).all()
    assert [r["label"] == "metastasis" for r in rows] == list(p >= threshold)


def test_evaluate_writes_per_study_predictions_and_figures(bs80k_run):
    root, run_dir, _, _ = bs80k_run
    out = root / "evaluation"
    run("evaluate", run_dir, "--output-dir", out, "--bootstrap", 20)
    with (out / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(0.0 <= float(r["p_metastasis"]) <= 1.0 for r in rows)
    assert len({r["study"] for r in rows}) == len(rows)


def test_a_short_fit_on_the_easy_phantom_beats_chance(tmp_path):
    run("fit", "--phantom-difficulty", "easy", "--num-studies", 160, "--image-size", 256, 64, "--epochs", 8,
        "--output-dir", tmp_path, "--run-name", "easy")
    metrics = json.loads((tmp_path / "easy" / "metrics.json").read_text())
    assert metrics["auc"] >= 0.8, metrics
