"""Evaluation report: metrics.json, report.md and the figures of tfbonemet.tasks.evaluate.plots.

The published papers' figures sit beside this run's only as context: they come from other datasets
(other patients, cameras, label definitions and splits), so they are not a benchmark.
"""
from __future__ import annotations

from pathlib import Path

from tfbonemet.io.atomic import write_json, write_text
from tfbonemet.tasks.evaluate.plots import write_plots

# Only figures checked against each paper's abstract; a seed whose figures could not be checked is
# listed in UNVERIFIED instead of given numbers.
PUBLISHED = [
    {"study": "Guo et al. 2023, J Med Biol Eng 43:53 (two-view aggregation)", "task": "binary",
     "data": "whole-body anterior + posterior scans of lung-cancer patients (means reported)",
     "accuracy": 0.7710, "precision": 0.8311, "recall": 0.6827, "f1": 0.7475},
    {"study": "Lin et al. 2021, Sci Rep 11:4223", "task": "binary",
     "data": "thoracic SPECT crops; test samples drawn from the augmented set",
     "accuracy": 0.9807, "precision": 0.9900, "recall": 0.9830, "specificity": 0.9890, "f1": 0.9802,
     "auc": 0.9933},
    {"study": "Lin et al. 2021, Med Phys 48:5782 (Dscint)", "task": "multiclass",
     "data": "whole-body scans, normal / metastasis / arthritis / thyroid carcinoma; test samples drawn from the "
             "augmented set",
     "accuracy": 0.9801, "precision": 0.9795, "recall": 0.9791, "specificity": 0.9933, "f1": 0.9792},
]
UNVERIFIED = ("Yim et al. 2022",)
FIGURE_KEYS = ("accuracy", "precision", "recall", "specificity", "f1", "auc")



def fmt(entry) -> str:
    low, high = entry["ci95"]
    return f"{entry['value']:.3f} ({low:.3f}–{high:.3f})"


def markdown(results: dict, source: str) -> str:
    r, lines = results, []
    data = "synthetic phantom" if r["data"] == "phantom" else r["data"]
    lines += [f"# Evaluation of {source} on the {r['split']} split", "",
              f"Model `{r['model']}` on {data} data, task **{r['task']}** ({', '.join(r['classes'])}); "
              f"{r['n_studies']} studies from {r['n_patients']} patients; class counts {r['class_counts']}.",
              f"95% confidence intervals: percentile bootstrap, {r['bootstrap']['resamples']} resamples of "
              "whole patients.", ""]
    if "thresholds" in r:
        default, op = r["thresholds"]["default"], r["thresholds"]["operating_point"]
        lines += ["## Figures of merit", "",
                  f"| figure | threshold 0.5 | operating point ({op['method']}, t = {op['threshold']:.3f}) |",
                  "|---|---|---|"]
        lines += [f"| {k} | {fmt(default['figures'][k])} | {fmt(op['figures'][k])} |" for k in default["figures"]]
        lines += ["", f"The operating point was chosen on the {op['chosen_on']} split.", ""]
    else:
        lines += ["## Figures of merit", "", "| figure | value (95% CI) |", "|---|---|"]
        lines += [f"| {k.replace('_', ' ')} | {fmt(v)} |" for k, v in r["averages"].items()]
        lines += ["", "### Per class (one-vs-rest)", "",
                  "| class | support | precision | recall | specificity | F1 | ROC AUC | PR AUC |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {c['support']} | {c['precision']:.3f} | {c['recall']:.3f} | {c['specificity']:.3f} "
                  f"| {c['f1']:.3f} | {c['auc']:.3f} | {c['pr_auc']:.3f} |" for name, c in r["per_class"].items()]
        lines += [""]
    cal, scaled = r["calibration"], r["temperature_scaling"]
    lines += ["## Calibration", "",
              f"Expected calibration error {cal['ece']:.3f} ({cal['bins']} equal-width bins), "
              f"Brier score {cal['brier']:.3f}. After temperature scaling (T = {scaled['temperature']:.2f}, fitted "
              f"on the {scaled['fitted_on']} split; it changes no ranking or label): ECE "
              f"{scaled['calibration']['ece']:.3f}, Brier {scaled['calibration']['brier']:.3f}. The model serves the "
              "unscaled probability.", "",
              "![ROC](roc.png) ![Precision-recall](pr.png)", "",
              "![Confusion matrix](confusion_matrix.png) ![Reliability diagram](reliability.png)", ""]
    lines += referral_markdown(r)
    rows = [p for p in PUBLISHED if p["task"] == r["task"]]
    lines += ["## Beside published figures (other datasets — not comparable)", "",
              "The rows below are numbers **reported by other studies on their own, different datasets**; "
              "they give scale, not a benchmark. This run's row is on the data named above"
              + (" (multiclass: macro averages)." if r["task"] != "binary" else "."), "",
              "| source | data | " + " | ".join(FIGURE_KEYS) + " |", "|---" * (len(FIGURE_KEYS) + 2) + "|",
              f"| this run ({source}) | {data}, {r['split']} split | " + " | ".join(
                  f"{r['summary'][k]:.3f}" for k in FIGURE_KEYS) + " |"]
    lines += [f"| {p['study']} | {p['data']} | " + " | ".join(
        f"{p[k]:.3f}" if k in p else "—" for k in FIGURE_KEYS) + " |" for p in rows]
    lines += ["", f"Not listed because their figures could not be checked here: {'; '.join(UNVERIFIED)}.", ""]
    return "\n".join(lines)


