"""ScanPreprocessor: mirroring, count normalisation, aspect-preserving resize, crops, and the derived inverse."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfbonemet.data.phantom import BoneScanPhantom
from tfbonemet.data.sources import read_crop_boxes
from tfbonemet.errors import ConfigError, DataError
from tfbonemet.preprocessing import CROPS, ScanPreprocessor
from tfbonemet.preprocessing.scan_preprocessor import robust_max
from tfbonemet.vocab import NORMALISATIONS


def counts_only(view="anterior", size=(256, 64), **options):
    """A preprocessor that keeps counts proportional (linear, no clipping) at the source size."""
    return ScanPreprocessor("two_view" if view == "posterior" else "anterior", size, normalisation="linear",
                            percentile=100, **options)


@pytest.fixture(scope="module")
def study():
    return BoneScanPhantom(shape=(256, 64), seed=1).study(0, label=1)


def test_mirror_posterior_flips_left_right_only(study):
    x = study.posterior[..., None].astype(np.float32)
    scale = x.max()
    mirrored = counts_only("posterior").transform_view("posterior", x).numpy() * scale
    np.testing.assert_allclose(mirrored, x[:, ::-1], rtol=1e-6)
    batched = counts_only("posterior").transform_view("posterior", np.stack([x, x])).numpy() * scale
    np.testing.assert_allclose(batched[1], x[:, ::-1], rtol=1e-6)
    unmirrored = counts_only("posterior").transform_view("anterior", x).numpy() * scale
    np.testing.assert_allclose(unmirrored, x, rtol=1e-6)


def test_mirrored_posterior_lines_up_with_anterior(study):
    """After mirroring, the posterior view's lesion boxes sit where the anterior's are."""
    for lesion in study.lesions:
        y0, x0, y1, x1 = lesion.box_posterior
        width = study.posterior.shape[1]
        mirrored_cols = (width - x1, width - x0)
        ant_cols = (lesion.box_anterior[1], lesion.box_anterior[3])
        assert abs(np.mean(mirrored_cols) - np.mean(ant_cols)) <= 1.0


def normalise(x, percentile=99.5, transform="sqrt"):
    x = np.asarray(x, np.float32)
    out = ScanPreprocessor(normalisation=transform, percentile=percentile).normalise(tf.constant(
        x if x.ndim == 4 else x[np.newaxis]))
    return out if x.ndim == 4 else out[0]


@pytest.mark.parametrize("transform", NORMALISATIONS)
def test_normalise_counts_range(study, transform):
    out = normalise(study.anterior[..., None], transform=transform).numpy()
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() == pytest.approx(1.0)


def test_robust_max_ignores_the_hottest_pixels():
    image = np.ones((100, 100, 1), np.float32) * 10.0
    image[0, :5] = 10_000.0  # bladder-like hot spot: 5 of 10,000 pixels
    assert robust_max(image[None], percentile=99.5).numpy().item() == 10.0
    assert robust_max(image[None], percentile=99.99).numpy().item() == 10_000.0
    linear = normalise(image, percentile=99.5, transform="linear").numpy()
    assert linear[50, 50, 0] == 1.0 and linear[0, 0, 0] == 1.0  # clipped, not squashing the rest


def test_normalisation_is_per_image_in_a_batch():
    batch = np.stack([np.full((8, 8, 1), 5.0), np.full((8, 8, 1), 500.0)]).astype(np.float32)
    out = normalise(batch, transform="linear").numpy()
    np.testing.assert_allclose(out, 1.0)


def test_sqrt_and_log_compress_low_counts():
    ramp = np.linspace(0, 100, 101, dtype=np.float32).reshape(1, 101, 1)
    values = {t: normalise(ramp, percentile=100, transform=t).numpy()[0, 10, 0] for t in NORMALISATIONS}
    assert values["linear"] == pytest.approx(0.1)
    assert values["sqrt"] == pytest.approx(np.sqrt(0.1))
    assert values["log"] > values["sqrt"] > values["linear"]


def test_fixed_scale_keeps_a_lesion_brighter_than_healthy_bone():
    """8-bit display-scaled crops: a per-view percentile would lift a healthy patient's hottest rib to
    the level of another patient's lesion; the fixed full scale keeps them apart."""
    healthy = np.full((1, 40, 20, 1), 10.0, np.float32)
    healthy[0, 5:9, 5:9] = 30.0  # hottest normal bone
    lesion = healthy.copy()
    lesion[0, 20:24, 10:14] = 90.0  # a hot spot
    fixed = ScanPreprocessor("anterior", (40, 20), normalisation="linear", scale=255)
    percentile = ScanPreprocessor("anterior", (40, 20), normalisation="linear")
    assert fixed.normalise(lesion).numpy()[0, 21, 11, 0] == pytest.approx(90 / 255)
    assert fixed.normalise(healthy).numpy().max() == pytest.approx(30 / 255)
    assert percentile.normalise(healthy).numpy().max() == percentile.normalise(lesion).numpy().max() == 1.0
    assert "fixed full scale 255" in fixed.describe()["steps"][-1]
    assert ScanPreprocessor.from_description(fixed.describe()) == fixed


