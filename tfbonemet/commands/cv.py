"""`tfbonemet cv`: patient-level k-fold cross-validation with the options of `tfbonemet fit`."""
from __future__ import annotations

import click

from tfbonemet.commands.fit import resolve_options, training_options


@click.command()
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True, help="Number of folds.")
@training_options
def cv(folds, **options):
    """Cross-validate over patient-level folds; writes fold-K run directories and cv.json (mean ± std).

    Rerun the same command to continue an interrupted cross-validation.
    """
    from tfbonemet.tasks.cv import cross_validate

    cross_validate(resolve_options(options), folds, log=click.echo)


COMMANDS = [cv]