REPORTED_COVERAGES = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7)


def referral_markdown(r: dict) -> list[str]:
    """Risk-coverage at a few shares answered, the figures at the stored referral band and the uncertainty."""
    u = r["uncertainty"]
    lines = ["## Uncertainty and referral", "",
             f"Uncertainty (how far a class probability moves under small test-time shifts): median {u['median']:.3f}; "
             f"{u['median_wrong']:.3f} on wrongly called studies, {u['median_right']:.3f} on rightly called ones.", ""]
    if "referral" not in r:
        return lines
    ref, curve = r["referral"], r["referral"]["risk_coverage"]
    lines += [f"Studies answered most-decided first ({ref['ranked_by']}, threshold {ref['threshold']:.3f}); "
              "figures among the answered studies.", "",
              "| share answered | error | sensitivity | specificity |", "|---|---|---|---|"]
    for c in REPORTED_COVERAGES:
        i = curve["coverage"].index(c)
        lines.append(f"| {c:.0%} | " + " | ".join(fmt({"value": curve[k]["value"][i], "ci95": curve[k]["ci95"][i]})
                                                   for k in ("error", "sensitivity", "specificity")) + " |")
    aurc = ref["aurc"]
    spread = f"{aurc['tta_spread']:.4f}" if aurc["tta_spread"] is not None else "not available"
    lines += ["", f"Area under the risk-coverage curve (lower ranks errors better): {aurc['threshold_distance']:.4f} "
                  f"ranked by distance from the threshold, {spread} ranked by the test-time spread.", ""]
    if "band" in ref:
        f = ref["band"]["figures"]
        low, high = ref["band"]["band"]
        lines += [f"At the stored referral band (P(metastasis) in ({low:.3f}, {high:.3f}), chosen on validation; "
                  f"studies inside it are labelled refer): answers {fmt(f['coverage'])} of studies.", "",
                  "| figure | answered studies | all studies |", "|---|---|---|"]
        lines += [f"| {k} | {fmt(f[f'{k}_answered'])} | {fmt(f[f'{k}_all'])} |"
                  for k in ("sensitivity", "specificity", "error")]
        lines += [""]
    else:
        lines += ["The run has no referral band (fit with --refer-coverage or --refer-sensitivity to choose one).", ""]
    return lines + ["![Risk-coverage](risk_coverage.png)", ""]


def write_report(out: Path, results: dict, y, probabilities, source: str, groups=None) -> None:
    """metrics.json, report.md and the four figures in `out`."""
    out = Path(out)
    write_plots(out, results, y, probabilities, groups)
    write_json(out / "metrics.json", results)
    write_text(out / "report.md", markdown(results, source))
