"""bone_scintigraphy: whole-body bone scans, anterior + posterior, split by patient."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from tfbonemet.data import sources
from tfbonemet.data.splits import assign_splits
from tfbonemet.errors import DataError
from tfbonemet.vocab import ANTERIOR, CLASS_NAMES, NO_METASTASIS, POSTERIOR, SPLITS, TASKS
from tfds_builders.build_options import BuildOptions, png16


class Builder(BuildOptions, tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for bone_scintigraphy (manual download: DICOM, BS-80K or a CSV manifest)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: DICOM, BS-80K and manifest layouts; binary and multiclass."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="binary", description="Metastasis or not (BS-80K: positive if either view is)."),
        tfds.core.BuilderConfig(name="multiclass", description="Normal, metastasis, arthritis, thyroid carcinoma."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Put one of these layouts in `manual_dir`:
      * DICOM files (any depth) + labels.csv with columns `file` or `study_instance_uid`, `label`
        and optionally `patient_id`, + optionally lesions.json
        (`tfbonemet data phantom DIR` writes this layout);
      * BS-80K: view folders such as chestRANT/ and chestRPOST/, each with its JPEGs and a
        same-named list (chestRANT/chestRANT.txt) of `filename label` lines, label 0 or 1;
      * manifest.csv with columns `anterior`, `posterior`, `label`, `patient_id` (paths relative to it).
    Labels are names from: normal, metastasis, arthritis, thyroid_carcinoma, no_metastasis.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        view = tfds.features.Image(shape=(None, None, 1), dtype=np.uint16)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                ANTERIOR: view,
                POSTERIOR: view,  # as acquired; the ScanPreprocessor mirrors it to align with the anterior
                "label": tfds.features.ClassLabel(names=TASKS[self.builder_config.name]),
                "patient_hash": tfds.features.Text(),
                "study_hash": tfds.features.Text(),
                "lesion_boxes": tfds.features.Sequence({
                    ANTERIOR: tfds.features.BBoxFeature(),
                    POSTERIOR: tfds.features.BBoxFeature(),
                    "kind": tfds.features.ClassLabel(names=sources.LESION_KINDS),
                }),
            }),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = Path(dl_manager.manual_dir)
        records = sources.read_source(manual_dir, secret=self._secret, on_bad=self.on_bad,
                                      allow_public_secret=self._allow_public_secret)
        if self.builder_config.name == "multiclass" and any(r.label == NO_METASTASIS for r in records):
            raise DataError(f"{manual_dir}: some labels only say '{NO_METASTASIS}'; "
                            f"build this source with the binary config")
        # stratified on metastasis in every config, so binary and multiclass share one patient split
        split_of = assign_splits([r.patient_hash for r in records], [int(r.is_metastatic) for r in records],
                                 seed=self._split_seed)
        # a split too small to get any patient is left out rather than written empty
        return {name: self._generate_examples([r for r, s in zip(records, split_of) if s == name])
                for name in SPLITS if name in split_of}

    def _label(self, record: sources.StudyRecord) -> int:
        if self.builder_config.name == "binary":
            return int(record.is_metastatic)
        return CLASS_NAMES.index(record.label)

    def _generate_examples(self, records):
        for record in records:
            views = sources.attempt(self.on_bad, record.load)
            if views is None:
                continue
            yield record.study_hash, {
                ANTERIOR: png16(views[ANTERIOR]),
                POSTERIOR: png16(views[POSTERIOR]),
                "label": self._label(record),
                "patient_hash": record.patient_hash,
                "study_hash": record.study_hash,
                "lesion_boxes": views["lesion_boxes"],
            }
