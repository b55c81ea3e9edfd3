"""A training process killed after an epoch's backup resumes to the epochs and history of an uninterrupted run."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import pytest
from click.testing import CliRunner

from tfbonemet.cli import cli
from tfbonemet.config import resolve
from tfbonemet.tasks.train import trainer as train
from tfbonemet.tasks.train.trainer import fit

CONFIG = dict(num_studies=48, image_height=256, image_width=64, epochs=4, batch_size=8,
              model_options={"filters": [8, 16, 16]})
TRAIN = "from tfbonemet.config import resolve; from tfbonemet.tasks.train.trainer import fit; import json, sys; " \
        "fit(resolve(overrides=json.loads(sys.argv[1])), log=lambda *_: None)"


def history(run_dir):
    with (run_dir / "history.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def kill_after_first_backup(overrides, run_dir, timeout=240):
    proc = subprocess.Popen([sys.executable, "-c", TRAIN, json.dumps(overrides)], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = run_dir / "backup" / "train" / "training_metadata.json"
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"training process ended (rc {proc.returncode}) or stalled before its first backup")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    return proc.returncode


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_history(tmp_path):
    overrides = {**CONFIG, "output_dir": str(tmp_path), "run_name": "killed",
                 "augmentation": {"rotation": 5.0, "flip_left_right": True}}
    run_dir = tmp_path / "killed"
    assert kill_after_first_backup(overrides, run_dir) == -signal.SIGKILL
    assert not (run_dir / "model.keras").exists()
    done_before = json.loads((run_dir / "backup" / "train" / "training_metadata.json").read_text())["epoch"]
    assert 1 <= done_before < CONFIG["epochs"]

    result = CliRunner().invoke(cli, ["fit", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert f"Resuming stage train at epoch {done_before + 1}" in result.output

    reference = fit(resolve(overrides={**overrides, "run_name": "uninterrupted"}), log=lambda *_: None)
    resumed, expected = history(run_dir), history(reference)
    assert [int(r["epoch"]) for r in resumed] == list(range(CONFIG["epochs"]))
    for got, want in zip(resumed, expected):
        for key in ("loss", "val_auc", "val_loss"):
            assert float(got[key]) == pytest.approx(float(want[key]), rel=1e-3, abs=1e-4), (got["epoch"], key)
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_run"] == CONFIG["epochs"]
    assert not (run_dir / "backup").exists()

    again = CliRunner().invoke(cli, ["fit", "--resume", str(run_dir)])
    assert again.exit_code != 0 and "already finished" in again.output


class Crash(Exception):
    pass


def test_crash_after_a_backup_resumes_without_repeating_or_losing_epochs(tmp_path, monkeypatch):
    """In-process stand-in for the kill: the run dies right after epoch 2 is backed up and logged."""
    small = dict(CONFIG, image_height=128, image_width=32, num_studies=40, epochs=3, early_stopping=5,
                 output_dir=str(tmp_path), run_name="crashed")
    backup = keras.callbacks.BackupAndRestore.on_epoch_end

    def crash_after_second_epoch(self, epoch, logs=None):
        backup(self, epoch, logs)
        if epoch == 1:
            raise Crash()
    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "on_epoch_end", crash_after_second_epoch)
    with pytest.raises(Crash):
        fit(resolve(overrides=small), log=lambda *_: None)
    monkeypatch.undo()
    run_dir = tmp_path / "crashed"
    assert [int(r["epoch"]) for r in history(run_dir)] == [0, 1]
    lines = []
    train.resume(run_dir, log=lines.append)
    assert "Resuming stage train at epoch 3 of 3" in lines
    assert [int(r["epoch"]) for r in history(run_dir)] == [0, 1, 2]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_run"] == 3
