"""One entry point from a run configuration to the studies of a split, whatever the data source.

Sources: `phantom` (the built-in synthetic set) and `tfds:NAME[/CONFIG]`, a TFDS build found in
`data_dir` (prepared from `manual_dir` on first use). Every task streams a split's raw records
through the run's ScanPreprocessor: nothing is resized or rounded before it.
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from tfbonemet.data import synthetic
from tfbonemet.data.pipeline import BatchConfig, batch_pipeline
from tfbonemet.errors import ConfigError, DataError
from tfbonemet.preprocessing import ScanPreprocessor
from tfbonemet.vocab import ANTERIOR, CLASS_NAMES, POSTERIOR, SPLITS, label_map

TFDS_PREFIX = "tfds:"
PHANTOM_SIZE = (512, 128)  # the built-in set's whole-body views unless an image size is asked for


@dataclasses.dataclass
class Split:
    """One split of a source: per-study labels (the dataset's own classes), keys, patients, raw records.

    `records(views)` yields unbatched `({view: counts (H, W, 1)}, label)` in the order of `labels`;
    `batches` runs them through the run's preprocessor and the tf.data pipeline. `keys` are the
    study keys `predict` gives the same study; `patients` the pseudonymous patient keys.
    """

    labels: np.ndarray
    class_names: tuple[str, ...]
    records: Callable[[tuple[str, ...]], tf.data.Dataset]
    keys: np.ndarray
    patients: np.ndarray
    shapes: np.ndarray  # (N, 2) source height and width of the first view
    lesion_boxes: list | None = None  # per study: metastasis boxes {view: (y0, x0, y1, x1) px} (phantom only)

    def __len__(self) -> int:
        return len(self.labels)

    def task_labels(self, task: str | None) -> np.ndarray:
        return label_map(self.class_names, task)[self.labels]

    def batches(self, preprocessor: ScanPreprocessor, config: BatchConfig, training: bool, task: str | None = None,
                augment=None, seed: int = 0, repeat: bool = False, skip_batches: int = 0) -> tf.data.Dataset:
        table = tf.constant(label_map(self.class_names, task))
        records = self.records(preprocessor.source_views).map(
            lambda x, y: (x, tf.gather(table, y)), num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=config.deterministic)
        return batch_pipeline(records, preprocessor, config, training, augment=augment, seed=seed,
                              labels=self.task_labels(task), repeat=repeat, skip_batches=skip_batches)

    def raw_studies(self, views: tuple[str, ...]):
        """(index, {view: (H, W) float32 counts}) per study, in order: the source frame explain draws on."""
        for index, (features, _) in enumerate(self.records(views).as_numpy_iterator()):
            yield index, {v: np.asarray(a[..., 0], np.float32) for v, a in features.items()}

    def subset(self, keep: np.ndarray) -> "Split":
        """The studies where boolean `keep` is True, in order (cross-validation folds)."""
        keep = np.asarray(keep, bool)
        mask = tf.constant(keep)

        def kept(index, element):
            return tf.gather(mask, index)

        def study(index, record):
            return record

        def records(views):
            # a filter hides the length; stated again, Keras knows where an epoch over the subset ends
            ds = self.records(views).enumerate().filter(kept).map(study)
            return ds.apply(tf.data.experimental.assert_cardinality(int(keep.sum())))
        boxes = None if self.lesion_boxes is None else [b for b, k in zip(self.lesion_boxes, keep) if k]
        return Split(self.labels[keep], self.class_names, records, self.keys[keep], self.patients[keep],
                     self.shapes[keep], boxes)

    def peak_value(self, views: tuple[str, ...], studies: int = 64) -> float:
        """The brightest pixel of `views` in the first `studies` studies: tells 8-bit images from counts."""
        peak = 0.0
        for features, _ in self.records(views).take(studies).as_numpy_iterator():
            peak = max([peak, *(float(np.max(v)) for v in features.values())])
        return peak

    def typical_size(self) -> tuple[int, int]:
        """The median source height and width: the size a model reads this data at without upsampling."""
        if not len(self):
            raise DataError("the split holds no studies to size the model input from")
        return tuple(int(v) for v in np.median(self.shapes, axis=0))


def concatenate(splits: list[Split]) -> Split:
    """Several splits of one source as one (every study of a source, for cross-validation)."""
    first = splits[0]

    def records(views):
        ds = first.records(views)
        for other in splits[1:]:
            ds = ds.concatenate(other.records(views))
        return ds
    boxes = None if any(s.lesion_boxes is None for s in splits) else [b for s in splits for b in s.lesion_boxes]
    return Split(np.concatenate([s.labels for s in splits]), first.class_names, records,
                 np.concatenate([s.keys for s in splits]), np.concatenate([s.patients for s in splits]),
                 np.concatenate([s.shapes for s in splits]), boxes)


def from_studies(studies: synthetic.StudyArrays) -> Split:
    """A Split over in-memory studies (the phantom set, or one fold of it)."""
    def records(views):
        arrays = {ANTERIOR: studies.anterior[..., None], POSTERIOR: studies.posterior[..., None]}
        return tf.data.Dataset.from_tensor_slices(({v: arrays[v] for v in views}, studies.labels))
    boxes = [{ANTERIOR: [tuple(b) for b in found]} for found in studies.lesion_boxes]
    shapes = np.tile(np.array(studies.anterior.shape[1:3]), (len(studies), 1))
    return Split(np.asarray(studies.labels, np.int64), tuple(CLASS_NAMES), records, np.asarray(studies.study_key),
                 np.asarray(studies.patient_hash), shapes, boxes)


def open_split(config, split: str) -> Split:
    """The `split` of a FitConfig-like config's source (data, data_dir, manual_dir, seed, sizes)."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    check_source(config.data)
    if config.data == "phantom":
        return from_studies(load_split(config, split, log=lambda *_: None))
    builder = tfds_builder(config.data, config.data_dir, config.manual_dir)
    split = _tfds_split(builder, split)
    check_shards(builder, split)
    names = tuple(builder.info.features["label"].names)

    def records(views):
        missing = [v for v in views if v not in builder.info.features]
        if missing:
            raise ConfigError(f"TFDS dataset {builder.info.full_name} has no feature {', '.join(missing)} "
                              f"needed by the model's inputs")
        return builder.as_dataset(split=split, shuffle_files=False).map(
            lambda e: ({v: e[v] for v in views}, e["label"]), num_parallel_calls=tf.data.AUTOTUNE)
    labels, keys, patients, shapes = _tfds_index(builder, split)
    return Split(labels, names, records, keys, patients, shapes)


def tfds_name(data: str) -> str | None:
    """`tfds:bone_scintigraphy/binary` -> `bone_scintigraphy/binary`; None for other sources."""
    if not data.startswith(TFDS_PREFIX):
        return None
    name = data[len(TFDS_PREFIX):]
    if not name:
        raise ConfigError(f"data source {data!r} names no dataset; write tfds:NAME[/CONFIG]")
    return name


def check_source(data: str) -> None:
    if data != "phantom" and tfds_name(data) is None:
        raise ConfigError(f"data source {data!r} is not supported; use 'phantom' or 'tfds:NAME[/CONFIG]'")


def tfds_builder(data: str, data_dir: str | None, manual_dir: str | None = None):
    """The TFDS builder for a `tfds:` source, prepared (from manual_dir when given) and ready to read."""
    import tensorflow_datasets as tfds

    name = tfds_name(data)
    module = name.split("/")[0]
    try:  # register the project's own builders so their configs resolve by name
        importlib.import_module(f"tfds_builders.{module}.{module}_dataset_builder")
    except ImportError:
        pass  # a dataset TFDS itself knows, or one read back from its prepared files
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as exc:  # TFDS raises several types for an unknown or unreadable dataset
        damaged = damaged_description(name, data_dir)
        if damaged:
            raise damaged from None
        raise DataError(f"cannot open TFDS dataset {name!r} in {data_dir or 'the default data_dir'}: "
                        f"{str(exc).splitlines()[0]}") from None
    if not builder.is_prepared():
        if not manual_dir:
            raise DataError(f"TFDS dataset {name!r} is not built in {data_dir or 'the default data_dir'}; "
                            f"pass the folder of source files as manual_dir (--manual-dir) to build it")
        check_not_empty(manual_dir, name)
        try:
            prepare(builder, manual_dir)
        except Exception as exc:
            raise DataError(f"cannot build TFDS dataset {name!r} from {manual_dir}: "
                            f"{str(exc).splitlines()[0]}") from None
    return builder


def prepare(builder, manual_dir) -> None:
    """Build `builder` from the source files in `manual_dir`. Nothing is downloaded, so TFDS's download
    folder lives in a temporary folder: a build, finished or failed, leaves no empty `downloads/` behind."""
    import tempfile

    import tensorflow_datasets as tfds

    with tempfile.TemporaryDirectory(prefix="tfbonemet-tfds-downloads-") as downloads:
        builder.download_and_prepare(download_dir=downloads,
                                     download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


def check_not_empty(manual_dir, name: str) -> None:
    """An empty source folder is named as such (TFDS would stop with its manual-download instructions)."""
    if not any(Path(manual_dir).iterdir()):
        raise DataError(f"{manual_dir}: is empty: nothing to build {name} from")


def damaged_description(name: str, data_dir: str | None) -> DataError | None:
    """The error naming a built version's dataset_info.json under `data_dir` that is not valid JSON or lacks
    its splits (a TFDS build always writes both) and how to rebuild it; None when every one reads."""
    import json

    import tensorflow_datasets as tfds

    root = Path(data_dir or tfds.core.constants.DATA_DIR).expanduser()
    folder = root.joinpath(*name.split("/"))
    for path in sorted([*folder.glob("*/dataset_info.json"), *folder.glob("*/*/dataset_info.json")]):
        try:
            info = json.loads(path.read_bytes())
            if isinstance(info, dict) and isinstance(info.get("splits"), list):
                continue
        except (ValueError, OSError):
            pass
        return DataError(f"{path}: damaged dataset description (not valid JSON, or without the splits a build "
                         f"writes); rebuild it: remove {path.parent} and run `tfbonemet data build --dataset "
                         f"{name.split('/')[0]} --manual-dir SOURCE --data-dir {root}` again")
    return None


def _tfds_split(builder, split: str) -> str:
    if split not in builder.info.splits:
        raise DataError(f"TFDS dataset {builder.info.full_name} has no split {split!r} (its "
                        f"{Path(builder.data_dir) / 'dataset_info.json'} lists {', '.join(builder.info.splits)}); "
                        f"if a build of it was damaged, {_rebuild(builder)}")
    return split


def check_shards(builder, split: str) -> None:
    """Every record file of `split` is whole (each record's checksum holds) and holds as many records as
    dataset_info.json says: a damaged build is refused before anything trains on it or is scored on it."""
    info = builder.info.splits[split]
    for path, expected in zip(info.filepaths, info.shard_lengths):
        path = Path(str(path))
        if not path.exists():
            raise DataError(f"{path}: record file missing, though {Path(builder.data_dir) / 'dataset_info.json'} "
                            f"lists it; {_rebuild(builder)}")
        try:
            found = sum(1 for _ in tf.data.TFRecordDataset(str(path)))
        except tf.errors.OpError as exc:
            reason = str(exc.message).split("}}")[-1].split("[Op:")[0].replace("' failed with", ":").strip()
            raise DataError(f"{path}: damaged record file ({reason or type(exc).__name__}); {_rebuild(builder)}") from None
        if found != expected:
            raise DataError(f"{path}: holds {found} records where {Path(builder.data_dir) / 'dataset_info.json'} "
                            f"says {expected}: the build no longer matches its description; {_rebuild(builder)}")


def _rebuild(builder) -> str:
    root = Path(builder.data_dir).parents[len(builder.info.full_name.split("/")) - 1]
    return (f"rebuild it: remove {builder.data_dir} and run `tfbonemet data build --dataset {builder.name} "
            f"--manual-dir SOURCE --data-dir {root}` again")


def _tfds_index(builder, split: str):
    """Labels, study keys, patient keys and image sizes in record order, without decoding any image."""
    import tensorflow_datasets as tfds

    images = [n for n, f in builder.info.features.items() if isinstance(f, tfds.features.Image)]
    skip = {name: tfds.decode.SkipDecoding() for name in images}
    first = images[0]
    labels, keys, patients, shapes = [], [], [], []
    for e in builder.as_dataset(split=split, shuffle_files=False, decoders=skip).as_numpy_iterator():
        labels.append(int(e["label"]))
        keys.append(e["study_hash"].decode() if "study_hash" in e else str(len(keys)))
        patients.append(e["patient_hash"].decode() if "patient_hash" in e else keys[-1])
        shapes.append(_png_size(e[first]))
    return (np.array(labels, np.int64), np.array(keys), np.array(patients),
            np.array(shapes, np.int64).reshape(-1, 2))


def _png_size(encoded: bytes) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk (TFDS stores images as PNG) without decoding pixels."""
    if encoded[:8] != b"\x89PNG\r\n\x1a\n":
        shape = tf.io.decode_image(encoded, expand_animations=False).shape
        return int(shape[0]), int(shape[1])
    return int.from_bytes(encoded[20:24], "big"), int.from_bytes(encoded[16:20], "big")


def phantom_spec(config) -> synthetic.SyntheticSpec:
    """The built-in set a config trains on: rendered at the asked image size, else PHANTOM_SIZE."""
    height, width = (config.image_height, config.image_width) if config.image_height else PHANTOM_SIZE
    return synthetic.SyntheticSpec(num_studies=config.num_studies, height=height, width=width, seed=config.seed,
                                   difficulty=config.phantom_difficulty)


def load_split(config, split: str, log=print) -> synthetic.StudyArrays:
    """Phantom studies of `split` ('train', 'validation' or 'test') for a FitConfig."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return synthetic.load_or_render(phantom_spec(config), log=log).select(split)
