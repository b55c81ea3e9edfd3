"""`tfbonemet fit`: train a classifier and write a run directory."""
from __future__ import annotations

import click

from tfbonemet.data.pipeline import TASKS
from tfbonemet.models import MODELS
from tfbonemet.models.layers import AGGREGATIONS
from tfbonemet.train import PRECISIONS


@click.command()
@click.option("--preset", default=None, help="Named experiment preset (see `tfbonemet presets`); options below override it.")
@click.option("--model", type=click.Choice(sorted(MODELS)), default=None,
              help="Registered model to train (see `tfbonemet models`). Default: two_view_net.")
@click.option("--task", type=click.Choice(list(TASKS)), default=None,
              help="binary: metastasis or not; multiclass: normal / metastasis / arthritis / thyroid carcinoma.")
@click.option("--data", default=None, help="Data source. Default 'phantom': the built-in synthetic bone-scan set.")
@click.option("--num-studies", type=click.IntRange(min=8), default=None,
              help="Studies in the synthetic set (default 320; split 70/15/15 by patient).")
@click.option("--image-size", nargs=2, type=click.IntRange(min=32), default=None, metavar="H W",
              help="Model input height and width per view (default 512 128).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs (default 12).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Batch size (default 16).")
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Adam learning rate (default 2e-3).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Keras dtype policy (default float32).")
@click.option("--aggregation", type=click.Choice(AGGREGATIONS), default=None,
              help="How a two-view model fuses the view features (default concat).")
@click.option("--seed", type=int, default=None, help="Random seed for data, splits and weights (default 0).")
@click.option("--output-dir", type=click.Path(), default=None, help="Where run directories are created (default ./runs).")
@click.option("--run-name", default=None, help="Run directory name (default: timestamp and model).")
def fit(preset, model, task, data, num_studies, image_size, epochs, batch_size, learning_rate, precision,
        aggregation, seed, output_dir, run_name):
    """Train a classifier and write a run directory.

    The run directory holds model.keras (best epoch by validation AUC), config.json (the resolved
    configuration), history.csv, metrics.json (validation accuracy, precision, recall,
    specificity, F1, AUC) and TensorBoard logs.
    """
    from tfbonemet import config as config_lib
    from tfbonemet.train import fit as run_fit

    overrides = dict(model=model, task=task, data=data, num_studies=num_studies, epochs=epochs,
                     batch_size=batch_size, learning_rate=learning_rate, precision=precision, seed=seed,
                     output_dir=output_dir, run_name=run_name)
    if image_size:
        overrides.update(image_height=image_size[0], image_width=image_size[1])
    if aggregation:
        overrides["model_options"] = {"aggregation": aggregation}
    run_fit(config_lib.resolve(preset, overrides), log=click.echo)


COMMANDS = [fit]
