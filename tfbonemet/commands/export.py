"""`tfbonemet export`: a run directory -> TF Serving SavedModel and TFLite files, parity-checked."""
from __future__ import annotations

import click

from tfbonemet.vocab import EXPORT_FORMATS as FORMATS


@click.command()
@click.argument("run_dir", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="all", show_default=True,
              help="savedmodel: TF Serving SavedModel; tflite: float32/float16/dynamic-int8/int8 flatbuffers; all: both.")
@click.option("--output-dir", type=click.Path(file_okay=False), default="saved_models", show_default=True,
              help="Root of the TF Serving layout <output-dir>/<model-name>/<version>/.")
@click.option("--model-name", default=None, help="Served model name (default: the Keras model's name).")
@click.option("--calibration-samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="Training studies used to calibrate the full-integer int8 TFLite model.")
@click.option("--author", "authors", multiple=True, help="Author named in the model card (repeatable).")
@click.option("--license", "license_", default="Apache-2.0", show_default=True, help="License of the exported model.")
@click.option("--copyright", "copyright_", default=None, help="Copyright line (default: the year and the authors).")
@click.option("--note", default=None,
              help="Changelog entry for this version (default: what changed since the last version).")
def export(run_dir, fmt, output_dir, model_name, calibration_samples, authors, license_, copyright_, note):
    """Export RUN_DIR (from `tfbonemet fit`) for serving and for devices.

    Writes the next integer version under OUTPUT_DIR/MODEL_NAME/, atomically: the SavedModel
    (raw-count and encoded-image signatures, preprocessing inside), tflite/*.tflite, parity.json,
    metadata.json and MODEL_CARD.md. Every artefact is compared with the Keras model on the
    validation split; if one exceeds its tolerance the export fails and writes no version.
    The card carries a semantic version (major: interface changed, minor: new weights, patch:
    re-export) with its changelog, test figures with CIs if `tfbonemet evaluate` ran on this
    model (else a statement that none exists), and the sha256 of every file.
    """
    from tfbonemet.tasks.export import Release
    from tfbonemet.tasks.export import export as run_export

    run_export(run_dir, output_dir=output_dir, fmt=fmt, model_name=model_name,
               calibration_samples=calibration_samples,
               release=Release(tuple(authors), license_, copyright_, note), log=click.echo)


COMMANDS = [export]
