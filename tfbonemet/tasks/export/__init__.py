"""`tfbonemet export`: the SavedModel (archive), TFLite files (tflite), parity against Keras (parity), the
TF Serving layout (versions), the model card (model_card), the task (task); file digests are tfbonemet.io.integrity."""
from tfbonemet.tasks.export.archive import SIGNATURES, build_archive
from tfbonemet.io.integrity import verify
from tfbonemet.tasks.export.model_card import Release, figure_text, render_model_card, run_metrics
from tfbonemet.tasks.export.parity import TOLERANCES, parity, parity_table
from tfbonemet.tasks.export.task import FORMATS, export
from tfbonemet.tasks.export.tflite import TFLITE_VARIANTS, read_metadata

__all__ = ["FORMATS", "SIGNATURES", "TFLITE_VARIANTS", "TOLERANCES", "Release", "build_archive", "export",
           "figure_text", "parity", "parity_table", "read_metadata", "render_model_card", "run_metrics", "verify"]
