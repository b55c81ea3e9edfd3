"""`tfbonemet evaluate` on a real run directory and on bare .keras models: files, figures, intervals."""
import json

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


def test_binary_figures_and_intervals(evaluated):
    _, results, _ = evaluated
    assert results["task"] == "binary" and results["split"] == "test"
    default, op = results["thresholds"]["default"], results["thresholds"]["operating_point"]
    assert default["threshold"] == 0.5 and op["method"] == "Youden J" and op["chosen_on"] == "validation"
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
    for target, words in ((tmp_path / "empty", "model.keras is missing"), (tmp_path / "junk.keras", "cannot load")):
        result = CliRunner().invoke(cli, ["evaluate", str(target)])
        assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output
