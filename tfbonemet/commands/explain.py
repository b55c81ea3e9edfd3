"""`tfbonemet explain`: per-view Grad-CAM / Grad-CAM++ / Score-CAM overlays, and the pointing-game check."""
from __future__ import annotations

import click

from tfbonemet.commands.evaluate import SPLIT_CHOICES, data_options, with_data_options
from tfbonemet.vocab import POSITIVE_CLASS

METHOD_CHOICES = ("gradcam", "gradcam++", "scorecam", "all")


@click.command()
@click.argument("run", type=click.Path(exists=True))
@click.option("--split", type=click.Choice(SPLIT_CHOICES), default="test", show_default=True,
              help="Explain studies of this split of the run's data.")
@click.option("--num", type=click.IntRange(min=1), default=4, show_default=True, help="How many studies of the split.")
@click.option("--dicom", "dicom_paths", multiple=True, type=click.Path(exists=True),
              help="Explain these DICOM files or folders instead of the split (repeatable).")
@click.option("--method", type=click.Choice(METHOD_CHOICES), default="gradcam", show_default=True)
@click.option("--class", "class_name", default=POSITIVE_CLASS, show_default=True, help="Class whose evidence is mapped.")
@click.option("--only-class", is_flag=True, help="From the split, take only studies labelled with --class.")
@click.option("--dicom-output", is_flag=True,
              help="With --dicom: also write each view's overlay as a labelled DICOM Secondary Capture in its study.")
@click.option("--deidentify", is_flag=True,
              help="With --dicom-output: put the captures in a pseudonymous study (keyed-hash IDs, no names or "
                   "dates) instead of the source study.")
@click.option("--pointing-game", is_flag=True,
              help="Instead of drawing: score how often the anterior map's peak hits a known phantom lesion.")
@click.option("--tolerance", type=click.IntRange(min=0), default=None,
              help="Pointing game: lesion boxes are dilated by this many pixels (default 1.5% of image height).")
@click.option("--views", "pg_views", type=click.Choice(("anterior", "both")), default="anterior",
              show_default=True,
              help="Pointing game: score the anterior map, or anterior + posterior (mirrored into its frame).")
@click.option("--output-dir", type=click.Path(), default=None,
              help="Default: RUN/explain-<split>/ (or explain-dicom/); pointing-game JSON goes to RUN/.")
@with_data_options
def explain(run, split, num, dicom_paths, method, class_name, only_class, dicom_output, deidentify, pointing_game,
            tolerance, pg_views, output_dir, data, num_studies, seed):
    """Heat maps of what drove RUN's prediction (a run directory or a .keras model), one per view.

    The posterior map is drawn on the posterior view as acquired (mirrored back from the
    model's input frame); the heat shown is the map times the predicted probability, on one
    colour scale for every study. PNGs by default, named `<split>-<index>` or, for DICOM, by the
    study's keyed pseudonym (source_index.csv, written beside them, maps keys to your files: keep it
    local). --dicom-output adds one labelled RGB Secondary Capture per view in the source study
    (or a pseudonymous one with --deidentify).
    """
    from tfbonemet.tasks import explain as explain_lib
    from tfbonemet.tasks.train.run_dir import sweep_run

    sweep_run(run, click.echo)
    methods = explain_lib.METHODS if method == "all" else (method,)
    options = data_options(data, num_studies, seed)
    if pointing_game:
        from pathlib import Path

        from tfbonemet.io.atomic import make_dir, write_json
        from tfbonemet.run import Run

        loaded = Run.load(run, options)
        out = make_dir(Path(output_dir) if output_dir else (Path(run) if Path(run).is_dir() else Path(run).parent))
        for m in methods:
            result = explain_lib.pointing_game(loaded, split, m, tolerance, views=pg_views, log=click.echo)
            click.echo(f"Pointing game ({m}, {split}, {pg_views} view(s), tolerance {result['tolerance_px']} px): "
                       f"{result['hits']}/{result['studies']} = {result['score']:.3f}; chance {result['chance']:.3f}; "
                       f"one-sided binomial p = {result['p_value']:.2g}")
            name = f"pointing_game-{split}-{m.replace('+', 'p')}-{pg_views}.json"
            write_json(out / name, result)
        return
    explain_lib.run_explain(run, split, num, dicom_paths, methods, output_dir, dicom_output, class_name,
                            only_class, options, deidentify=deidentify, log=click.echo)


COMMANDS = [explain]
