"""Preprocessing ops: mirroring, count normalisation, aspect-preserving resize, thoracic crops."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfbonemet.data import preprocess
from tfbonemet.data.phantom import BoneScanPhantom
from tfbonemet.data.sources import read_crop_boxes
from tfbonemet.errors import DataError


@pytest.fixture(scope="module")
def study():
    return BoneScanPhantom(shape=(256, 64), seed=1).study(0, label=1)


def test_mirror_posterior_flips_left_right_only(study):
    x = study.posterior[..., None].astype(np.float32)
    mirrored = preprocess.mirror_posterior(x).numpy()
    np.testing.assert_array_equal(mirrored, x[:, ::-1])
    batched = preprocess.mirror_posterior(np.stack([x, x])).numpy()
    np.testing.assert_array_equal(batched[1], x[:, ::-1])
    np.testing.assert_array_equal(preprocess.mirror_posterior(mirrored).numpy(), x)  # an involution


def test_mirrored_posterior_lines_up_with_anterior(study):
    """After mirroring, the posterior view's lesion boxes sit where the anterior's are."""
    for lesion in study.lesions:
        y0, x0, y1, x1 = lesion.box_posterior
        width = study.posterior.shape[1]
        mirrored_cols = (width - x1, width - x0)
        ant_cols = (lesion.box_anterior[1], lesion.box_anterior[3])
        assert abs(np.mean(mirrored_cols) - np.mean(ant_cols)) <= 1.0


@pytest.mark.parametrize("transform", preprocess.NORMALISATIONS)
def test_normalise_counts_range(study, transform):
    out = preprocess.normalise_counts(study.anterior[..., None], transform=transform).numpy()
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() == pytest.approx(1.0)


def test_robust_max_ignores_the_hottest_pixels():
    image = np.ones((100, 100, 1), np.float32) * 10.0
    image[0, :5] = 10_000.0  # bladder-like hot spot: 5 of 10,000 pixels
    assert preprocess.robust_max(image, percentile=99.5).numpy().item() == 10.0
    assert preprocess.robust_max(image, percentile=99.99).numpy().item() == 10_000.0
    linear = preprocess.normalise_counts(image, percentile=99.5, transform="linear").numpy()
    assert linear[50, 50, 0] == 1.0 and linear[0, 0, 0] == 1.0  # clipped, not squashing the rest


def test_normalisation_is_per_image_in_a_batch():
    batch = np.stack([np.full((8, 8, 1), 5.0), np.full((8, 8, 1), 500.0)]).astype(np.float32)
    out = preprocess.normalise_counts(batch, transform="linear").numpy()
    np.testing.assert_allclose(out, 1.0)


def test_sqrt_and_log_compress_low_counts():
    ramp = np.linspace(0, 100, 101, dtype=np.float32).reshape(1, 101, 1)
    values = {t: preprocess.normalise_counts(ramp, percentile=100, transform=t).numpy()[0, 10, 0]
              for t in preprocess.NORMALISATIONS}
    assert values["linear"] == pytest.approx(0.1)
    assert values["sqrt"] == pytest.approx(np.sqrt(0.1))
    assert values["log"] > values["sqrt"] > values["linear"]


def test_unknown_normalisation():
    with pytest.raises(ValueError, match="unknown normalisation 'gamma'"):
        preprocess.normalise_counts(np.ones((4, 4, 1)), transform="gamma")


def test_resize_with_pad_keeps_aspect_and_pads_with_zero():
    image = np.ones((100, 50, 1), np.float32)
    out = preprocess.resize_with_pad(image, 64, 64).numpy()
    assert out.shape == (64, 64, 1)
    filled = np.argwhere(out[..., 0] > 0)
    assert filled[:, 0].min() == 0 and filled[:, 0].max() == 63  # full height
    assert filled[:, 1].max() - filled[:, 1].min() + 1 == 32  # width scaled by the same 0.64
    assert out[:, :16].max() == 0 and out[:, 48:].max() == 0  # zero counts either side


def test_resize_with_pad_passes_through_matching_size():
    image = np.arange(24, dtype=np.float32).reshape(6, 4, 1)
    np.testing.assert_array_equal(preprocess.resize_with_pad(image, 6, 4).numpy(), image)


def test_crop_box_by_fraction_rounds_outwards():
    image = np.arange(100 * 20, dtype=np.float32).reshape(100, 20, 1)
    out = preprocess.crop_box(image, (0.105, 0.25, 0.42, 0.75)).numpy()
    np.testing.assert_array_equal(out, image[10:42, 5:15])
    batch = preprocess.crop_box(np.stack([image, image]), (0.0, 0.0, 0.5, 1.0)).numpy()
    assert batch.shape == (2, 50, 20, 1)


def test_crop_box_works_inside_tf_function_on_dynamic_shapes():
    crop = tf.function(lambda x: preprocess.crop_box(x, (0.5, 0.0, 1.0, 0.5)),
                       input_signature=[tf.TensorSpec([None, None, 1], tf.float32)])
    assert crop(tf.ones([40, 10, 1])).shape == (20, 5, 1)


def test_thoracic_crop_holds_the_ribs():
    """Rib metastases of several phantom bodies all fall inside the thoracic crop."""
    phantom = BoneScanPhantom(shape=(128, 32), seed=2)
    crop_rows = np.array(preprocess.THORAX_ROWS) * 128
    ribs = [lesion for i in range(30) for lesion in phantom.study(i, label=1).lesions
            if lesion.site.startswith("rib")]
    assert ribs
    for lesion in ribs:
        y0, _, y1, _ = lesion.box_anterior
        assert crop_rows[0] <= (y0 + y1) / 2 <= crop_rows[1]
    out = preprocess.thoracic_crop(np.zeros((512, 128, 1), np.float32))
    assert out.shape == (int(np.ceil(0.42 * 512)) - int(0.10 * 512), 128, 1)


def test_read_crop_boxes(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("file,ymin,xmin,ymax,xmax\na.dcm,0.1,0,0.4,1\nb.dcm,0.2,0.1,0.5,0.9\n")
    assert read_crop_boxes(path) == {"a.dcm": (0.1, 0.0, 0.4, 1.0), "b.dcm": (0.2, 0.1, 0.5, 0.9)}


@pytest.mark.parametrize("row, problem", [
    ("a.dcm,0.5,0,0.4,1", r"boxes\.csv:2: box .* not inside the image"),
    ("a.dcm,0.1,0,1.4,1", r"boxes\.csv:2: box .* not inside the image"),
    ("a.dcm,top,0,0.4,1", r"boxes\.csv:2: box values must be numbers"),
])
def test_read_crop_boxes_rejects_bad_rows(tmp_path, row, problem):
    path = tmp_path / "boxes.csv"
    path.write_text(f"file,ymin,xmin,ymax,xmax\n{row}\n")
    with pytest.raises(DataError, match=problem):
        read_crop_boxes(path)


def test_read_crop_boxes_needs_its_columns(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("file,top,bottom\na.dcm,0.1,0.4\n")
    with pytest.raises(DataError, match=r"boxes\.csv: missing column\(s\) ymin, xmin, ymax, xmax"):
        read_crop_boxes(path)
