"""`tfbonemet models`: the registered architectures, their inputs, size and source paper."""
from __future__ import annotations

import click

from tfbonemet.models.registry import MODELS


def describe(name: str, count_params: bool = True) -> dict:
    """One registry row; the parameter count builds the model at its default input size."""
    spec = MODELS[name]
    row = {"name": name, "inputs": ", ".join(spec.input_names), "channels": spec.default_channels,
           "image_size": "x".join(map(str, spec.default_image_size)), "classes": spec.default_num_classes,
           "gradcam": ", ".join(spec.gradcam_layers), "paper": spec.paper, "params": None}
    if count_params:
        import keras

        from tfbonemet.models import build_model

        row["params"] = build_model(name).count_params()
        keras.backend.clear_session()
    return row


@click.command()
@click.argument("names", nargs=-1, type=click.Choice(sorted(MODELS)), metavar="[NAME]...")
@click.option("--params/--no-params", default=True, show_default=True,
              help="Count parameters (builds each model at its default input size: a few seconds each).")
def models(names, params):
    """List registered models (all, or NAMES): parameters, default input, inputs, Grad-CAM layers, paper.

    Train one with `tfbonemet fit --model NAME`.
    """
    for name in names or sorted(MODELS):
        row = describe(name, params)
        count = f"{row['params']:,} params" if row["params"] is not None else "params not counted"
        click.echo(f"{name:<17} {count:>20}  input {row['image_size']} x{row['channels']}  "
                   f"{row['classes']} classes  inputs: {row['inputs']}")
        click.echo(f"{'':<17} Grad-CAM: {row['gradcam']}")
        click.echo(f"{'':<17} {row['paper']}")


COMMANDS = [models]
