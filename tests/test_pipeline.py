"""tf.data pipeline: model-ready batches, a training stream that replays exactly, balanced sampling, TFDS sources."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tfbonemet.data import datasets
from tfbonemet.data.pipeline import BatchConfig
from tfbonemet.errors import ConfigError, DataError
from tfbonemet.preprocessing import ScanPreprocessor
from tfbonemet.preprocessing.augment import STANDARD, make_augment

DUMMY = Path(__file__).resolve().parents[1] / "tfds_builders" / "bone_scintigraphy" / "dummy_data" / "manifest"


def counts(n=24, height=96, width=32, seed=0):
    rng = np.random.default_rng(seed)
    views = {v: rng.poisson(50, (n, height, width)).astype(np.uint16) for v in ("anterior", "posterior")}
    views["posterior"][:, :, :4] = 2000  # a hot strip on the acquired posterior's left edge
    return views, (np.arange(n) % 4 == 0).astype(np.int64)  # 1 in 4 positive


def from_arrays(views, labels, preprocessor, config, training, **options):
    """A Split over in-memory count arrays, batched through `preprocessor`."""
    import tensorflow as tf

    def records(names):
        return tf.data.Dataset.from_tensor_slices(({v: views[v][..., None] for v in names}, labels))
    n = len(labels)
    split = datasets.Split(labels, ("no_metastasis", "metastasis"), records, np.arange(n).astype(str),
                           np.arange(n).astype(str), np.tile(views["anterior"].shape[1:], (n, 1)))
    return split.batches(preprocessor, config, training, task="binary", **options)


TWO_VIEW = ScanPreprocessor("two_view", (64, 32))


def as_numpy(ds, batches):
    return [(x, y) for x, y in ds.take(batches).as_numpy_iterator()]


def test_evaluation_batches_are_named_resized_normalised_and_mirrored():
    views, labels = counts(height=128, width=64)  # resized to half, no padding
    config = BatchConfig(batch_size=8)
    x, y = next(iter(from_arrays(views, labels, TWO_VIEW, config, training=False)))
    assert set(x) == {"anterior", "posterior"} and x["anterior"].shape == (8, 64, 32, 1)
    assert float(np.min(x["anterior"])) >= 0 and float(np.max(x["anterior"])) <= 1
    posterior = np.asarray(x["posterior"])
    assert posterior[:, :, -2:].mean() > posterior[:, :, :2].mean()  # mirrored: the strip is on the right now
    np.testing.assert_array_equal(y, labels[:8])
    single = ScanPreprocessor("anterior", (64, 32))
    assert set(next(iter(from_arrays(views, labels, single, config, training=False)))[0]) == {"image"}


def test_training_stream_resumes_with_the_batches_an_uninterrupted_stream_gives():
    views, labels = counts()
    config = BatchConfig(batch_size=8)
    augment = make_augment(STANDARD.as_dict(), "sqrt")
    full = as_numpy(from_arrays(views, labels, TWO_VIEW, config, True, augment=augment, seed=3, repeat=True), 7)
    resumed = as_numpy(from_arrays(views, labels, TWO_VIEW, config, True, augment=augment, seed=3, repeat=True,
                                   skip_batches=4), 3)
    for (xa, ya), (xb, yb) in zip(full[4:], resumed):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa["anterior"], xb["anterior"])
    epoch_labels = [np.sort(np.concatenate([y for _, y in full[i:i + 3]])) for i in (0, 3)]
    np.testing.assert_array_equal(epoch_labels[0], np.sort(labels))  # each epoch is one pass over the studies
    assert not np.array_equal(full[0][1], full[3][1]) or not np.array_equal(full[1][1], full[4][1])  # reshuffled


def test_balanced_sampling_draws_classes_equally_often():
    views, labels = counts(n=40)
    config = BatchConfig(batch_size=20, balanced=True)
    small = ScanPreprocessor("two_view", (32, 16))
    ds = from_arrays(views, labels, small, config, training=True, repeat=True)
    drawn = np.concatenate([y for _, y in as_numpy(ds, 20)])
    assert labels.mean() == 0.25 and drawn.mean() == pytest.approx(0.5, abs=0.06)
    finite = from_arrays(views, labels, small, config, training=True)
    assert sum(len(y) for _, y in finite.as_numpy_iterator()) == len(labels)


@pytest.fixture(scope="module")
def bone_tfds(tmp_path_factory):
    """The bone_scintigraphy builder's dummy manifest, built into a fresh TFDS data_dir."""
    data_dir = tmp_path_factory.mktemp("tfds")
    source = SimpleNamespace(data="tfds:bone_scintigraphy/binary", data_dir=str(data_dir), manual_dir=str(DUMMY),
                             image_height=128, image_width=32, seed=0)
    datasets.tfds_builder(source.data, source.data_dir, source.manual_dir)
    return source


def test_tfds_source_streams_batches_with_task_labels(bone_tfds):
    split = datasets.open_split(bone_tfds, "train")
    assert split.class_names == ("no_metastasis", "metastasis") and len(split) > 0
    config, preprocessor = BatchConfig(batch_size=4), ScanPreprocessor("two_view", (128, 32))
    labels = np.concatenate([y for x, y in split.batches(preprocessor, config, training=False, task="binary")
                             .as_numpy_iterator()])
    np.testing.assert_array_equal(labels, split.task_labels("binary"))
    x, _ = next(iter(split.batches(preprocessor, config, training=True, task="binary",
                                   augment=make_augment(STANDARD.as_dict(), "sqrt"))))
    assert x["posterior"].shape[1:] == (128, 32, 1)
    with pytest.raises(ConfigError, match="do not fit task"):
        split.task_labels("multiclass")


def test_tfds_split_indexes_keys_patients_and_sizes_without_decoding(bone_tfds):
    split = datasets.open_split(bone_tfds, "train")
    assert len(split.keys) == len(split.patients) == len(split) and len(set(split.keys)) == len(split)
    assert all(len(h) == 16 for h in split.patients)  # pseudonyms only
    first = next(split.raw_studies(("anterior",)))[1]["anterior"]
    assert tuple(split.shapes[0]) == first.shape  # the PNG header's size is the decoded size


def test_unbuilt_or_unknown_tfds_sources_fail_with_the_reason(tmp_path):
    with pytest.raises(DataError, match="not built"):
        datasets.tfds_builder("tfds:bone_scintigraphy/binary", str(tmp_path))
    with pytest.raises(DataError, match="no_such_set"):
        datasets.tfds_builder("tfds:no_such_set", str(tmp_path))
    with pytest.raises(ConfigError, match="not supported"):
        datasets.check_source("s3://bucket")


def test_thorax_crop_feeds_only_the_thoracic_rows():
    """crop=thorax (the thoracic workflow) resizes the thoracic band, not the whole body."""
    from tfbonemet.data.phantom import BoneScanPhantom
    from tfbonemet.preprocessing.scan_preprocessor import CROPS

    study = BoneScanPhantom(shape=(256, 64), seed=2).study(0)
    cropped = ScanPreprocessor("anterior", (64, 64), crop="thorax").numpy({"anterior": study.anterior})["image"]
    y0, _, y1, _ = CROPS["thorax"]
    band = study.anterior[int(y0 * 256):int(np.ceil(y1 * 256))]
    expected = ScanPreprocessor("anterior", (64, 64)).numpy({"anterior": band})["image"]
    np.testing.assert_allclose(cropped, expected, atol=1e-6)
    whole = ScanPreprocessor("anterior", (64, 64)).numpy({"anterior": study.anterior})["image"]
    assert not np.allclose(cropped, whole, atol=1e-3)
