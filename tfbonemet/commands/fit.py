"""`tfbonemet fit`: train a classifier and write a run directory (options shared with `tfbonemet cv`)."""
from __future__ import annotations

import os

import click

from tfbonemet.models.registry import MODELS
from tfbonemet.vocab import (AGGREGATIONS, CROP_NAMES, JIT_MODES, LOSSES, LR_SCHEDULES, NORMALISATIONS,
                             PHANTOM_DIFFICULTIES, PRECISIONS, SAMPLINGS, STRATEGIES, TASKS, THRESHOLD_RULES)

def parse_model_options(ctx, param, values):
    """KEY=VALUE pairs -> builder arguments, values read as YAML (numbers, lists, true/false)."""
    import yaml

    options = {}
    for item in values or ():
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", ctx=ctx, param=param)
        try:
            options[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise click.BadParameter(f"{item!r}: the value is not a number, list or word", ctx=ctx, param=param)
    return options or None


TRAINING_OPTIONS = [
    click.option("--preset", default=None,
                 help="Named experiment preset (see `tfbonemet presets`); options below override it."),
    click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                 help="YAML or JSON file of configuration fields (any FitConfig field; see docs/training.md); "
                      "applied after the preset, before the options below."),
    click.option("--model-option", "model_options", multiple=True, callback=parse_model_options, metavar="KEY=VALUE",
                 help="A model builder argument, e.g. filters=[32,64,128] or pooling=avgmax (repeatable; "
                      "`tfbonemet models NAME` lists them)."),
    click.option("--model", type=click.Choice(sorted(MODELS)), default=None,
                 help="Registered model to train (see `tfbonemet models`). Default: two_view_net."),
    click.option("--task", type=click.Choice(list(TASKS)), default=None,
                 help="binary: metastasis or not; multiclass: normal / metastasis / arthritis / thyroid carcinoma."),
    click.option("--data", default=None,
                 help="'phantom' (default: the built-in synthetic set) or tfds:NAME[/CONFIG], e.g. "
                      "tfds:bone_scintigraphy/binary."),
    click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                 help="TFDS data_dir holding the prepared dataset."),
    click.option("--manual-dir", type=click.Path(exists=True, file_okay=False), default=None,
                 help="Source files to build the TFDS dataset from if it is not built yet."),
    click.option("--num-studies", type=click.IntRange(min=8), default=None,
                 help="Studies in the synthetic set (default 320; split 70/15/15 by patient)."),
    click.option("--phantom-difficulty", type=click.Choice(PHANTOM_DIFFICULTIES), default=None,
                 help="The synthetic set's difficulty: easy (demos, smoke tests), realistic (default; calibrated "
                      "on real chest crops) or hard."),
    click.option("--image-size", nargs=2, type=click.IntRange(min=32, max=4096), default=None, metavar="H W",
                 help="Model input height and width per view (default: the data's typical study size, never "
                      "upsampled, at most 512x128 pixels' worth)."),
    click.option("--crop", type=click.Choice(CROP_NAMES), default=None,
                 help="thorax: keep the thoracic region of each whole-body view before resizing (the thoracic "
                      "SPECT workflow of Lin et al. 2021); default none."),
    click.option("--intensity-scale", default=None, metavar="auto|percentile|VALUE",
                 help="How pixel values become [0, 1]: auto (default) reads 8-bit JPEG/PNG crops at their fixed "
                      "full scale 255 and DICOM counts per view at their 99.5th percentile; percentile; or a "
                      "full-scale value."),
    click.option("--normalisation", type=click.Choice(NORMALISATIONS), default=None,
                 help="Range compression after scaling: sqrt (default), linear or log."),
    click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs (default 20)."),
    click.option("--batch-size", type=click.IntRange(min=1), default=None,
                 help="Batch size per replica (default 16); the global batch is this times the replicas."),
    click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Adam learning rate (default 1e-3)."),
    click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default=None,
                 help="cosine (default): decay to 0 over the epochs; or constant."),
    click.option("--weight-ema", type=click.FloatRange(min=0, max=1, max_open=True), default=None,
                 metavar="MOMENTUM",
                 help="Average the weights over the last steps (exponential moving average); validation, "
                      "the best epoch and the saved model use the average. Default 0.99; 0 turns it off."),
    click.option("--early-stopping", type=click.IntRange(min=0), default=None, metavar="PATIENCE",
                 help="Stop after PATIENCE epochs without a better validation AUC (default 8; 0: off)."),
    click.option("--augment/--no-augment", default=None,
                 help="--augment: the published systems' set (rotation, shift, zoom, left-right flip of both views, "
                      "intensity and counting-noise jitter); --no-augment: none. Default: left-right flip of both "
                      "views and a 3% shift (presets set their own)."),
    click.option("--loss", type=click.Choice(LOSSES), default=None,
                 help="crossentropy (default) or focal (down-weights easy examples, for class imbalance)."),
    click.option("--sampling", type=click.Choice(SAMPLINGS), default=None,
                 help="natural (default, with class weights) or balanced (equal class frequency per batch)."),
    click.option("--precision", type=click.Choice(PRECISIONS), default=None,
                 help="Keras dtype policy (default auto: the fastest on this device, timed per model and input size; says what it chose)."),
    click.option("--jit", type=click.Choice(JIT_MODES), default=None,
                 help="XLA compilation: on, off, or auto (default: on GPUs; on CPUs probed with --precision auto)."),
    click.option("--strategy", type=click.Choice(STRATEGIES), default=None,
                 help="tf.distribute strategy: default, mirrored (all local devices), multi-worker (TF_CONFIG)."),
    click.option("--init-backbone", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="Fine-tune from backbone weights saved by `tfbonemet pretrain`."),
    click.option("--head-epochs", type=click.IntRange(min=0), default=None,
                 help="With --init-backbone: epochs training only the head before unfreezing the backbone."),
    click.option("--aggregation", type=click.Choice(AGGREGATIONS), default=None,
                 help="How a two-view model fuses the view features (default concat)."),
    click.option("--threshold-rule", type=click.Choice(THRESHOLD_RULES), default=None,
                 help="How the stored decision threshold is chosen on validation: max_f1 (default), youden, or "
                      "sensitivity (with --target-sensitivity)."),
    click.option("--target-sensitivity", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
                 help="Sensitivity the 'sensitivity' threshold rule must reach on validation (default 0.9)."),
    click.option("--refer-coverage", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
                 metavar="SHARE",
                 help="Choose on validation a referral band around the threshold that answers this share of studies "
                      "(e.g. 0.85); studies inside it are labelled 'refer'. Default: no band."),
    click.option("--refer-sensitivity", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
                 metavar="TARGET",
                 help="Instead of --refer-coverage: the narrowest band whose answered studies reach this "
                      "sensitivity on validation."),
    click.option("--seed", type=int, default=None, help="Random seed for data, splits and weights (default 0)."),
    click.option("--output-dir", type=click.Path(), default=None,
                 help="Where run directories are created (default ./runs)."),
    click.option("--run-name", default=None, help="Run directory name (default: timestamp and model)."),
]


