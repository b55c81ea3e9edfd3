"""BS-80K-layout phantom output: folders, label lists, 8-bit masked crops, region labels, TFDS build."""
import dataclasses

import numpy as np
import pytest
import tensorflow_datasets as tfds
from click.testing import CliRunner
from PIL import Image

from tfbonemet.cli import cli
from tfbonemet.data.phantom import CLASS_NAMES, BoneScanPhantom, Lesion
from tfbonemet.data.phantom import bs80k
from tfbonemet.errors import DataError
from tfbonemet.data.provenance import PHANTOM_MARKER

N = 10
FOLDERS = ("chestRANT", "chestRPOST", "chestLANT", "chestLPOST")


def run(*args):
    return CliRunner().invoke(cli, ["data", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("bs80k") / "crops"
    result = run("phantom", out, "--layout", "bs80k", "--num-studies", N, "--seed", 3)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def study():
    return BoneScanPhantom(seed=3).study(0, label=CLASS_NAMES.index("metastasis"))


def test_folders_and_label_lists(out):
    # the crop folders, and the marker that lets `data build` use the public secret on synthetic data
    assert sorted(p.name for p in out.iterdir()) == sorted([*FOLDERS, PHANTOM_MARKER])
    listed = {}
    for folder in FOLDERS:
        lines = (out / folder / f"{folder}.txt").read_text().splitlines()
        names = [line.split()[0] for line in lines]
        assert len(lines) == N and all(line.split()[1] in ("0", "1") for line in lines)
        assert sorted(p.name for p in (out / folder).glob("*.jpg")) == sorted(names)
        listed[folder] = lines
    assert listed["chestRANT"] == listed["chestRPOST"] and listed["chestLANT"] == listed["chestLPOST"]
    assert not list(out.rglob("*.part"))


def test_crops_are_8bit_grayscale_jpegs_of_the_real_size(out):
    for path in (out / "chestRANT").glob("*.jpg"):
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "L" and image.size == (68, 170)
        assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_background_outside_the_body_is_black(study):
    masked = 0
    for region, (ant, post, _) in bs80k.crops(study).items():
        boxes = bs80k.crop_boxes(study, region)
        for view, image, mask in (("anterior", ant, study.body_mask), ("posterior", post, study.body_mask[:, ::-1])):
            assert image.dtype == np.uint8 and image.shape == bs80k.CROP_SIZE
            y0, x0, y1, x1 = boxes[view]
            outside = ~mask[y0:y1, x0:x1]
            assert outside.any() and (image[outside] == 0).all()
            assert image[~outside].mean() > 10  # the body is shown, windowed into 8 bits
            masked += outside.sum()
    assert masked > 0


def test_region_label_follows_metastases_in_that_region(study):
    right = bs80k.crop_boxes(study, "chestR")["anterior"]
    centre = ((right[0] + right[2]) // 2, right[1] + 10)
    def at(row, col):
        return Lesion("metastasis", "test", (0.0, 0.0), 0.5, 10.0, 2.0, (row - 3, col - 3, row + 3, col + 3),
                      (row - 3, col - 3, row + 3, col + 3))
    in_chest = dataclasses.replace(study, lesions=(at(*centre),))
    assert bs80k.region_label(in_chest, "chestR") == 1 and bs80k.region_label(in_chest, "chestL") == 0
    pelvis = dataclasses.replace(study, lesions=(at(*(int(v) for v in study.landmarks["hip_right"])),))
    assert bs80k.region_label(pelvis, "chestR") == 0 and bs80k.region_label(pelvis, "chestL") == 0
    other_kind = dataclasses.replace(in_chest, lesions=(dataclasses.replace(at(*centre), kind="arthritis"),))
    assert bs80k.region_label(other_kind, "chestR") == 0


def test_posterior_crop_is_the_same_region_mirrored(study):
    boxes = bs80k.crop_boxes(study, "chestR")
    width = study.anterior.shape[1]
    assert boxes["posterior"][1] == width - boxes["anterior"][3]
    assert boxes["anterior"][3] <= width // 2 + bs80k.CROP_SIZE[1] // 4  # patient's right: image left, anterior


def test_in_process_arrays_match_the_files_labels(out):
    arrays = bs80k.bs80k_arrays(BoneScanPhantom(seed=3, class_probs=bs80k.CLASS_PROBS), N)
    assert arrays["anterior"].shape == (N, *bs80k.CROP_SIZE) and arrays["anterior"].dtype == np.uint8
    listed = [int(line.split()[1]) for line in (out / "chestRANT" / "chestRANT.txt").read_text().splitlines()]
    assert arrays["label"].tolist() == listed
    first = np.asarray(Image.open(out / "chestRANT" / "00000.jpg"), np.float64)
    assert np.corrcoef(first.ravel(), arrays["anterior"][0].ravel())[0, 1] > 0.95  # JPEG, quality 90


def test_refuses_to_overwrite_a_dataset(out, tmp_path):
    with pytest.raises(DataError, match="already holds a dataset"):
        bs80k.write_bs80k([], out)
    (tmp_path / "labels.csv").write_text("file,label\n")
    result = CliRunner().invoke(cli, ["data", "phantom", str(tmp_path), "--layout", "bs80k", "--num-studies", "1"])
    assert result.exit_code != 0 and "already holds a dataset" in result.output


def test_builds_through_tfds(out, tmp_path):
    result = run("build", "--dataset", "bone_scintigraphy", "--manual-dir", out, "--data-dir", tmp_path)
    assert result.exit_code == 0, result.output
    builder = tfds.builder("bone_scintigraphy/binary", data_dir=str(tmp_path))
    assert builder.info.splits.total_num_examples == 2 * N  # chestR and chestL pairs
    positives = sum(int(line.split()[1]) for f in ("chestRANT", "chestLANT")
                    for line in (out / f / f"{f}.txt").read_text().splitlines())
    examples = [ex for split in builder.info.splits for ex in tfds.as_numpy(builder.as_dataset(split=split))]
    assert sum(int(ex["label"]) for ex in examples) == positives
    assert all(ex["anterior"].shape == (170, 68, 1) and ex["anterior"].max() <= 255 for ex in examples)
    assert len({ex["patient_hash"] for ex in examples}) == N  # one patient, both sides of the chest
