"""bench/bench_real.py's deep ensemble over cross-validations of several seeds, on written CV folders (no training)."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_real  # noqa: E402

COLUMNS = ("study", "patient", "fold", "label", "probability", "uncertainty", "threshold", "refer", "temperature")


def write_cv(folder: Path, probabilities: list[float], threshold: float, band, fit_seconds: float) -> Path:
    """A CV folder as `tfbonemet cv` leaves it: predictions.csv, cv.json and each fold's metrics.json."""
    from tfbonemet.tasks.cv import pooled_figures

    rows = [{"study": f"s{i}", "patient": f"p{i}", "fold": i % 2, "label": i % 2, "probability": p,
             "uncertainty": 0.01, "threshold": threshold, "refer": int(band[0] < p < band[1]), "temperature": 1.5}
            for i, p in enumerate(probabilities)]
    for fold in (0, 1):
        (folder / f"fold-{fold}").mkdir(parents=True)
        (folder / f"fold-{fold}" / "metrics.json").write_text(json.dumps({"referral": {"band": list(band)}}))
    with (folder / "predictions.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    per_fold = [{"fit_seconds": fit_seconds, "predict_seconds": 0.5, "predict_seconds_without_uncertainty": 0.1}] * 2
    (folder / "cv.json").write_text(json.dumps({"per_fold": per_fold, "pooled": pooled_figures(rows, 20)}))
    return folder


def test_ensemble_averages_each_study_and_refers_inside_the_mean_band(tmp_path):
    a = bench_real.member_rows(write_cv(tmp_path / "a", [0.1, 0.9, 0.45, 0.6, 0.2, 0.8], 0.5, (0.4, 0.6), 60))
    b = bench_real.member_rows(write_cv(tmp_path / "b", [0.3, 0.7, 0.35, 0.4, 0.2, 0.6], 0.3, (0.2, 0.5), 120))
    rows = {r["study"]: r for r in bench_real.ensemble_rows([a, b])}
    assert rows["s2"]["probability"] == pytest.approx(0.4) and rows["s2"]["threshold"] == pytest.approx(0.4)
    assert rows["s2"]["refer"] == 1  # 0.4 inside the mean band (0.3, 0.55)
    assert rows["s1"]["refer"] == 0 and rows["s1"]["probability"] == pytest.approx(0.8)
    assert rows["s0"]["temperature"] == 1.5 and rows["s0"]["label"] == 0


def test_ensemble_report_prints_one_model_against_the_ensemble_and_the_cost(tmp_path, capsys):
    write_cv(tmp_path / "a", [0.1, 0.9, 0.45, 0.6, 0.2, 0.8], 0.5, (0.4, 0.6), 60)
    write_cv(tmp_path / "b", [0.3, 0.7, 0.35, 0.4, 0.2, 0.6], 0.3, (0.2, 0.5), 120)
    bench_real.report_ensemble([tmp_path / "a", tmp_path / "b"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("one model: ROC AUC") and "fit 1.0 min per fold" in lines[0]
    assert lines[2].startswith("ensemble of 2: ROC AUC") and "fit 3.0 min per fold" in lines[2]
    assert "predict 333.3 ms per study (66.7 without" in lines[2]  # two members, 2 x 0.5 s over 6 studies each
    assert all("after temperature scaling" in line and "among answered" in line for line in lines[1::2])
