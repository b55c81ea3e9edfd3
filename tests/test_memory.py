"""Memory under load: `predict` over ten times the studies needs about the same memory.

predict reads, predicts and writes a batch at a time; were it to hold every study's pixels, 2,000
studies of two 256x64 views would add well over 100 MiB to its peak over 200 studies. Peak resident
memory is the child process's own (getrusage), so the test process does not count. bench/README.md
("Memory under load") has the 1,000 / 10,000-study figures for predict and data build.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

CLI = "import sys; from tfbonemet.cli import main; sys.argv[0] = 'tfbonemet'; main(sys.argv[1:])"
MEASURE = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def studies(folder: Path, n: int) -> Path:
    """`n` two-view studies as s<i>_ant.png / s<i>_post.png (uint16, 256x64)."""
    folder.mkdir()
    rng = np.random.default_rng(n)
    body = (np.outer(np.hanning(256), np.hanning(64)) * 3000 + 50).astype(np.uint16)
    for i in range(n):
        for view in ("ant", "post"):
            Image.fromarray(body + rng.integers(0, 400, body.shape, dtype=np.uint16)).save(folder / f"s{i}_{view}.png")
    return folder


def peak_mib(args: list) -> float:
    """Peak resident memory of `tfbonemet ARGS`, in MiB (Linux reports ru_maxrss in KiB)."""
    out = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-c", CLI, *map(str, args)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.split()[-1]) / 1024


def test_predict_memory_stays_flat(tiny_run_dir, tmp_path):
    few, many = studies(tmp_path / "few", 200), studies(tmp_path / "many", 2000)
    small = peak_mib(["predict", tiny_run_dir, few, "-o", tmp_path / "few.csv"])
    large = peak_mib(["predict", tiny_run_dir, many, "-o", tmp_path / "many.csv"])
    assert len((tmp_path / "many.csv").read_text().splitlines()) == 2001
    assert large - small < 48, f"peak {small:.0f} MiB over 200 studies, {large:.0f} MiB over 2,000"
