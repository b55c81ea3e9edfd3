"""`tfbonemet data phantom` and `tfbonemet data build`: outputs, one-line errors, atomic failed builds."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from click.testing import CliRunner

from tfbonemet.cli import cli
from tfbonemet.io.dicom import read_studies

CHEST_DUMMY = Path(__file__).parents[1] / "tfds_builders" / "chest_xray" / "dummy_data" / "folders"


def run(*args):
    return CliRunner().invoke(cli, ["data", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    result = run("phantom", out, "--num-studies", 12, "--size", 64, 16, "--split-views")
    assert result.exit_code == 0, result.output
    return out


def test_phantom_writes_dicom_and_labels(phantom_dir):
    with open(phantom_dir / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 24  # one row per file, two files per study
    studies = read_studies([phantom_dir])
    assert len(studies) == 12 and all(s.anterior.shape == (64, 16) and s.is_two_view for s in studies)
    assert (phantom_dir / "lesions.json").is_file()


def test_phantom_rejects_too_small_size(tmp_path):
    result = run("phantom", tmp_path, "--num-studies", 1, "--size", 32, 16)
    assert result.exit_code == 2 and "too small" in result.output


@pytest.mark.parametrize("config, classes", [("binary", 2), ("multiclass", 4)])
def test_build_bone_scintigraphy(phantom_dir, tmp_path, config, classes):
    result = run("build", "--dataset", "bone_scintigraphy", "--manual-dir", phantom_dir,
                 "--data-dir", tmp_path, "--config", config)
    assert result.exit_code == 0, result.output
    assert f"Built bone_scintigraphy/{config}/1.0.0" in result.output
    builder = tfds.builder(f"bone_scintigraphy/{config}", data_dir=str(tmp_path))
    assert builder.info.features["label"].num_classes == classes
    assert builder.info.splits.total_num_examples == 12
    assert not (tmp_path / "downloads").exists()  # nothing is downloaded, so no empty download folder either
    counts = {s.anterior.tobytes(): s.posterior for s in read_studies([phantom_dir])}
    for example in tfds.as_numpy(builder.as_dataset(split="train").take(3)):
        assert example["anterior"].dtype == np.uint16 and example["anterior"].shape == (64, 16, 1)
        np.testing.assert_array_equal(example["posterior"][..., 0], counts[example["anterior"][..., 0].tobytes()])


def test_build_chest_xray(tmp_path):
    result = run("build", "--dataset", "chest_xray", "--manual-dir", CHEST_DUMMY, "--data-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert "train 6" in result.output and "validation 2" in result.output and "test 4" in result.output


def test_config_only_for_bone_scintigraphy(tmp_path):
    result = run("build", "--dataset", "chest_xray", "--manual-dir", CHEST_DUMMY, "--data-dir", tmp_path,
                 "--config", "multiclass")
    assert result.exit_code == 2 and "--config applies to bone_scintigraphy" in result.output


def test_failed_build_is_one_line_and_leaves_no_dataset(phantom_dir, tmp_path):
    broken = tmp_path / "source"
    broken.mkdir()
    for path in phantom_dir.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    victim = sorted(broken.glob("*_POST.dcm"))[-1]
    victim.write_bytes(victim.read_bytes()[:-300])  # truncated pixel data: fails while writing records
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["data", "build", "--dataset", "bone_scintigraphy", "--manual-dir",
                                      str(broken), "--data-dir", str(out)])
    assert result.exit_code == 1
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and f"{victim}: cannot decode pixel data" in error[0]
    assert not list(out.rglob("*.tfrecord*")) and not list(out.rglob("1.0.0"))
    assert not tfds.builder("bone_scintigraphy/binary", data_dir=str(out)).is_prepared()
    assert not (out / "downloads").exists()


def test_skip_bad_builds_the_rest_and_lists_what_was_skipped(phantom_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TFBONEMET_SECRET", "test-site-secret")  # a changed file: no longer the phantom's own
    source = tmp_path / "source"
    source.mkdir()
    for path in phantom_dir.iterdir():
        (source / path.name).write_bytes(path.read_bytes())
    victim = sorted(source.glob("*_ANTE.dcm"))[0]
    victim.write_bytes(b"garbage")
    result = run("build", "--dataset", "bone_scintigraphy", "--manual-dir", source, "--data-dir", tmp_path / "out",
                 "--skip-bad")
    assert result.exit_code == 0, result.output
    partner = victim.with_name(victim.name.replace("ANTE", "POST"))
    assert "Skipped 2 bad input(s):" in result.output
    assert f"{victim}: not a readable DICOM file" in result.output
    assert f"{partner}: study has no anterior view" in result.output
    builder = tfds.builder("bone_scintigraphy/binary", data_dir=str(tmp_path / "out"))
    assert builder.info.splits.total_num_examples == 11


def test_build_empty_directory(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["data", "build", "--dataset", "bone_scintigraphy", "--manual-dir", str(empty),
                                      "--data-dir", str(tmp_path / "out")])
    assert result.exit_code == 1 and f"Error: {empty}: is empty" in result.output


@pytest.mark.slow
def test_build_full_size_phantom_round_trip(tmp_path):
    """Whole-body 1024x256 views survive the build bit for bit."""
    source = tmp_path / "source"
    assert run("phantom", source, "--num-studies", 10).exit_code == 0
    result = run("build", "--dataset", "bone_scintigraphy", "--manual-dir", source, "--data-dir", tmp_path / "out",
                 "--config", "multiclass")
    assert result.exit_code == 0, result.output
    truth = {s.anterior.tobytes(): s.posterior for s in read_studies([source])}
    builder = tfds.builder("bone_scintigraphy/multiclass", data_dir=str(tmp_path / "out"))
    examples = [ex for split in builder.info.splits for ex in tfds.as_numpy(builder.as_dataset(split=split))]
    assert len(examples) == 10
    for example in examples:
        assert example["anterior"].shape == (1024, 256, 1)
        np.testing.assert_array_equal(example["posterior"][..., 0], truth[example["anterior"][..., 0].tobytes()])
