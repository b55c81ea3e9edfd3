"""The `tfbonemet` command line: a thin click layer over the library modules.

User errors (bad option values, unusable paths or files) end with one line naming the problem;
tracebacks are kept for real bugs. Nothing here imports TensorFlow: `--help` and argument errors
answer at once, and a command that needs TensorFlow imports it quietly (its C++ start-up lines
appear only with TFBONEMET_TF_LOGS=1).
"""
from __future__ import annotations

import os
import sys

import click

from tfbonemet.errors import TfbonemetError

TF_LOGS_ENV = "TFBONEMET_TF_LOGS"
HELP_OPTIONS = ("-h", "--help")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines (CUDA probing, absl) sent to /dev/null."""
    if os.environ.get(TF_LOGS_ENV):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pass  # reported with its traceback where the command imports it, stderr restored
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    quiet_absl()


def quiet_absl() -> None:
    """absl's Python WARNING lines (TensorFlow's and Keras' notes on saving and loading) say nothing a user
    can act on, and would come before a command's own Error line; its errors still show."""
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)


class Group(click.Group):
    """Turns tfbonemet's user-facing errors into click's one-line `Error: ...`."""

    def invoke(self, ctx):
        from tfbonemet import signals

        # the subcommand and its arguments, still unparsed (click 9 keeps them all in ctx.args)
        tokens = [*getattr(ctx, "_protected_args", ()), *ctx.args]
        if tokens and not set(HELP_OPTIONS) & set(tokens):
            import_tensorflow_quietly()
        try:
            with signals.handling():
                return super().invoke(ctx)
        except TfbonemetError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt as exc:  # SIGTERM or Ctrl-C: cleanup has run on the way here
            click.echo(f"Error: {signals.message(exc)}", err=True)
            raise click.exceptions.Exit(signals.exit_status(exc)) from None
        except Exception as exc:
            message = fault_message(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


def fault_message(exc: Exception) -> str | None:
    """One line for a fault of the machine rather than a bug (a full disk, a record file damaged while
    it was read) raised from inside a library; None for anything else."""
    from tfbonemet.io.atomic import no_space

    text = str(getattr(exc, "message", None) or exc)
    first = text.split("}}")[-1].split("[Op:")[0].strip().splitlines()[0] if text.strip() else type(exc).__name__
    if no_space(exc):
        where = getattr(exc, "filename", None)
        return (f"cannot write {where}: no space left on device" if where else f"no space left on device ({first})") \
            + "; what was written before is intact: free some space and run the command again"
    if type(exc).__name__ == "DataLossError":
        return f"damaged data: {first}; rebuild the dataset with `tfbonemet data build`"
    return None


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tfbonemet")
def cli():
    """Train, evaluate, explain and deploy bone-metastasis classifiers for bone scintigraphy.

    Start with `tfbonemet fit`: with no arguments it trains a two-view (anterior + posterior)
    classifier on a built-in synthetic bone-scan dataset and writes a run directory.
    """


def _register_commands():
    """Every module in tfbonemet.commands lists its click commands in COMMANDS."""
    import importlib
    import pkgutil

    from tfbonemet import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"tfbonemet.commands.{info.name}")
        for command in getattr(module, "COMMANDS", ()):
            cli.add_command(command)


_register_commands()


def main(argv=None):
    cli.main(args=argv, prog_name="tfbonemet", standalone_mode=True)


if __name__ == "__main__":
    sys.exit(main())
