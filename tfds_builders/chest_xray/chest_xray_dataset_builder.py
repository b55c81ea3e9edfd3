"""chest_xray: single-channel chest radiographs labelled normal / pneumonia, for pre-training a backbone."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from tfbonemet.data import sources
from tfbonemet.data.splits import assign_splits
from tfbonemet.errors import DataError
from tfbonemet.data.provenance import secret_for_build
from tfbonemet.io.discovery import read_view
from tfbonemet.io.pseudonym import keyed_hash
from tfds_builders.build_options import BuildOptions, png16

CLASSES = ("normal", "pneumonia")
SPLIT_FOLDERS = {"train": "train", "validation": "val", "test": "test"}
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".dcm"}
LABELS_CSV = "labels.csv"
RADIOGRAPHY = ("CR", "DX", "DR")  # DICOM modalities of a chest radiograph


class Builder(BuildOptions, tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for chest_xray (manual download: split/class folders or a labelled CSV)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: train|val|test/NORMAL|PNEUMONIA folders or labels.csv."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put one of these layouts in `manual_dir`:
      * the common pneumonia layout: train/, val/, test/, each with NORMAL/ and PNEUMONIA/ image folders;
      * labels.csv with columns `file`, `label` (normal or pneumonia) and optionally `patient_id`,
        naming PNG, JPEG or DICOM files relative to it; split 70/15/15 by patient.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                # 8-bit sources keep their 0-255 values; DICOM keeps its stored range
                "image": tfds.features.Image(shape=(None, None, 1), dtype=np.uint16),
                "label": tfds.features.ClassLabel(names=CLASSES),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = Path(dl_manager.manual_dir)
        if (manual_dir / LABELS_CSV).is_file():
            files = self._csv_splits(manual_dir)
        elif any((manual_dir / folder).is_dir() for folder in SPLIT_FOLDERS.values()):
            files = self._folder_splits(manual_dir)
        else:
            state = "is empty" if manual_dir.is_dir() and not any(manual_dir.iterdir()) else "has no recognised layout"
            raise DataError(f"{manual_dir}: {state}: expected {LABELS_CSV} or train/ val/ test/ class folders")
        if not any(files.values()):
            raise DataError(f"{manual_dir}: no labelled images found")
        # a split with no images (too few patients, or no folder) is left out rather than written empty
        return {split: self._generate_examples(manual_dir, items) for split, items in files.items() if items}

    def _folder_splits(self, manual_dir: Path) -> dict[str, list[tuple[Path, str]]]:
        files = {}
        for split, folder in SPLIT_FOLDERS.items():
            files[split] = [(path, label) for label in CLASSES
                            for path in sorted((manual_dir / folder / label.upper()).glob("*"))
                            if path.suffix.lower() in IMAGE_SUFFIXES]
        return files

    def _csv_splits(self, manual_dir: Path) -> dict[str, list[tuple[Path, str]]]:
        labels_path = manual_dir / LABELS_CSV
        secret = secret_for_build(manual_dir, self._secret, self._allow_public_secret)

        def entry(line: int, row: dict) -> tuple[Path, str, str]:
            where = f"{labels_path}:{line}"
            path = sources.existing_file(manual_dir, row["file"], where)
            patient = keyed_hash(row.get("patient_id") or row["file"], secret)
            return path, sources.parse_label(row["label"], where, CLASSES), patient

        rows = sources.read_csv(labels_path, required=("file", "label"))
        entries = [e for e in (sources.attempt(self.on_bad, entry, *item) for item in rows) if e]
        split_of = assign_splits([patient for _, _, patient in entries],
                                 [CLASSES.index(label) for _, label, _ in entries], seed=self._split_seed)
        return {split: [(path, label) for (path, label, _), s in zip(entries, split_of) if s == split]
                for split in SPLIT_FOLDERS}

    def _generate_examples(self, manual_dir: Path, items):
        for path, label in items:
            image = sources.attempt(self.on_bad, read_view, path, None, RADIOGRAPHY)
            if image is None:
                continue
            key = path.relative_to(manual_dir).as_posix()
            yield key, {"image": png16(image), "label": label}
