"""bench/bench_monai.py's arithmetic and worker protocol, without TensorFlow or torch in the worker."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_monai  # noqa: E402


def row(auto=None):
    """One net: float32 0.5 s/step, torch 1.0 s/step at batch 16; 1 GFLOP forward per image."""
    f32 = {"precision": "float32", "jit": False, "batch": 16, "flops": 1e9, "why": ["kept float32"]}
    out = {"net": "densenet121", "size": [128, 128], "best": {"torch": 1.0, "float32": 0.5},
           "torch_ready": {"label": "monai.networks.nets.DenseNet121", "batch": 16}, "float32_ready": f32}
    if auto:
        out["best"]["auto"] = 0.25
        out["auto_ready"] = {"precision": "mixed_bfloat16", "jit": False, "batch": 16}
    return out


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def test_float32_choice_row():
    """32 img/s vs 16: ratio 2.00; 3 x 1 GFLOP x 32 img/s = 96 GFLOP/s = 48 % of a 200 GFLOP/s peak."""
    (line,) = bench_monai.table_rows(row(), {"float32": 200.0})
    c = cells(line)
    assert len(c) == len(cells(bench_monai.TABLE_HEAD.splitlines()[0]))
    assert c[3:] == ["32.0", "float32, XLA off", "32.0", "16.0", "2.00", "2.00", "48", "48", "24"]


def test_bfloat16_choice_is_scored_against_the_bfloat16_peak():
    (line,) = bench_monai.table_rows(row(auto=True), {"float32": 200.0, "bfloat16": 400.0})
    c = cells(line)
    assert c[4:7] == ["mixed_bfloat16, XLA off", "64.0", "16.0"]
    assert c[8:12] == ["4.00", "48", "48", "24"]  # 3 x 64 GFLOP/s of 400


def test_variant_rows_use_their_own_batch():
    r = row()
    r["best"]["b32"] = 0.8
    r["b32_ready"] = {"batch": 32}
    lines = bench_monai.table_rows(r, {"float32": 200.0}, ["b32:batch=32"])
    assert cells(lines[1])[3] == "40.0" and cells(lines[1])[7] == "2.50"


def test_best_peak_keeps_the_highest_per_dtype():
    assert bench_monai.best_peak({"float32": 90.0}, {"float32": 120.0, "bfloat16": 30.0}) == \
        {"float32": 120.0, "bfloat16": 30.0}


def test_worker_protocol_round_trip():
    """A worker serving `serve`: ready line first, then seconds per step for each request."""
    code = ("import sys; sys.path.insert(0, 'bench'); from bench_monai import serve; "
            "serve({'label': 'fake', 'warm_s': 0.5}, lambda steps: steps / 10)")
    worker = bench_monai.Worker([sys.executable, "-c", code])
    assert worker.ready == {"label": "fake", "warm_s": 0.5}
    assert worker.window(3) == pytest.approx(0.3)
    worker.close()
    assert worker.proc.returncode == 0


def test_worker_that_dies_is_reported():
    worker = bench_monai.Worker([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(SystemExit, match="exit 3"):
        worker.ready
