"""`tfbonemet data`: build TFDS datasets from your own files, or write phantom DICOM studies."""
from __future__ import annotations

import importlib
from pathlib import Path

import click

from tfbonemet.commands.predict import secret_options
from tfbonemet.data.phantom.difficulty import DEFAULT_DIFFICULTY, DIFFICULTIES
from tfbonemet.errors import DataError
from tfbonemet.vocab import TASKS

DATASETS = ("bone_scintigraphy", "chest_xray")
CONFIGURED = {"bone_scintigraphy": tuple(TASKS)}  # datasets with builder configs, and their names


def make_builder(dataset: str, config: str | None, data_dir: str | None, skip_bad: bool,
                 allow_public_secret: bool = False):
    """The project's TFDS builder for `dataset`, imported on use (TFDS loads only for `data build`)."""
    module = importlib.import_module(f"tfds_builders.{dataset}.{dataset}_dataset_builder")
    options = {"config": config or CONFIGURED[dataset][0]} if dataset in CONFIGURED else {}
    return module.Builder(data_dir=data_dir, skip_bad=skip_bad, allow_public_secret=allow_public_secret, **options)


@click.group("data")
def data_group():
    """Build datasets from DICOM / JPEG / CSV sources, or write synthetic DICOM studies."""


@data_group.command("build")
@click.option("--dataset", type=click.Choice(DATASETS), required=True, help="Which TFDS builder to run.")
@click.option("--manual-dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="Folder of source files in one of the layouts above.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where TFDS writes the dataset (default: TFDS's own, ~/tensorflow_datasets).")
@click.option("--config", type=click.Choice(tuple(TASKS)), default=None,
              help="bone_scintigraphy only: binary (metastasis or not, default) or multiclass.")
@click.option("--skip-bad", is_flag=True, help="Leave out bad files and label lines, then list them, "
                                               "instead of stopping at the first.")
@click.option("--allow-public-secret", is_flag=True,
              help="Build real data with no site secret set: its pseudonyms then use the public default and can "
                   "be reversed by anyone with a list of patient IDs (phantom data need no secret).")
@secret_options
def build(dataset, manual_dir, data_dir, config, skip_bad, allow_public_secret):
    """Build a versioned TFDS dataset, split by patient, with only keyed pseudonyms as identifiers.

    bone_scintigraphy reads DICOM + labels.csv (as `tfbonemet data phantom` writes), BS-80K view
    folders (chestRANT/chestRANT.txt ...), or manifest.csv (anterior, posterior, label, patient_id).
    chest_xray reads train|val|test/NORMAL|PNEUMONIA folders or labels.csv (file, label[, patient_id]).
    Pseudonyms are keyed with your site's secret (TFBONEMET_SECRET or --secret-file), so they cannot
    be recomputed elsewhere; real data are refused without one. Only NM DICOM is read. The dataset
    appears only when the build succeeds; what a killed build left is removed by the next.
    """
    from tfbonemet.data.datasets import check_not_empty, prepare

    if config and dataset not in CONFIGURED:
        raise click.UsageError(f"--config applies to {', '.join(CONFIGURED)}, not {dataset}")
    check_not_empty(manual_dir, dataset)
    try:
        builder = make_builder(dataset, config, data_dir, skip_bad, allow_public_secret)
    except Exception:  # TFDS reads a version already built there: its dataset_info.json may be damaged
        from tfbonemet.data.datasets import damaged_description

        damaged = damaged_description(f"{dataset}/{config or CONFIGURED[dataset][0]}" if dataset in CONFIGURED
                                      else dataset, data_dir)
        if damaged:
            raise damaged from None
        raise
    try:
        prepare(builder, manual_dir)
    except Exception as exc:
        from tfbonemet.io.atomic import no_space

        if no_space(exc):
            raise DataError(f"cannot write {builder.data_dir}: no space left on device; nothing of this build "
                            f"was kept") from None
        raise
    counts = ", ".join(f"{name} {split.num_examples}" for name, split in sorted(builder.info.splits.items()))
    click.echo(f"Built {builder.info.full_name} in {builder.data_dir}: {counts}")
    if builder.skipped:
        click.echo(f"Skipped {len(builder.skipped)} bad input(s):")
        for reason in builder.skipped:
            click.echo(f"  {reason}")


@data_group.command("phantom")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--num-studies", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--size", nargs=2, type=click.IntRange(min=16), default=(1024, 256), show_default=True,
              metavar="H W", help="Pixels per whole-body view (height at least 64).")
@click.option("--layout", type=click.Choice(("dicom", "bs80k")), default="dicom", show_default=True,
              help="dicom: NM DICOM studies + labels.csv + lesions.json; bs80k: BS-80K chest crops "
                   "(chestRANT/ chestRPOST/ chestLANT/ chestLPOST/, 8-bit JPEGs, label lists).")
@click.option("--difficulty", type=click.Choice(tuple(DIFFICULTIES)), default=DEFAULT_DIFFICULTY, show_default=True,
              help="Finding contrast, benign mimics, counts and blur (realistic: calibrated on real crops).")
@click.option("--split-views", is_flag=True, help="dicom: one file per view instead of one two-frame file per study.")
@click.option("--seed", type=int, default=0, show_default=True)
def phantom(out_dir, num_studies, size, layout, difficulty, split_views, seed):
    """Write synthetic bone scans to OUT_DIR: whole-body NM DICOM studies, or BS-80K-style chest crops.

    OUT_DIR must not hold a dataset already (its labels would be rewritten and its files orphaned).
    """
    from tfbonemet.data.phantom import BoneScanPhantom, bs80k
    from tfbonemet.data.phantom_dicom import write_dataset
    from tfbonemet.io.atomic import make_dir
    from tfbonemet.data.provenance import mark_phantom

    try:
        generator = BoneScanPhantom(shape=size, seed=seed, difficulty=difficulty,
                                    **({"class_probs": bs80k.CLASS_PROBS} if layout == "bs80k" else {}))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--size") from None
    bs80k.check_empty_of_datasets(Path(out_dir))
    if Path(out_dir).is_dir() and any(Path(out_dir).iterdir()):
        raise DataError(f"{out_dir}: is not empty; choose an empty or new folder for the phantom studies")
    make_dir(out_dir)
    studies = (generator.study(i) for i in range(num_studies))
    try:
        if layout == "bs80k":
            positives = bs80k.write_bs80k(studies, out_dir)
        else:
            write_dataset(studies, out_dir, split_views=split_views)
        mark_phantom(out_dir)  # lists what was written: a file added later makes the folder real data
    except OSError as exc:
        raise DataError(f"cannot write {getattr(exc, 'filename', None) or out_dir}: {exc.strerror or exc}") from None
    if layout == "bs80k":
        found = ", ".join(f"{region} {n}" for region, n in positives.items())
        click.echo(f"Wrote BS-80K chest crops of {num_studies} phantom patients to {out_dir} (with metastasis: {found})")
    else:
        click.echo(f"Wrote {num_studies} phantom studies to {out_dir}")


COMMANDS = [data_group]
