"""`tfbonemet predict`: runners (runners) and the batch loop with its writers (loop) over the studies
tfbonemet.io.discovery finds and reads — the same discovery and reader `data build` uses."""
from tfbonemet.io.discovery import StudyFiles, discover, load_study
from tfbonemet.tasks.predict.loop import iter_predictions, open_output, write_rows
from tfbonemet.tasks.predict.runners import KerasRunner, SavedModelRunner, TFLiteRunner, load_runner

__all__ = ["KerasRunner", "SavedModelRunner", "StudyFiles", "TFLiteRunner", "discover", "iter_predictions",
           "load_runner", "load_study", "open_output", "write_rows"]
