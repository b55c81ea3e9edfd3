"""`tfbonemet predict`: runners (runners) and the batch loop with its writers (loop) over the studies
tfbonemet.io.discovery finds and reads — the same discovery and reader `data build` uses."""
from tfbonemet.io.discovery import StudyFiles, discover, load_study
from tfbonemet.tasks.predict.loop import iter_predictions, open_output, write_rows
from tfbonemet.tasks.predict.runners import (METADATA_JSON, KerasRunner, ModelInfo, SavedModelRunner, TFLiteRunner,
                                             load_runner, model_inputs, preprocess_studies)

__all__ = ["METADATA_JSON", "KerasRunner", "ModelInfo", "SavedModelRunner", "StudyFiles", "TFLiteRunner", "discover",
           "iter_predictions", "load_runner", "load_study", "model_inputs", "open_output", "preprocess_studies",
           "write_rows"]
