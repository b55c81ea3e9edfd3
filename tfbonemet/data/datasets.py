"""One entry point from a run configuration to the studies of a split, whatever the data source.

Sources: `phantom` (the built-in synthetic set) and `tfds:NAME[/CONFIG]`, a TFDS build found in
`data_dir` (prepared from `manual_dir` on first use). Training streams TFDS records through
tf.data; `load_split` materialises a split as arrays for evaluation and cross-validation.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

import numpy as np
import tensorflow as tf

from tfbonemet.data import synthetic
from tfbonemet.data.phantom import CLASS_NAMES
from tfbonemet.data.pipeline import VIEW_SETS, PipelineConfig, batch_pipeline, task_labels
from tfbonemet.errors import ConfigError, DataError

SPLITS = ("train", "validation", "test")
TFDS_PREFIX = "tfds:"


@dataclasses.dataclass
class Split:
    """One split of a source: labels (the dataset's own classes, in record order) and its raw records.

    `records(views)` yields unbatched `({view: counts}, label)`; `batches` runs them through the
    tf.data pipeline with labels mapped to a task.
    """

    labels: np.ndarray
    class_names: tuple[str, ...]
    records: Callable[[tuple[str, ...]], tf.data.Dataset]

    def __len__(self) -> int:
        return len(self.labels)

    def task_labels(self, task: str | None) -> np.ndarray:
        return label_map(self.class_names, task)[self.labels]

    def batches(self, pipeline: PipelineConfig, training: bool, task: str | None = None, augment=None,
                seed: int = 0, repeat: bool = False, skip_batches: int = 0) -> tf.data.Dataset:
        table = tf.constant(label_map(self.class_names, task))
        records = self.records(VIEW_SETS[pipeline.views]).map(
            lambda x, y: (x, tf.gather(table, y)), num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=pipeline.deterministic)
        return batch_pipeline(records, pipeline, training, augment=augment, seed=seed,
                              labels=self.task_labels(task), repeat=repeat, skip_batches=skip_batches)


def from_studies(studies: synthetic.StudyArrays) -> Split:
    """A Split over in-memory studies (the phantom set, or one fold of it)."""
    def records(views):
        arrays = {"anterior": studies.anterior, "posterior": studies.posterior}
        return tf.data.Dataset.from_tensor_slices(({v: arrays[v] for v in views}, studies.labels))
    return Split(np.asarray(studies.labels, np.int64), tuple(CLASS_NAMES), records)


def open_split(config, split: str) -> Split:
    """The `split` of a FitConfig-like config's source (data, data_dir, manual_dir, seed, sizes)."""
    check_source(config.data)
    if config.data == "phantom":
        return from_studies(load_split(config, split, log=lambda *_: None))
    builder = tfds_builder(config.data, config.data_dir, config.manual_dir)
    split = _tfds_split(builder, split)
    names = tuple(builder.info.features["label"].names)

    def records(views):
        missing = [v for v in views if v not in builder.info.features]
        if missing:
            raise ConfigError(f"TFDS dataset {builder.info.full_name} has no feature {', '.join(missing)} "
                              f"needed by the model's inputs")
        return builder.as_dataset(split=split, shuffle_files=False).map(
            lambda e: ({v: e[v] for v in views}, e["label"]), num_parallel_calls=tf.data.AUTOTUNE)
    return Split(_tfds_labels(builder, split), names, records)


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
        raise DataError(f"cannot open TFDS dataset {name!r} in {data_dir or 'the default data_dir'}: "
                        f"{str(exc).splitlines()[0]}") from None
    if not builder.is_prepared():
        if not manual_dir:
            raise DataError(f"TFDS dataset {name!r} is not built in {data_dir or 'the default data_dir'}; "
                            f"pass the folder of source files as manual_dir (--manual-dir) to build it")
        try:
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        except Exception as exc:
            raise DataError(f"cannot build TFDS dataset {name!r} from {manual_dir}: "
                            f"{str(exc).splitlines()[0]}") from None
    return builder


def label_map(names, task: str | None) -> np.ndarray:
    """Dataset label index -> task label index; `task=None` keeps the dataset's own classes."""
    names = tuple(names)
    if task is None:
        return np.arange(len(names), dtype=np.int64)
    if names == tuple(CLASS_NAMES):
        return task_labels(np.arange(len(names)), task)
    if task == "binary" and len(names) == 2:
        return np.arange(2, dtype=np.int64)
    raise ConfigError(f"dataset classes {', '.join(names)} do not fit task {task!r}")


def _tfds_split(builder, split: str) -> str:
    if split not in builder.info.splits:
        raise DataError(f"TFDS dataset {builder.info.full_name} has no split {split!r} "
                        f"(it has {', '.join(builder.info.splits)})")
    return split


def _tfds_labels(builder, split: str) -> np.ndarray:
    """Labels in record order, reading only the label feature (images stay undecoded)."""
    import tensorflow_datasets as tfds

    skip = {name: tfds.decode.SkipDecoding() for name, feature in builder.info.features.items()
            if isinstance(feature, tfds.features.Image)}
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders=skip).map(lambda e: e["label"])
    return np.fromiter(ds.as_numpy_iterator(), dtype=np.int64)


def load_split(config, split: str, log=print) -> synthetic.StudyArrays:
    """Studies of `split` ('train', 'validation' or 'test') for a FitConfig's data source."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    check_source(config.data)
    if config.data == "phantom":
        spec = synthetic.SyntheticSpec(num_studies=config.num_studies, height=config.image_height,
                                       width=config.image_width, seed=config.seed)
        return synthetic.load_or_render(spec, log=log).select(split)
    return _materialise(config, split, log)


def _materialise(config, split: str, log) -> synthetic.StudyArrays:
    """A TFDS split as StudyArrays, views resized (aspect kept, zero padded) to the configured size."""
    builder = tfds_builder(config.data, getattr(config, "data_dir", None), getattr(config, "manual_dir", None))
    split = _tfds_split(builder, split)
    size = (config.image_height, config.image_width)
    log(f"Reading {builder.info.full_name} split {split} ...")
    views = {"anterior": [], "posterior": []}
    labels, patients = [], []
    for example in builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator():
        for view in views:
            image = example[view]
            if image.shape[:2] != size:
                image = tf.image.resize_with_pad(tf.cast(image, tf.float32), *size, method="area").numpy()
            views[view].append(np.clip(np.rint(image[..., 0]), 0, 65535).astype(np.uint16))
        labels.append(int(example["label"]))
        patients.append(example["patient_hash"].decode() if "patient_hash" in example else "")
    empty = np.zeros((0, *size), np.uint16)
    return synthetic.StudyArrays(
        np.stack(views["anterior"]) if labels else empty, np.stack(views["posterior"]) if labels else empty,
        np.array(labels, np.int64), np.array(patients), np.array([split] * len(labels)),
        [[] for _ in labels])
