"""BS-80K-layout phantom output: folders, label lists, 8-bit masked crops, region labels, TFDS build."""
import dataclasses
import json

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
            assert image[~outside].mean() > 3  # the body is shown, dark as real crops are (bs80k_reference.json)
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
    assert np.abs(first - arrays["anterior"][0]).mean() < 2.5  # JPEG at quality 90 on dark, noisy crops


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


@pytest.fixture(scope="module")
def calibration_sample():
    """120 phantom patients' right-chest crops, both views, as `tfbonemet data phantom --layout bs80k` draws them."""
    arrays = bs80k.bs80k_arrays(BoneScanPhantom(seed=11, class_probs=bs80k.CLASS_PROBS), 120)
    images = [*arrays["anterior"], *arrays["posterior"]]
    return bs80k.crop_statistics(images, [*arrays["label"], *arrays["label"]]), arrays["label"].mean()


def test_phantom_crops_match_the_real_development_statistics(calibration_sample):
    """The phantom's 8-bit crops look like the real BS-80K crops (bs80k_reference.json, aggregates of
    the 2,340-patient development part): dark, faint ribs, lesions a few dozen bright pixels."""
    phantom, positive_patients = calibration_sample
    real = json.loads(bs80k.REFERENCE_STATS.read_text())
    for name in ("body_q50", "body_q90", "body_q99", "max"):  # display window: within 25 %
        assert phantom[name]["median"] == pytest.approx(real[name]["median"], rel=0.25), name
    # the real crops' black mask is larger (jagged edges, dark lung): within 0.2 of its share
    assert phantom["dark_fraction"]["median"] == pytest.approx(real["dark_fraction"]["median"], abs=0.2)
    # lesion contrast: positives' brightest pixel above negatives' (real: 70 against 52), and more hot pixels
    ratio = phantom["max_by_class"]["positive"]["median"] / phantom["max_by_class"]["negative"]["median"]
    real_ratio = real["max_by_class"]["positive"]["median"] / real["max_by_class"]["negative"]["median"]
    assert 1.1 <= ratio <= real_ratio + 0.2
    assert phantom["hot_pixels"]["positive"]["p90"] >= 0.5 * real["hot_pixels"]["positive"]["p90"]
    assert phantom["hot_pixels"]["positive"]["median"] > phantom["hot_pixels"]["negative"]["median"]
    # share of patients with a right-chest metastasis: real 198 of 2,340 (8.5 %)
    assert positive_patients == pytest.approx(real["positive_patients"] / real["patients"], abs=0.05)