def training_options(command):
    for option in reversed(TRAINING_OPTIONS):
        command = option(command)
    return command


def resolve_options(options: dict):
    """Click option values -> FitConfig (defaults <- preset <- given options)."""
    from tfbonemet import config as config_lib

    options = dict(options)
    preset, image_size = options.pop("preset"), options.pop("image_size")
    aggregation, augment = options.pop("aggregation"), options.pop("augment")
    config_file = options.pop("config_file", None)
    if image_size:
        options.update(image_height=image_size[0], image_width=image_size[1])
    for key in ("data_dir", "init_backbone"):  # a run evaluates from any working directory
        if options.get(key):
            options[key] = os.path.abspath(options[key])
    if aggregation:
        options["model_options"] = {**(options.get("model_options") or {}), "aggregation": aggregation}
    file_values = config_lib.load_config_file(config_file) if config_file else {}
    config = config_lib.resolve(preset, {**file_values, **{k: v for k, v in options.items() if v is not None}})
    if augment is False:
        config.augmentation = {}
    elif augment:
        from tfbonemet.preprocessing.augment import STANDARD

        config.augmentation = STANDARD.as_dict()
    return config


@click.command()
@training_options
@click.option("--resume", "resume_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Continue the killed run in this run directory (its saved configuration; other options ignored).")
def fit(resume_dir, **options):
    """Train a classifier and write a run directory.

    The run directory holds model.keras (best epoch by validation AUC), config.json (the resolved
    configuration), history.csv, metrics.json (validation accuracy, precision, recall,
    specificity, F1, AUC) and TensorBoard logs. A killed run continues with --resume RUN_DIR.
    """
    from tfbonemet.tasks.train import trainer

    if resume_dir:
        given = sorted(k for k, v in options.items() if v is not None)
        if given:
            raise click.UsageError(f"--resume uses the run's saved configuration; drop --{given[0].replace('_', '-')}")
        trainer.resume(resume_dir, log=click.echo)
        return
    trainer.fit(resolve_options(options), log=click.echo)


COMMANDS = [fit]
