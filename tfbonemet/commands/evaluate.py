"""`tfbonemet evaluate`: figures of merit, confidence intervals, calibration and a report for one split."""
from __future__ import annotations

import click

SPLIT_CHOICES = ("train", "validation", "test")


def data_options(data, num_studies, seed):
    """Data options for a bare .keras model (a run directory brings its own in config.json)."""
    return {k: v for k, v in dict(data=data, num_studies=num_studies, seed=seed).items() if v is not None}


data_option_decorators = [
    click.option("--data", default=None, help="For a bare .keras model: data source (default 'phantom')."),
    click.option("--num-studies", type=click.IntRange(min=8), default=None,
                 help="For a bare .keras model: studies in the synthetic set it was trained on (default 320)."),
    click.option("--seed", type=int, default=None, help="For a bare .keras model: the data seed (default 0)."),
]


def with_data_options(command):
    for decorate in reversed(data_option_decorators):
        command = decorate(command)
    return command


@click.command()
@click.argument("run", type=click.Path(exists=True))
@click.option("--split", type=click.Choice(SPLIT_CHOICES), default="test", show_default=True)
@click.option("--target-sensitivity", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Operating point: the highest threshold reaching this sensitivity on the validation split "
                   "(default: Youden's J).")
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(min=10), default=1000, show_default=True,
              help="Patient-level bootstrap resamples for the 95% confidence intervals.")
@click.option("--output-dir", type=click.Path(), default=None, help="Default: RUN/eval-<split>/.")
@with_data_options
def evaluate(run, split, target_sensitivity, n_bootstrap, output_dir, data, num_studies, seed):
    """Evaluate RUN (a run directory or a .keras model) and write metrics.json and report.md.

    Figures: accuracy, precision, recall (sensitivity), specificity, F1, ROC AUC and PR AUC at
    threshold 0.5 and at an operating point chosen on the validation split (binary), or per class
    with macro and micro averages (multiclass); confusion matrix; calibration (ECE, Brier); ROC,
    PR and reliability plots; and published figures from other datasets for scale.
    """
    from tfbonemet.tasks.evaluate import run_evaluation
    from tfbonemet.tasks.train.run_dir import sweep_run

    sweep_run(run, click.echo)
    run_evaluation(run, split, output_dir, log=click.echo, target_sensitivity=target_sensitivity,
                   n_bootstrap=n_bootstrap, data_options=data_options(data, num_studies, seed))


COMMANDS = [evaluate]