@pytest.mark.parametrize("options, problem", [
    ({"scale": 0}, "intensity scale must be a positive"),
    ({"normalisation": "gamma"}, "unknown normalisation 'gamma'"), ({"crop": "pelvis"}, "unknown crop 'pelvis'"),
    ({"views": "three"}, "unknown views 'three'"), ({"image_size": (4, 64)}, "too small"),
    ({"percentile": 120}, "percentile must be in"),
])
def test_bad_settings_are_one_clear_error(options, problem):
    with pytest.raises(ConfigError, match=problem):
        ScanPreprocessor(**options)


def test_config_round_trips_and_describes_the_contract():
    p = ScanPreprocessor("two_view", (176, 72), crop="thorax", normalisation="log", percentile=99.0)
    assert ScanPreprocessor.from_config(p.get_config()) == p
    described = p.describe()
    assert ScanPreprocessor.from_description(described) == p
    assert described["inputs"] == ["anterior", "posterior"] and described["mirror_posterior"]


def test_resize_with_pad_keeps_aspect_and_pads_with_zero():
    image = np.ones((100, 50, 1), np.float32)
    out = ScanPreprocessor("anterior", (64, 64), normalisation="linear").transform_view("anterior", image).numpy()
    assert out.shape == (64, 64, 1)
    filled = np.argwhere(out[..., 0] > 0)
    assert filled[:, 0].min() == 0 and filled[:, 0].max() == 63  # full height
    assert filled[:, 1].max() - filled[:, 1].min() + 1 == 32  # width scaled by the same 0.64
    assert out[:, :16].max() == 0 and out[:, 48:].max() == 0  # zero counts either side


def test_resize_with_pad_passes_through_matching_size():
    image = np.arange(24, dtype=np.float32).reshape(6, 4, 1) + 1
    out = counts_only(size=(8, 8)).transform_view("anterior", np.pad(image, ((1, 1), (2, 2), (0, 0))))
    np.testing.assert_allclose(out.numpy()[1:7, 2:6] * 24, image, rtol=1e-6)


def test_crop_by_fraction_rounds_outwards():
    image = np.arange(100 * 20, dtype=np.float32).reshape(100, 20, 1) + 1
    out = counts_only(size=(32, 20), crop="thorax").transform_view("anterior", image).numpy()
    np.testing.assert_allclose(out * image[10:42].max(), image[10:42], rtol=1e-6)  # rows 0.10-0.42


def test_works_inside_tf_function_on_dynamic_shapes():
    p = ScanPreprocessor("anterior", (32, 16), crop="thorax")
    run = tf.function(lambda x: p.transform_view("anterior", x),
                      input_signature=[tf.TensorSpec([None, None, 1], tf.float32)])
    assert run(tf.ones([400, 100, 1])).shape == (32, 16, 1)


def test_thoracic_crop_holds_the_ribs():
    """Rib metastases of several phantom bodies all fall inside the thoracic crop."""
    phantom = BoneScanPhantom(shape=(128, 32), seed=2)
    crop_rows = np.array(CROPS["thorax"])[[0, 2]] * 128
    ribs = [lesion for i in range(30) for lesion in phantom.study(i, label=1).lesions
            if lesion.site.startswith("rib")]
    assert ribs
    for lesion in ribs:
        y0, _, y1, _ = lesion.box_anterior
        assert crop_rows[0] <= (y0 + y1) / 2 <= crop_rows[1]


