"""`tfbonemet pretrain`: pre-train a model's backbone on a chest X-ray TFDS build."""
from __future__ import annotations

import click

from tfbonemet.models.registry import MODELS
from tfbonemet.vocab import JIT_MODES, PRECISIONS, STRATEGIES


@click.command()
@click.option("--model", type=click.Choice(sorted(m for m, spec in MODELS.items() if spec.pretrainable)),
              default="two_view_net", show_default=True, help="Registered model whose backbone is pre-trained.")
@click.option("--data", default="tfds:chest_xray", show_default=True, help="TFDS chest X-ray dataset.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="TFDS data_dir holding (or receiving) the chest_xray build.")
@click.option("--manual-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Chest X-ray images (train/ val/ test/ with NORMAL/ PNEUMONIA/, or labels.csv) to build from.")
@click.option("--image-size", nargs=2, type=click.IntRange(min=32), default=(512, 128), show_default=True,
              metavar="H W", help="Input size: use the size you will fine-tune at.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--augment/--no-augment", default=False, help="Standard training augmentation.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="float32", show_default=True)
@click.option("--jit", type=click.Choice(JIT_MODES), default="auto", show_default=True)
@click.option("--strategy", type=click.Choice(STRATEGIES), default="default", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--output-dir", type=click.Path(), default="runs", show_default=True)
@click.option("--run-name", default=None, help="Run directory name (default: timestamp and model).")
def pretrain(model, data, data_dir, manual_dir, image_size, epochs, batch_size, learning_rate, augment, precision,
             jit, strategy, seed, output_dir, run_name):
    """Pre-train a backbone on chest X-rays; writes RUN/backbone.keras for `fit --init-backbone`."""
    from tfbonemet.config import FitConfig
    from tfbonemet.preprocessing.augment import STANDARD
    from tfbonemet.tasks.pretrain import pretrain as run_pretrain

    config = FitConfig(model=model, data=data, data_dir=data_dir, manual_dir=manual_dir, image_height=image_size[0],
                       image_width=image_size[1], epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                       augmentation=STANDARD.as_dict() if augment else {}, precision=precision, jit=jit,
                       strategy=strategy, seed=seed, output_dir=output_dir,
                       run_name=run_name)
    run_pretrain(config, log=click.echo)


COMMANDS = [pretrain]
