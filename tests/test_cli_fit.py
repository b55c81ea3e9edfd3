"""`tfbonemet fit`, `presets`, `pretrain` and `cv` on the command line: options, presets, one-line errors."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tfbonemet.cli import cli
from tfbonemet.commands.fit import resolve_options
from tfbonemet.preprocessing.augment import STANDARD

OPTIONS = dict.fromkeys(["preset", "model", "task", "data", "data_dir", "manual_dir", "num_studies", "image_size",
                         "epochs", "batch_size", "learning_rate", "lr_schedule", "early_stopping", "augment", "loss",
                         "sampling", "precision", "jit", "strategy", "init_backbone", "head_epochs", "aggregation",
                         "seed", "output_dir", "run_name"])


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_options_override_the_preset_which_overrides_defaults():
    config = resolve_options({**OPTIONS, "preset": "lin2021-dscint", "epochs": 3, "image_size": (256, 64)})
    assert (config.model, config.task, config.loss, config.epochs) == ("dscint", "multiclass", "focal", 3)
    assert (config.image_height, config.image_width) == (256, 64)
    assert config.augmentation["noise_counts"] == 200.0
    assert resolve_options({**OPTIONS, "preset": "lin2021-dscint", "augment": False}).augmentation == {}
    assert resolve_options({**OPTIONS, "augment": True}).augmentation == STANDARD.as_dict()
    assert resolve_options({**OPTIONS, "aggregation": "attention"}).model_options == {"aggregation": "attention"}


def test_fit_from_the_command_line_records_the_resolved_configuration(tmp_path):
    result = run("fit", "--num-studies", "40", "--image-size", "128", "32", "--epochs", "1", "--batch-size", "8",
                 "--augment", "--sampling", "balanced", "--jit", "off", "--output-dir", str(tmp_path),
                 "--run-name", "cli")
    assert result.exit_code == 0, result.output
    assert "Validation:" in result.output and "class-balanced sampling" in result.output
    saved = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert saved["augmentation"] == STANDARD.as_dict() and saved["sampling"] == "balanced" and saved["jit"] == "off"


@pytest.mark.parametrize("args, message", [
    (["fit", "--preset", "nope"], "unknown preset 'nope'"),
    (["fit", "--data", "s3://bucket/scans"], "not supported"),
    (["fit", "--data", "tfds:"], "names no dataset"),
    (["presets", "--show", "nope"], "unknown preset"),
])
def test_user_errors_are_one_line(args, message):
    result = run(*args)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output


def test_resume_takes_no_other_options(tmp_path):
    result = run("fit", "--resume", str(tmp_path), "--epochs", "3")
    assert result.exit_code != 0 and "--epochs" in result.output
    result = run("fit", "--resume", str(tmp_path))
    assert result.exit_code != 0 and "not a run directory" in result.output


def test_presets_are_listed_and_shown():
    result = run("presets")
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.output.splitlines()]
    assert {"guo2023-two-view", "lin2021-thoracic", "yim2022-vgg16", "lin2021-dscint",
            "wang2018-resnet-finetune"} <= set(names)
    shown = run("presets", "--show", "guo2023-two-view")
    assert "model: two_view_net" in shown.output and "description" not in shown.output


def test_pretrain_and_cv_commands_are_registered():
    assert "--manual-dir" in run("pretrain", "--help").output
    assert "--folds" in run("cv", "--help").output and "--preset" in run("cv", "--help").output