@pytest.mark.parametrize("crop", ["none", "thorax"])
@pytest.mark.parametrize("view", ["anterior", "posterior"])
@pytest.mark.parametrize("source", [(512, 128), (170, 68), (300, 301)])
def test_inverse_maps_every_model_pixel_back_to_its_source_pixel(crop, view, source):
    """One bright source pixel lands where `geometry.to_model` says, and invert_map brings it home."""
    p = ScanPreprocessor("two_view", (96, 40), crop=crop, normalisation="linear", percentile=100)
    geometry = p.geometry(view, source)
    y0, x0, y1, x1 = geometry.crop
    rng = np.random.default_rng(len(source) + source[0])
    for _ in range(3):
        spot = (int(rng.integers(y0 + 4, y1 - 4)), int(rng.integers(x0 + 4, x1 - 4)))
        image = np.zeros(source, np.float32)
        image[spot[0] - 2:spot[0] + 3, spot[1] - 2:spot[1] + 3] = 100.0
        x = p.transform_view(view, image).numpy()[..., 0]
        peak = np.array(np.unravel_index(np.argmax(x), x.shape))
        assert np.abs(geometry.to_model(np.array(spot)) - peak).max() <= 1.5
        back = p.invert_map(view, x, source)
        assert np.abs(np.array(np.unravel_index(np.argmax(back), back.shape)) - spot).max() <= max(
            3, 1.5 * (y1 - y0) / geometry.resized[0])
        np.testing.assert_allclose(geometry.to_source(geometry.to_model(np.array(spot, float))), spot, atol=1e-9)
    if crop == "thorax":
        assert p.invert_map(view, np.ones((96, 40)), source)[: y0].max() == 0  # cropped rows get no map


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


@pytest.mark.parametrize("source", [(166, 61), (171, 68), (152, 63), (169, 67)])
def test_graph_and_eager_give_the_same_input_for_real_crop_sizes(source):
    """A SavedModel traces the preprocessor; Keras' fit runs it eagerly per study: both must agree, also
    where the resized side is an integer that float32 reaches from below (166 / (166 / 168))."""
    p = ScanPreprocessor("two_view", (168, 64), normalisation="sqrt", scale=255)
    image = np.random.default_rng(0).integers(0, 60, (1, *source, 1)).astype(np.float32)
    traced = tf.function(p.transform_view, input_signature=[tf.TensorSpec([], tf.string),
                                                              tf.TensorSpec((None, None, None, 1), tf.float32)])
    np.testing.assert_allclose(traced(tf.constant("anterior"), image).numpy(),
                               p.transform_view("anterior", image).numpy(), atol=1e-6)


@pytest.mark.parametrize("normalisation", NORMALISATIONS)
def test_expand_inverts_the_range_compression(normalisation):
    """Augmentation works in scaled counts through `expand` and returns through `compress`: a round trip."""
    from tfbonemet.preprocessing.scan_preprocessor import compress, expand

    linear = tf.linspace(0.0, 1.0, 101)
    np.testing.assert_allclose(expand(compress(linear, normalisation), normalisation), linear, atol=1e-5)
    scaled = ScanPreprocessor("anterior", (8, 8), normalisation=normalisation, scale=1.0)
    np.testing.assert_allclose(scaled.normalise(tf.reshape(linear[:64], (1, 8, 8, 1))),
                               tf.reshape(compress(linear[:64], normalisation), (1, 8, 8, 1)))


@pytest.mark.parametrize("crop", CROPS)
@pytest.mark.parametrize("source", [(1024, 256), (170, 68), (333, 101)])
def test_cropped_shape_is_the_geometry_crop(crop, source):
    from tfbonemet.preprocessing import cropped_shape

    y0, x0, y1, x1 = ScanPreprocessor("anterior", (64, 32), crop=crop).geometry("anterior", source).crop
    assert cropped_shape(crop, source) == (y1 - y0, x1 - x0)


def test_batch_stacks_each_study_as_numpy_prepares_it(study):
    preprocessor = ScanPreprocessor("two_view", (64, 32))
    studies = [{"anterior": study.anterior, "posterior": study.posterior},
               {"anterior": study.anterior[:200], "posterior": study.posterior[:200]}]  # sizes may differ
    batch = preprocessor.batch(studies)
    for name in preprocessor.input_names:
        assert batch[name].shape == (2, 64, 32, 1)
        for i, one in enumerate(studies):
            np.testing.assert_array_equal(batch[name][i], preprocessor.numpy(one)[name])


def test_as_anterior_puts_a_posterior_pixel_where_the_model_sees_it():
    """A posterior source pixel and the pixel `as_anterior` moves it to land on one model-input pixel."""
    preprocessor = ScanPreprocessor("two_view", (64, 16))
    source = np.zeros((256, 64), np.float32)
    source[100, 10] = 1.0
    moved = np.argwhere(preprocessor.as_anterior("posterior", source))[0]
    np.testing.assert_allclose(preprocessor.geometry("posterior", source.shape).to_model([100, 10]),
                               preprocessor.geometry("anterior", source.shape).to_model(moved))
    np.testing.assert_array_equal(preprocessor.as_anterior("anterior", source), source)
