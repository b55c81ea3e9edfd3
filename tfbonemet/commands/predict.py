"""`tfbonemet predict`: per-study probabilities from any exported form of a model, on files or a PACS."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from tfbonemet.vocab import PREDICTION_FORMATS as OUTPUT_FORMATS


def _set_env(ctx, name: str, value: str) -> None:
    """Set an environment variable for this command only (restored when it ends, as in-process runs need)."""
    previous = os.environ.get(name)
    os.environ[name] = value
    ctx.call_on_close(lambda: os.environ.pop(name) if previous is None else os.environ.update({name: previous}))


def _use_secret_file(ctx, param, value):
    if value:
        from tfbonemet.io.pseudonym import SECRET_FILE_ENV

        _set_env(ctx, SECRET_FILE_ENV, value)
    return value


def _any_modality(ctx, param, value):
    if value:
        from tfbonemet.io.dicom import ANY_MODALITY_ENV

        _set_env(ctx, ANY_MODALITY_ENV, "1")
    return value


def secret_options(command):
    """--secret-file and --any-modality, for every command that reads patient DICOM (set for the process)."""
    command = click.option("--secret-file", type=click.Path(exists=True, dir_okay=False), default=None,
                           expose_value=False, callback=_use_secret_file,
                           help="File holding your site's secret for pseudonyms (else $TFBONEMET_SECRET).")(command)
    return click.option("--any-modality", is_flag=True, expose_value=False, callback=_any_modality,
                        help="Read DICOM images of any modality, not only NM (the model was trained on bone "
                             "scans: other images give meaningless results).")(command)


def parse_queries(ctx, param, values):
    """KEY=VALUE QIDO-RS search filters, e.g. StudyDate=20240101-20240131."""
    filters = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx=ctx, param=param)
        filters[key.strip()] = value.strip()
    return filters


@click.command()
@click.argument("model", type=click.Path())
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--output", "-o", type=click.Path(), default=None,
              help="Write here (default: standard output). The format follows the suffix unless --format is given.")
@click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS), default=None, help="csv (default) or json.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Studies read and predicted at a time; bounds memory on large folders.")
@click.option("--skip-bad", is_flag=True, help="Report unreadable or incomplete studies and go on, instead of stopping.")
@click.option("--explain", "explain_dir", type=click.Path(file_okay=False), default=None,
              help="Write Grad-CAM overlays per study here (Keras models only).")
@click.option("--dicomweb", "url", default=None, metavar="URL",
              help="Predict studies of a PACS over DICOMweb (QIDO/WADO/STOW-RS) instead of PATHS, and store a "
                   "Structured Report back into each study.")
@click.option("--study", "study_uids", multiple=True, metavar="UID",
              help="With --dicomweb: a StudyInstanceUID to predict (repeatable). Default: every NM study the "
                   "--query filters find.")
@click.option("--query", "queries", multiple=True, callback=parse_queries, metavar="KEY=VALUE",
              help="With --dicomweb: a QIDO-RS study search filter, e.g. StudyDate=20240101-20240131 (repeatable).")
@click.option("--deidentify", is_flag=True,
              help="With --dicomweb: store results in a new pseudonymous study instead of the source study.")
@click.option("--overlays", is_flag=True,
              help="With --dicomweb: also store a labelled Grad-CAM overlay per view (Keras models only).")
@secret_options
def predict(model, paths, output, fmt, batch_size, skip_bad, explain_dir, url, study_uids, queries, deidentify,
            overlays):
    """Predict MODEL on DICOM files, DICOM folders or PNG/JPEG images at PATHS, or on a PACS (--dicomweb).

    MODEL is a run directory or .keras file, an exported SavedModel (or its TF Serving model
    folder: the newest version is used) or a .tflite file from `tfbonemet export`. Load only models
    from a source you trust (docs/security.md). DICOM files are grouped into studies by
    StudyInstanceUID and their views paired from the header; only NM images are read. Images pair
    as NAME_ant.png / NAME_post.png. One row per study: a keyed pseudonym of the study (DICOM) or the
    file name (images), the predicted label (or refer, inside a referral band chosen at fit), each class
    probability and the uncertainty (how far a probability moves under small shifts of the scan). Set
    TFBONEMET_SECRET per site.
    """
    pacs_only = {"--study": study_uids, "--query": queries, "--deidentify": deidentify, "--overlays": overlays}
    if url is None:
        if not paths:
            raise click.UsageError("give PATHS to predict on, or a PACS with --dicomweb URL")
        given = [name for name, value in pacs_only.items() if value]
        if given:
            raise click.UsageError(f"{given[0]} applies to --dicomweb only")
    elif paths or explain_dir or skip_bad:
        raise click.UsageError("--dicomweb reads its studies from the PACS: drop PATHS, --explain and --skip-bad "
                               "(--overlays stores Grad-CAM overlays in the PACS)")
    fmt = fmt or ("json" if output and Path(output).suffix.lower() == ".json" else "csv")
    if url is not None:
        _predict_pacs(model, url, study_uids, queries, deidentify, overlays, output, fmt)
        return
    from tfbonemet.tasks.predict import discover, iter_predictions, load_runner, open_output, write_rows

    runner = load_runner(model)
    studies = discover(paths)
    with open_output(output) as out, click.progressbar(length=len(studies), label="Predicting", file=sys.stderr,
                                                        show_pos=True, hidden=not sys.stderr.isatty()) as bar:
        rows = iter_predictions(runner, studies, batch_size=batch_size, skip_bad=skip_bad,
                                on_skip=lambda m: click.echo(f"skipped: {m}", err=True),
                                on_batch=bar.update, explain_dir=explain_dir)
        n = write_rows(rows, out, fmt, runner.info.classes)
    click.echo(f"{n} studies predicted with {runner.kind} model {model}" + (f" -> {output}" if output else ""),
               err=True)


def _predict_pacs(model, url, study_uids, queries, deidentify, overlays, output, fmt):
    from tfbonemet.tasks.pacs import run_pacs
    from tfbonemet.tasks.predict import open_output, write_rows

    summaries = run_pacs(url, model, study_uids, queries, explain=overlays, deidentify=deidentify,
                         log=lambda m: click.echo(m, err=True))
    classes = tuple(key[2:] for key in summaries[0] if key.startswith("p_")) if summaries else ()
    with open_output(output) as out:
        write_rows(({k: v for k, v in s.items() if k in ("study", "label", "uncertainty") or k.startswith("p_")}
                    for s in summaries),
                   out, fmt, classes)
    click.echo(f"{len(summaries)} PACS studies predicted with {model}" + (f" -> {output}" if output else ""),
               err=True)


COMMANDS = [predict]
