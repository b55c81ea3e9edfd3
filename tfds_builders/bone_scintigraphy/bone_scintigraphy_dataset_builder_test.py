"""TFDS conformance of bone_scintigraphy on each committed manual-dir layout in dummy_data/."""
from pathlib import Path

import tensorflow_datasets as tfds

from tfds_builders.bone_scintigraphy import bone_scintigraphy_dataset_builder

DUMMY_DATA = Path(__file__).parent / "dummy_data"


class BoneScintigraphyDicomTest(tfds.testing.DatasetBuilderTestCase):
    """Phantom DICOM (one file per view) + labels.csv + lesions.json; 12 studies of 10 patients."""

    DATASET_CLASS = bone_scintigraphy_dataset_builder.Builder
    EXAMPLE_DIR = str(DUMMY_DATA / "dicom")
    BUILDER_CONFIG_NAMES_TO_TEST = ["multiclass"]  # binary: tests/test_data_cli.py, tests/test_privacy.py
    SPLITS = {"train": 8, "validation": 1, "test": 3}


class BoneScintigraphyBs80kTest(tfds.testing.DatasetBuilderTestCase):
    """BS-80K chestRANT/ + chestRPOST/ JPEG folders; binary labels only."""

    DATASET_CLASS = bone_scintigraphy_dataset_builder.Builder
    EXAMPLE_DIR = str(DUMMY_DATA / "bs80k")
    BUILDER_CONFIG_NAMES_TO_TEST = ["binary"]
    SPLITS = {"train": 7, "validation": 2, "test": 1}


class BoneScintigraphyManifestTest(tfds.testing.DatasetBuilderTestCase):
    """manifest.csv naming 16-bit PNG pairs and one two-frame DICOM."""

    DATASET_CLASS = bone_scintigraphy_dataset_builder.Builder
    EXAMPLE_DIR = str(DUMMY_DATA / "manifest")
    BUILDER_CONFIG_NAMES_TO_TEST = ["binary"]
    SPLITS = {"train": 7, "validation": 2, "test": 1}


if __name__ == "__main__":
    tfds.testing.test_main()
