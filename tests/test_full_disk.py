"""A disk that fills up mid-write: `predict -o`, `export`, `data build` and `fit` on a small tmpfs.

Each test mounts its own small tmpfs (root only; skipped, with the reason, where mounting is not
allowed) and fills it, so the command runs out of space while it writes. Each must end with one
`Error:` line naming the path and "no space left", with the previous good state intact (the last
predictions file, the last complete export version, the best model so far) and no staging left.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tfbonemet.cli import cli

PAGE = 4096


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs mounted for the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill `disk` up, then free about `leave` bytes; returns the filler file."""
    filler = disk / "filler"
    chunk = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as fh:
        for size in (1 << 20, PAGE):
            try:
                while True:
                    fh.write(chunk[:size])
            except OSError:
                pass
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def one_error(args, *words) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    for word in ("no space left", *words):
        assert word.lower() in errors[0].lower(), errors[0]
    return errors[0]


def staging(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".part" in p.name or p.name.endswith(".lock")
                  or p.name.startswith(("incomplete.", ".export.", ".building.")))


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("full-disk") / "dicom"
    result = CliRunner().invoke(cli, ["data", "phantom", str(root), "--num-studies", "40", "--size", "256", "64"])
    assert result.exit_code == 0, result.output
    return root


def test_predict_onto_a_full_disk_keeps_the_previous_file(tiny_run_dir, studies, small_disk):
    out = small_disk / "predictions.csv"
    out.write_text("the previous predictions\n")
    fill(small_disk)
    one_error(["predict", tiny_run_dir, studies, "-o", out], str(out))
    assert out.read_text() == "the previous predictions\n"
    assert staging(small_disk) == []


def test_export_onto_a_full_disk_keeps_the_last_version(tiny_run_dir, small_disk):
    last = small_disk / "models" / "tiny" / "1"
    last.mkdir(parents=True)
    (last / "saved_model.pb").write_bytes(b"the last complete export")
    fill(small_disk, leave=64 * PAGE)
    one_error(["export", tiny_run_dir, "--output-dir", small_disk / "models", "--model-name", "tiny",
               "--format", "savedmodel"], str(small_disk))
    assert sorted(p.name for p in last.parent.iterdir()) == ["1"]
    assert (last / "saved_model.pb").read_bytes() == b"the last complete export"
    assert staging(small_disk) == []


def test_data_build_onto_a_full_disk_leaves_no_partial_dataset(studies, small_disk, monkeypatch):
    monkeypatch.setenv("TFBONEMET_SECRET", "test-site-secret")
    fill(small_disk, leave=64 * PAGE)
    data_dir = small_disk / "tfds"
    one_error(["data", "build", "--dataset", "bone_scintigraphy", "--manual-dir", studies, "--data-dir", data_dir],
              str(small_disk))
    config_dir = data_dir / "bone_scintigraphy" / "binary"
    assert not config_dir.exists()  # a first build: not even its empty folder stays
    assert staging(small_disk) == []


CLI = "import sys; from tfbonemet.cli import main; sys.argv[0] = 'tfbonemet'; main(sys.argv[1:])"
FIT = ["fit", "--num-studies", "48", "--image-size", "128", "32", "--epochs", "4", "--batch-size", "8",
       "--model-option", "filters=[8,16,16]", "--no-augment"]


@pytest.mark.slow
def test_fit_onto_a_disk_that_fills_keeps_the_best_model_and_resumes(small_disk):
    """The disk fills once the first epoch is backed up: fit stops with one line, best.keras of epoch 1
    is whole, and once space is freed --resume finishes the run."""
    run_dir = small_disk / "run"
    proc = subprocess.Popen([sys.executable, "-c", CLI, *map(str, [*FIT, "--output-dir", small_disk, "--run-name",
                                                                    "run"])],
                            env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (run_dir / "backup" / "train" / "training_metadata.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "fit ended before the disk could fill"
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)  # hold it while the disk fills, so the fill is not a race
    best = (run_dir / "best.keras").read_bytes()
    filler = fill(small_disk)
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err
    assert "Traceback" not in out + err, err
    errors = [line for line in (out + err).splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "no space left" in errors[0].lower(), errors
    assert (run_dir / "best.keras").read_bytes() == best  # the best model so far, whole
    assert not (run_dir / "metrics.json").exists()
    assert [p for p in staging(run_dir) if ".part" in p] == []

    filler.unlink()
    result = CliRunner().invoke(cli, ["fit", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "metrics.json").is_file() and not (run_dir / "best.keras").exists()
    shutil.rmtree(run_dir)


def test_a_full_disk_deep_inside_a_library_is_one_line():
    """What the command line says when a library (Keras, h5py, TensorFlow) meets the full disk."""
    import errno

    from tfbonemet.cli import fault_message

    assert fault_message(OSError(errno.ENOSPC, "No space left on device", "/runs/r/best.keras")).startswith(
        "cannot write /runs/r/best.keras: no space left on device")
    tf_like = type("ResourceExhaustedError", (Exception,), {"message": "/d/x.tfrecord; No space left on device"})
    assert fault_message(tf_like("x")).startswith("no space left on device (/d/x.tfrecord")
    assert fault_message(ValueError("a bug")) is None  # anything else keeps its traceback
