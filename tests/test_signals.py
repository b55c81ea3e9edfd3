"""SIGTERM and Ctrl-C in the middle of a command, and two processes on the same output at once.

A signal is sent by the command to itself at a chosen moment (a patched step of its work), so each
case stops where it must: mid-write of the predictions file, while an export is being staged, while
TFDS writes a dataset. Each must end with one line, exit status 128 + the signal, nothing
half-written, no staging left and what was there before intact. A lock held by this test process
stands in for a second tfbonemet process: the command must refuse, name what is busy and write
nothing. (A fit stopped by SIGTERM and resumed is in test_kill.py: it trains in a subprocess.)
"""
from __future__ import annotations

import fcntl
import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from tfbonemet import signals
from tfbonemet.cli import cli
from tfbonemet.io.lock import exclusive


def invoke(args) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


def stopped(output: str, signum: int) -> str:
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    assert f"stopped by {signal.Signals(signum).name}" in errors[0]
    return errors[0]


def send_after(calls: int, signum: int, function):
    """`function`, sending `signum` to this process on its `calls`-th call (after it ran)."""
    seen = []

    def wrapped(*args, **kwargs):
        result = function(*args, **kwargs)
        seen.append(1)
        if len(seen) == calls:
            os.kill(os.getpid(), signum)
        return result
    return wrapped


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("signals") / "dicom"
    code, output = invoke(["data", "phantom", root, "--num-studies", "24", "--size", "64", "16"])
    assert code == 0, output
    return root


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")
                  if ".part" in p.name or p.name.endswith(".lock") or p.name.startswith(("incomplete.", ".export.")))


# ---------------------------------------------------------------- signals

def test_the_stop_message_and_exit_status():
    for signum, status in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        exc = signals.Stopped(signum)
        assert signals.exit_status(exc) == status
        assert signals.message(exc).startswith(f"stopped by {signal.Signals(signum).name}")
    assert signals.exit_status(KeyboardInterrupt()) == 130  # Ctrl-C raised by Python itself


def test_a_signal_in_a_deferred_block_waits_for_its_end():
    done = []
    with signals.handling():
        with pytest.raises(signals.Stopped):
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("the block went on")
        assert done == ["the block went on"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after the command


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopped_predict_keeps_the_previous_file_whole(signum, tiny_run_dir, phantom, tmp_path, monkeypatch):
    import tfbonemet.tasks.predict as predict

    out = tmp_path / "predictions.csv"
    out.write_text("the previous predictions\n")
    monkeypatch.setattr(predict, "iter_predictions", send_after(1, signum, predict.iter_predictions))
    code, output = invoke(["predict", tiny_run_dir, phantom, "-o", out])
    assert code == 128 + signum
    stopped(output, signum)
    assert out.read_text() == "the previous predictions\n"
    assert leftovers(tmp_path) == []


def test_stopped_export_leaves_no_staging_and_keeps_the_last_version(tiny_run_dir, tmp_path, monkeypatch):
    from tfbonemet.tasks.export import task

    kept = tmp_path / "models" / "tiny_model" / "1"
    kept.mkdir(parents=True)
    (kept / "saved_model.pb").write_bytes(b"the last complete export")

    def staging_then_stop(run, info, staging, *args):
        (staging / "saved_model.pb").write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(task, "_build", staging_then_stop)
    code, output = invoke(["export", tiny_run_dir, "--output-dir", tmp_path / "models", "--model-name", "tiny_model",
                           "--format", "savedmodel"])
    assert code == 143, output
    stopped(output, signal.SIGTERM)
    assert sorted(p.name for p in (tmp_path / "models" / "tiny_model").iterdir()) == ["1"]
    assert (kept / "saved_model.pb").read_bytes() == b"the last complete export"
    assert leftovers(tmp_path) == []


def test_a_fit_stopped_before_its_first_epoch_ends_leaves_no_run(tmp_path, monkeypatch):
    """history.csv is opened as training starts: a stop before an epoch has finished keeps no run directory
    (nothing to resume) and says nothing about a best model."""
    import keras

    monkeypatch.setattr(keras.callbacks.CSVLogger, "on_train_begin",
                        send_after(1, signal.SIGTERM, keras.callbacks.CSVLogger.on_train_begin))
    code, output = invoke(["fit", "--num-studies", "16", "--image-size", "64", "32", "--epochs", "3",
                           "--batch-size", "4", "--model-option", "filters=[4,8]", "--output-dir", tmp_path / "runs",
                           "--run-name", "stopped"])
    assert code == 143, output
    assert "nothing half-written was kept" in stopped(output, signal.SIGTERM)
    assert not (tmp_path / "runs" / "stopped").exists()


def test_stopped_data_build_leaves_no_partial_dataset(phantom, tmp_path, monkeypatch):
    import tfds_builders.bone_scintigraphy.bone_scintigraphy_dataset_builder as builder

    monkeypatch.setattr(builder, "png16", send_after(5, signal.SIGTERM, builder.png16))
    data_dir = tmp_path / "tfds"
    build = ["data", "build", "--dataset", "bone_scintigraphy", "--manual-dir", phantom, "--data-dir", data_dir]
    code, output = invoke(build)
    assert code == 143, output
    stopped(output, signal.SIGTERM)
    config_dir = data_dir / "bone_scintigraphy" / "binary"
    assert not (config_dir / "1.0.0").exists() and leftovers(data_dir) == []
    monkeypatch.undo()
    code, output = invoke(build)  # and the next build is whole
    assert code == 0, output
    assert (config_dir / "1.0.0" / "dataset_info.json").is_file()


# ---------------------------------------------------------------- two processes at once

@pytest.fixture
def held():
    """Hold a lock file as another process would (flock conflicts between open files, even in one process)."""
    handles = []

    def hold(path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "w")
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.write("4242\n")
        fh.flush()
        handles.append(fh)
        return path
    yield hold
    for fh in handles:
        fh.close()


def refused(output: str, *words: str) -> None:
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    for word in ("in use by another tfbonemet process", "4242", *words):
        assert word in errors[0], errors[0]


def test_two_predictions_into_one_file(tiny_run_dir, phantom, tmp_path, held):
    out = tmp_path / "p.csv"
    out.write_text("the other process's predictions\n")
    held(tmp_path / ".p.csv.lock")
    code, output = invoke(["predict", tiny_run_dir, phantom, "-o", out])
    assert code == 1
    refused(output, str(out))
    assert out.read_text() == "the other process's predictions\n"


def test_two_resumes_of_one_run(tiny_run_dir, tmp_path, held):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run)
    (run / "metrics.json").unlink()
    held(run / ".tfbonemet.lock")
    code, output = invoke(["fit", "--resume", run])
    assert code == 1
    refused(output, str(run))
    assert not (run / "metrics.json").exists()


