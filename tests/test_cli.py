"""The command line as a user meets it: help, a tiny end-to-end fit, and one-line errors."""
import json
import os

import pytest
from click.testing import CliRunner

from tfbonemet.cli import cli

TINY_ARGS = ["--num-studies", "40", "--image-size", "128", "32", "--epochs", "1", "--batch-size", "8"]


def run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_help_explains_every_fit_option():
    top = run(["--help"])
    assert top.exit_code == 0 and "fit" in top.output
    result = run(["fit", "--help"])
    assert result.exit_code == 0
    for param in cli.commands["fit"].params:
        if param.name != "help":
            assert param.opts[0] in result.output
            assert param.help, f"{param.opts[0]} has no help text"



def test_command_line_uses_no_deprecated_click_api():
    """Deprecated click attributes warn in a user's terminal and go away in click 9."""
    import subprocess
    import sys

    for args in (["--help"], ["evaluate", "--help"]):
        done = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-m", "tfbonemet.cli", *args],
                              capture_output=True, text=True)
        assert done.returncode == 0 and "DeprecationWarning" not in done.stderr, done.stderr

def test_fit_writes_run_directory(tmp_path):
    result = run(["fit", *TINY_ARGS, "--output-dir", str(tmp_path), "--run-name", "cli"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "cli"
    assert {"model.keras", "config.json", "history.csv", "metrics.json"} <= set(os.listdir(run_dir))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["num_studies"] == 40 and config["image_height"] == 128 and config["epochs"] == 1
    figures = json.loads((run_dir / "metrics.json").read_text())
    assert figures["n"] == 6 and figures["split"] == "validation"  # 15% of 40 studies, by patient
    assert json.loads((run_dir / "preprocessor.json").read_text())["image_size"] == [128, 32]
    history = (run_dir / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch") and "val_auc" in history[0] and len(history) == 2
    assert "Validation:" in result.output and "auc" in result.output
    assert not list(run_dir.glob("*.part*")), "temporary files left behind"


def _assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0]


def test_unknown_option_value_is_one_line():
    _assert_one_line_error(run(["fit", "--model", "no_such_net"]), "no_such_net")


def test_output_dir_that_is_a_file(tmp_path):
    target = tmp_path / "occupied"
    target.write_text("not a directory")
    _assert_one_line_error(run(["fit", *TINY_ARGS, "--output-dir", str(target)]), str(target), "not a folder")


def test_unwritable_output_dir():
    _assert_one_line_error(run(["fit", *TINY_ARGS, "--output-dir", "/proc/tfbonemet-runs"]),
                           "/proc/tfbonemet-runs", "cannot write")


def test_existing_run_name_is_refused(tmp_path):
    (tmp_path / "taken").mkdir()
    _assert_one_line_error(run(["fit", *TINY_ARGS, "--output-dir", str(tmp_path), "--run-name", "taken"]),
                           "already exists")


@pytest.mark.parametrize("module", ["cli"])
def test_top_level_cli_is_a_thin_entry(module):
    import runpy
    import sys
    from pathlib import Path

    entry = Path(__file__).resolve().parents[1] / "cli.py"
    argv = sys.argv
    sys.argv = [str(entry), "--help"]
    try:
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(entry), run_name="__main__")
    finally:
        sys.argv = argv
    assert exit_info.value.code == 0


def test_option_a_model_does_not_take_is_one_line(tmp_path):
    result = run(["fit", *TINY_ARGS, "--model", "dscint", "--aggregation", "attention", "--output-dir", str(tmp_path)])
    _assert_one_line_error(result, "dscint", "aggregation")
    assert not list(tmp_path.iterdir()), "a refused run leaves no run directory"
