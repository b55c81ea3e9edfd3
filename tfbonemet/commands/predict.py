"""`tfbonemet predict`: per-study probabilities from any exported form of a model."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from tfbonemet.vocab import PREDICTION_FORMATS as OUTPUT_FORMATS


@click.command()
@click.argument("model", type=click.Path())
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write here (default: standard output). The format follows the suffix unless --format is given.")
@click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS), default=None, help="csv (default) or json.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Studies read and predicted at a time; bounds memory on large folders.")
@click.option("--skip-bad", is_flag=True, help="Report unreadable or incomplete studies and go on, instead of stopping.")
@click.option("--explain", "explain_dir", type=click.Path(file_okay=False), default=None,
              help="Write Grad-CAM overlays per study here (Keras models only).")
def predict(model, paths, output, fmt, batch_size, skip_bad, explain_dir):
    """Predict MODEL on DICOM files, DICOM folders or PNG/JPEG images at PATHS.

    MODEL is a run directory or .keras file, an exported SavedModel (or its TF Serving model
    folder: the newest version is used) or a .tflite file from `tfbonemet export`. DICOM files
    are grouped into studies by StudyInstanceUID and their views paired from the header; images
    pair as NAME_ant.png / NAME_post.png. One row per study: a salted study key (DICOM) or the
    file name (images), the predicted label and each class probability. Set TFBONEMET_SALT per site.
    """
    from tfbonemet.tasks.predict import discover, iter_predictions, load_runner, write_rows

    runner = load_runner(model)
    studies = discover(paths)
    fmt = fmt or ("json" if output and Path(output).suffix.lower() == ".json" else "csv")
    partial = Path(f"{output}.part") if output else None  # renamed into place only when complete
    out = open(partial, "w", newline="") if output else sys.stdout
    try:
        with click.progressbar(length=len(studies), label="Predicting", file=sys.stderr, show_pos=True,
                               hidden=not sys.stderr.isatty()) as bar:
            rows = iter_predictions(runner, studies, batch_size=batch_size, skip_bad=skip_bad,
                                    on_skip=lambda m: click.echo(f"skipped: {m}", err=True),
                                    on_batch=bar.update, explain_dir=explain_dir)
            n = write_rows(rows, out, fmt, runner.info.classes)
        if output:
            out.close()
            os.replace(partial, output)
    finally:
        if output:
            out.close()
            partial.unlink(missing_ok=True)
    click.echo(f"{n} studies predicted with {runner.kind} model {model}" + (f" -> {output}" if output else ""),
               err=True)


COMMANDS = [predict]
