"""`tfbonemet presets`: list the named experiment presets and what each reproduces."""
from __future__ import annotations

import click


@click.command()
@click.option("--show", "name", default=None, help="Print one preset's settings as YAML.")
def presets(name):
    """List named experiment presets (use with `tfbonemet fit --preset NAME`)."""
    import yaml

    from tfbonemet import config as config_lib

    if name:
        click.echo(yaml.safe_dump(config_lib.load_preset(name), sort_keys=True).rstrip())
        return
    for preset in config_lib.preset_names():
        first_line = config_lib.preset_description(preset).splitlines()[0] if config_lib.preset_description(preset) else ""
        click.echo(f"{preset:28s} {first_line}")


COMMANDS = [presets]
