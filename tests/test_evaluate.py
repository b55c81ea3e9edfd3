"""`tfbonemet evaluate` on a real run directory and on bare .keras models: files, figures, intervals."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from tfbonemet.cli import cli

PLOTS = ("roc.png", "pr.png", "confusion_matrix.png", "reliability.png")


@pytest.fixture(scope="module")
def evaluated(tiny_run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    result = CliRunner().invoke(cli, ["evaluate", str(tiny_run_dir), "--split", "test", "--bootstrap", "50",
                                      "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "metrics.json").read_text()), result.output


def test_writes_report_and_figures(evaluated):
    out, results, output = evaluated
    for name in ("metrics.json", "report.md", *PLOTS):
        assert (out / name).stat().st_size > 0
        assert (out / name).read_bytes()[:4] == b"\x89PNG" or not name.endswith(".png")
    assert not list(out.glob("*.part")) and not list(out.glob(".*"))
    report = (out / "report.md").read_text()
    assert "other datasets" in report and "not comparable" in report and "![ROC](roc.png)" in report
    assert "report.md" in output


def test_binary_figures_and_intervals(evaluated, tiny_run_dir):
    _, results, _ = evaluated
    assert results["task"] == "binary" and results["split"] == "test"
    default, op = results["thresholds"]["default"], results["thresholds"]["operating_point"]
    stored = json.loads((tiny_run_dir / "metrics.json").read_text())["operating_point"]
    assert default["threshold"] == 0.5 and op["chosen_on"] == "validation"
    assert (op["method"], op["threshold"]) == (stored["rule"], stored["threshold"])
    for point in (default, op):
        for name in ("accuracy", "precision", "recall", "specificity", "f1", "auc", "pr_auc"):
            entry = point["figures"][name]
            low, high = entry["ci95"]
            if entry["value"] == entry["value"]:  # not NaN
                assert low - 1e-9 <= entry["value"] <= high + 1e-9, name
        assert sum(map(sum, point["confusion_matrix"])) == results["n_studies"]
    assert 0 <= results["calibration"]["ece"] <= 1 and 0 <= results["calibration"]["brier"] <= 1


def test_bare_model_matches_run_directory(tiny_run_dir, evaluated, tmp_path):
    _, from_run, _ = evaluated
    result = CliRunner().invoke(cli, ["evaluate", str(tiny_run_dir / "model.keras"), "--num-studies", "40",
                                      "--bootstrap", "10", "--target-sensitivity", "0.9",
                                      "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    bare = json.loads((tmp_path / "metrics.json").read_text())
    assert bare["summary"]["auc"] == pytest.approx(from_run["summary"]["auc"])
    assert bare["thresholds"]["operating_point"]["method"] == "sensitivity >= 0.9"


def test_multiclass_model(tmp_path):
    from tfbonemet.models import build_model

    path = tmp_path / "four.keras"
    build_model("two_view_net", image_size=(128, 32), num_classes=4, filters=(8, 16)).save(path)
    result = CliRunner().invoke(cli, ["evaluate", str(path), "--num-studies", "40", "--bootstrap", "10"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "eval-test" / "metrics.json").read_text())
    assert results["task"] == "multiclass" and len(results["per_class"]) == 4
    assert set(results["micro"]) >= {"precision", "recall", "f1", "auc"}
    assert "macro_auc" in results["averages"]
    assert "Per class" in (tmp_path / "eval-test" / "report.md").read_text()


def test_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.keras").write_text("not a model")
    for target, words in ((tmp_path / "empty", "model.keras is missing"), (tmp_path / "junk.keras", "not a Keras model file")):
        result = CliRunner().invoke(cli, ["evaluate", str(target)])
        assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output


@pytest.fixture(scope="module")
def binary_results():
    import numpy as np

    from tfbonemet import metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p = np.clip(0.3 * y + 0.7 * rng.random(60), 0, 1)
    probabilities = np.stack([1 - p, p], 1)
    results = {"classes": ["no_metastasis", "metastasis"], "calibration": metrics.calibration(y, probabilities),
               "bootstrap": {"resamples": 50},
               "thresholds": {"default": {"threshold": 0.5, "confusion_matrix": [[20, 5], [3, 32]]},
                              "operating_point": {"threshold": 0.41, "method": "max_f1", "chosen_on": "validation",
                                                  "confusion_matrix": [[18, 7], [1, 34]]}}}
    return y, probabilities, results


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_roc_band_n_and_both_operating_points(binary_results):
    from tfbonemet.tasks.evaluate import plots

    y, probabilities, results = binary_results
    fig = plots.roc_figure(y, probabilities, results["classes"], groups=range(len(y)),
                           thresholds=plots.operating_points(results), n_resamples=50)
    ax = fig.axes[0]
    assert ax.get_xlabel() == plots.FPR_LABEL and ax.get_ylabel() == plots.TPR_LABEL
    assert f"n = {len(y)} studies, {int(y.sum())} positive" in ax.get_title()
    legend = _legend(ax)
    assert "threshold 0.5" in legend and any(t.startswith("stored threshold 0.410 (max_f1") for t in legend)
    assert any("95% band" in t for t in legend) and ax.collections  # the band is drawn
    markers = [line for line in ax.lines if line.get_marker() in plots.MARKERS]
    assert len(markers) == 2


def test_pr_prevalence_baseline(binary_results):
    from tfbonemet.tasks.evaluate import plots

    y, probabilities, results = binary_results
    ax = plots.pr_figure(y, probabilities, results["classes"], plots.operating_points(results)).axes[0]
    assert ax.get_xlabel() == "recall (sensitivity)" and ax.get_ylabel().startswith("precision")
    baseline = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert len(baseline) == 1 and np.allclose(baseline[0].get_ydata(), y.mean())
    assert any(t.startswith(f"prevalence {y.mean():.2f}") for t in _legend(ax))


def test_reliability_shows_per_bin_counts_and_histogram(binary_results):
    from tfbonemet.tasks.evaluate import plots

    _, _, results = binary_results
    calibration = results["calibration"]
    fig = plots.reliability_figure(calibration, binary=True)
    diagram, histogram = fig.axes
    counts = [n for n in calibration["bin_counts"] if n]
    assert [t.get_text() for t in diagram.texts] == [f"n={n}" for n in counts]
    assert [round(p.get_height()) for p in histogram.patches] == calibration["bin_counts"]
    assert histogram.get_xlabel() == "predicted probability of metastasis" and histogram.get_ylabel() == "studies"


def test_confusion_matrices_at_both_thresholds_with_readable_names(binary_results, tmp_path):
    from tfbonemet.tasks.evaluate import plots

    y, probabilities, results = binary_results
    written = plots.write_plots(tmp_path, results, y, probabilities)
    assert [p.name for p in written] == list(plots.PLOT_FILES)
    fig = plots.confusion_figure({"threshold 0.5": [[20, 5], [3, 32]], "stored threshold 0.410": [[18, 7], [1, 34]]},
                                 results["classes"])
    left, right = fig.axes[:2]
    assert (left.get_title(), right.get_title()) == ("threshold 0.5", "stored threshold 0.410")
    assert [t.get_text() for t in left.get_yticklabels()] == ["no metastasis", "metastasis"]
    assert left.get_xlabel() == "predicted label" and "20\n(80%)" in [t.get_text() for t in left.texts]


def test_risk_coverage_and_temperature_scaling(evaluated, tiny_run_dir):
    out, results, output = evaluated
    ref = results["referral"]
    curve = ref["risk_coverage"]
    assert curve["coverage"][-1] == 1.0 and len(curve["error"]["value"]) == len(curve["coverage"])
    accuracy = results["thresholds"]["operating_point"]["figures"]["accuracy"]["value"]
    assert curve["error"]["value"][-1] == pytest.approx(1 - accuracy)  # all answered: the operating point's error
    assert "band" not in ref and (out / "risk_coverage.png").read_bytes()[:4] == b"\x89PNG"
    stored = json.loads((tiny_run_dir / "metrics.json").read_text())["calibration"]
    scaled = results["temperature_scaling"]
    assert scaled["temperature"] == pytest.approx(stored["temperature"]) and scaled["fitted_on"] == "validation"
    assert results["summary"]["ece_scaled"] == scaled["calibration"]["ece"]
    assert 0 <= results["uncertainty"]["median"] <= 1
    report = (out / "report.md").read_text()
    assert "After temperature scaling" in report and "no referral band" in report and "risk_coverage.png" in report
    assert "after temperature" in output


def test_risk_coverage_figure_marks_the_band_and_both_rankings(binary_results):
    import numpy as np

    from tfbonemet import referral
    from tfbonemet.tasks.evaluate import coverage, plots

    y, probabilities, _ = binary_results
    p = probabilities[:, 1]
    spread = np.abs(p - 0.41)[::-1]  # any score: the figure draws what it is given
    results = coverage.coverage_results(y, p, spread, np.arange(len(y)), 0.41, referral.band(0.41, 0.5), 20)
    assert results["band"]["figures"]["coverage"]["value"] == pytest.approx(np.mean(~referral.referred(
        p, referral.band(0.41, 0.5))))
    ax = plots.risk_coverage_figure(results, "test").axes[0]
    legend = _legend(ax)
    assert {"error among answered", "sensitivity among answered", "specificity among answered"} <= set(legend)
    assert any(t.startswith("stored referral band") for t in legend)
    assert "error, answered by lowest test-time spread" in legend and len(ax.collections) == 3