def test_two_builds_into_one_data_dir(phantom, tmp_path, held):
    data_dir = tmp_path / "tfds"
    held(data_dir / "bone_scintigraphy" / "binary" / ".building.lock")
    code, output = invoke(["data", "build", "--dataset", "bone_scintigraphy", "--manual-dir", phantom,
                           "--data-dir", data_dir])
    assert code == 1
    refused(output, "bone_scintigraphy")
    assert sorted(p.name for p in (data_dir / "bone_scintigraphy" / "binary").iterdir()) == [".building.lock"]


def test_two_exports_of_one_model(tiny_run_dir, tmp_path, held):
    held(tmp_path / "models" / ".tiny_model.export.lock")
    code, output = invoke(["export", tiny_run_dir, "--output-dir", tmp_path / "models", "--model-name", "tiny_model"])
    assert code == 1
    refused(output, "tiny_model")
    assert not (tmp_path / "models" / "tiny_model").exists()


def test_a_lock_is_released_and_removed(tmp_path):
    path = tmp_path / ".x.lock"
    with exclusive(path, "x"):
        assert path.read_text().strip() == str(os.getpid())
        with pytest.raises(Exception, match="in use by another tfbonemet process"):
            with exclusive(path, "x"):
                pass
    assert not path.exists()
    with exclusive(path, "x"):  # free again
        pass


def test_workers_of_one_job_share_its_run_and_another_job_is_refused(tmp_path):
    from tfbonemet.errors import ConfigError
    from tfbonemet.io.lock import join

    lock = tmp_path / ".tfbonemet.lock"
    with exclusive(lock, "run r", job="job-a"):  # the chief of job a
        join(lock, "run r", "job-a")  # its workers read along
        with pytest.raises(ConfigError, match="in use by another tfbonemet job"):
            join(lock, "run r", "job-b")
        with pytest.raises(ConfigError, match="in use by another tfbonemet process"):
            with exclusive(lock, "run r", job="job-b"):  # the chief of job b, or a fit --resume
                pass
    with exclusive(lock, "run r"):  # a single process (fit --resume) holds the run
        with pytest.raises(ConfigError, match="in use by another tfbonemet process"):
            join(lock, "run r", "job-a")
    join(lock, "run r", "job-b")  # free again: a new job may start


@pytest.mark.parametrize("index", [0, 1], ids=["chief", "worker"])
def test_a_second_multi_worker_job_on_a_run_is_refused_before_it_waits(index, tmp_path):
    """A worker of another job is refused at once (it would otherwise wait for its peers for ever)."""
    import json
    import subprocess
    import sys

    run = tmp_path / "runs" / "shared"
    run.mkdir(parents=True)
    lock = run / ".tfbonemet.lock"
    with exclusive(lock, "run", job="job-of-the-first"):
        tf_config = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": index}}
        result = subprocess.run(
            [sys.executable, "-m", "tfbonemet.cli", "fit", "--strategy", "multi-worker", "--run-name", "shared",
             "--output-dir", str(tmp_path / "runs"), "--num-studies", "16", "--epochs", "1"],
            env={**os.environ, "TF_CONFIG": json.dumps(tf_config)}, capture_output=True, text=True, timeout=300)
        assert lock.read_text().split() == [str(os.getpid()), "job-of-the-first"]
    errors = [line for line in result.stderr.splitlines() + result.stdout.splitlines() if line.startswith("Error:")]
    assert result.returncode == 1 and len(errors) == 1, result.stdout + result.stderr
    assert "in use by another tfbonemet job" in errors[0] and str(run) in errors[0]
    assert sorted(p.name for p in run.iterdir()) == []
