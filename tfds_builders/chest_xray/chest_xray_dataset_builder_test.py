"""TFDS conformance of chest_xray on both committed manual-dir layouts in dummy_data/."""
from pathlib import Path

import tensorflow_datasets as tfds

from tfds_builders.chest_xray import chest_xray_dataset_builder

DUMMY_DATA = Path(__file__).parent / "dummy_data"


class ChestXrayFoldersTest(tfds.testing.DatasetBuilderTestCase):
    """train|val|test/NORMAL|PNEUMONIA JPEGs, grey and RGB."""

    DATASET_CLASS = chest_xray_dataset_builder.Builder
    EXAMPLE_DIR = str(DUMMY_DATA / "folders")
    SPLITS = {"train": 6, "validation": 2, "test": 4}


class ChestXrayCsvTest(tfds.testing.DatasetBuilderTestCase):
    """labels.csv naming 16-bit PNGs and a DICOM, split by patient."""

    DATASET_CLASS = chest_xray_dataset_builder.Builder
    EXAMPLE_DIR = str(DUMMY_DATA / "csv")
    SPLITS = {"train": 7, "validation": 1, "test": 2}


if __name__ == "__main__":
    tfds.testing.test_main()
