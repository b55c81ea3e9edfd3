"""Kill tests: `fit` killed mid-epoch, during the epoch's backup and during `_finish`, and `data build`
killed while TFDS writes, each with SIGKILL at a moment found by polling for the files that phase writes;
`fit` stopped mid-epoch by SIGTERM and by Ctrl-C (SIGINT).

After each kill the best model so far survives; the next run (a resume, or the same build again) finishes,
reports the best epoch's figures, and leaves no staging behind (best.keras, backup/, `.part` files, TFDS
`incomplete.*` folders). Each test trains or builds in a subprocess, so all are marked slow.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tfbonemet.cli import cli

pytestmark = pytest.mark.slow

FIT = ["fit", "--num-studies", "48", "--image-size", "128", "32", "--epochs", "3", "--batch-size", "8",
       "--model-option", "filters=[8,16,16]", "--no-augment"]
CLI = "import sys; from tfbonemet.cli import main; sys.argv[0] = 'tfbonemet'; main(sys.argv[1:])"


def kill_when(args: list, ready, timeout: float = 300) -> int:
    """Start `tfbonemet ARGS` and SIGKILL it the moment `ready()` is true; fails if it ends first."""
    proc = subprocess.Popen([sys.executable, "-c", CLI, *map(str, args)], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`tfbonemet {' '.join(map(str, args[:2]))}` ended (rc {proc.returncode}) or stalled "
                            f"before the moment to kill it")
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    return proc.returncode


def val_aucs(run_dir: Path) -> list[float]:
    with (run_dir / "history.csv").open(newline="") as fh:
        return [float(row["val_auc"]) for row in csv.DictReader(fh)]


def staging_left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".part" in p.name or p.name.startswith("incomplete."))


def backup_metadata(run_dir: Path) -> Path:
    return run_dir / "backup" / "train" / "training_metadata.json"


def mid_epoch(run_dir: Path):
    """Epoch 1 backed up: the process is into epoch 2."""
    return lambda: backup_metadata(run_dir).exists()


def during_backup(run_dir: Path):
    """Epoch 1's checkpoint is written and its backup is being written, not yet finished."""
    return lambda: (run_dir / "best.keras").exists() and (run_dir / "backup").exists() \
        and not backup_metadata(run_dir).exists()


def during_finish(run_dir: Path):
    """model.keras is in place, metrics.json not yet: `_finish` is writing the run's results."""
    return lambda: (run_dir / "model.keras").exists()


@pytest.mark.parametrize("phase", [mid_epoch, during_backup, during_finish], ids=lambda f: f.__name__)
def test_killed_fit_keeps_the_best_model_and_resumes(phase, tmp_path):
    run_dir = tmp_path / "run"
    assert kill_when([*FIT, "--output-dir", tmp_path, "--run-name", "run"], phase(run_dir)) == -signal.SIGKILL
    assert (run_dir / "best.keras").is_file(), "the best model so far was lost"
    assert not (run_dir / "metrics.json").exists()

    result = CliRunner().invoke(cli, ["fit", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["auc"] == pytest.approx(max(val_aucs(run_dir)), abs=1e-6)  # the best epoch, not the last
    assert len(val_aucs(run_dir)) == 3  # one row per epoch, none repeated
    assert not (run_dir / "best.keras").exists() and not (run_dir / "backup").exists()
    assert staging_left(run_dir) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_fit_stopped_by_a_signal_says_so_and_resumes(signum, tmp_path):
    """A scheduler's SIGTERM or a user's Ctrl-C mid-epoch: one line, exit 128 + signal, the best model and
    last finished epoch kept, no temporary file; --resume finishes the run."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", CLI, *map(str, [*FIT, "--output-dir", tmp_path, "--run-name",
                                                                    "run"])],
                            env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not mid_epoch(run_dir)():
        assert proc.poll() is None and time.monotonic() < deadline, "fit ended before the moment to stop it"
        time.sleep(0.005)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in out + err
    errors = [line for line in (out + err).splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"stopped by {signal.Signals(signum).name}" in errors[0], errors
    assert f"--resume {run_dir}" in errors[0]
    assert (run_dir / "best.keras").is_file() and not (run_dir / "metrics.json").exists()
    assert staging_left(run_dir) == [] and not (run_dir / ".tfbonemet.lock").exists()

    result = CliRunner().invoke(cli, ["fit", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert len(val_aucs(run_dir)) == 3
    assert not (run_dir / "best.keras").exists() and staging_left(run_dir) == []


def test_killed_data_build_leaves_nothing_after_the_next_build(tmp_path):
    source = tmp_path / "source"
    result = CliRunner().invoke(cli, ["data", "phantom", str(source), "--num-studies", "60", "--size", "256", "64"])
    assert result.exit_code == 0, result.output
    data_dir = tmp_path / "tfds"
    config_dir = data_dir / "bone_scintigraphy" / "binary"
    build = ["data", "build", "--dataset", "bone_scintigraphy", "--manual-dir", source, "--data-dir", data_dir]

    def writing():
        return any(p.is_file() for p in config_dir.glob("incomplete.*/*"))

    assert kill_when(build, writing) == -signal.SIGKILL
    assert [p.name for p in config_dir.glob("incomplete.*")], "the kill came after TFDS had finished"
    assert not (config_dir / "1.0.0").exists()  # no partial version

    result = CliRunner().invoke(cli, [str(a) for a in build])
    assert result.exit_code == 0, result.output
    assert staging_left(data_dir) == [] and not list(config_dir.glob(".building.*"))
    assert (config_dir / "1.0.0" / "dataset_info.json").is_file()
