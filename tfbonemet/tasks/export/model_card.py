"""metadata.json and MODEL_CARD.md, laid out like a MONAI bundle's configs/metadata.json and model card.

The machine-readable metadata is built first and the Markdown card is rendered from it, so the two
never disagree. Both hold counts and settings only: no patient identifiers and no local paths.
Metrics are the test split's, with their 95% CIs, when `tfbonemet evaluate` ran on this very model
file; otherwise the card says in so many words that there is no test evaluation, and the
validation figures are labelled as the split that also chose the best epoch and the threshold.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import platform
from pathlib import Path

import numpy as np

from tfbonemet.data import datasets
from tfbonemet.io.integrity import digest
from tfbonemet.vocab import SPLITS

SCHEMA = "tfbonemet model card 1 (after MONAI bundle metadata.json)"
DEFAULT_LICENSE = "Apache-2.0"
SHIPPED_NOT = ("output_dir", "run_name", "data", "data_dir", "manual_dir", "init_backbone")  # paths stay home
REFERENCES = (
    "Guo et al. 2023, J Med Biol Eng 43:53: two-view (anterior + posterior) aggregation network for whole-body "
    "bone scans",
    "Lin et al. 2021, Sci Rep 11:4223: thoracic SPECT bone-scan classification by transfer learning",
    "Yim et al. 2022: VGG16 transfer learning with Grad-CAM on bone scans (journal details not checked here)",
    "Lin et al. 2021, Med Phys 48:5782: Dscint, a CNN with hybrid channel + spatial attention, four classes",
    "Wang et al. 2018: ResNet fine-tuning on multi-phase images (journal details not checked here)",
)
INTENDED_USE = ("Research and clinical decision support: flags whole-body bone scintigraphy studies for a "
                "nuclear-medicine physician's review. Not a stand-alone diagnosis; every result must be read "
                "by a qualified physician together with the images and the clinical history.")
OUT_OF_SCOPE = (
    "Stand-alone diagnosis, triage without a physician, or any decision made on the probability alone.",
    "SPECT or SPECT/CT volumes, PET, tracers other than Tc-99m bisphosphonates, paediatric patients.",
    "Counting, staging or localising lesions: the model gives one probability per study; heat maps explain a "
    "prediction, they are not lesion detections.",
    "Sites, cameras or populations it was not validated on, until the operating threshold is re-checked there.",
)
PHANTOM_LIMITATION = ("Trained on the built-in synthetic phantom set: it has never seen a patient's scan and "
                      "its figures say nothing about clinical performance.")
LIMITATIONS = (
    "Planar Tc-99m bisphosphonate whole-body views only; not validated for SPECT, other tracers or paediatric scans.",
    "Degenerative disease, fractures and injection artefacts can look like metastases and the reverse.",
    "Probabilities are not calibrated for a new site or camera; re-check the operating point locally.",
    "Quantised TFLite variants trade a little agreement with the Keras model for speed (see parity).",
)
DATA_SOURCES = {
    "phantom": ("built-in synthetic bone-scan phantom (tfbonemet.data.phantom), deterministic by seed; no patient "
                "data", "ground truth by construction: the generator draws every metastatic focus and records its "
                       "box; a study is labelled metastatic when it holds at least one focus"),
    "tfds": ("a TFDS dataset built by `tfbonemet data build` from the user's own studies (DICOM + labels.csv, the "
             "BS-80K folder layout, or manifest.csv)",
             "as supplied with the data: labels.csv or manifest.csv labels given by the user's site, or for BS-80K "
             "physicians' lesion boxes drawn per view (image reading, not pathology); check how your labels were "
             "made before trusting the figures"),
}
NO_TEST = ("No test evaluation of this model file: run `tfbonemet evaluate RUN_DIR` before exporting. The "
           "validation figures below come from the split that also chose the best epoch and the operating "
           "threshold, so they are optimistic.")


@dataclasses.dataclass(frozen=True)
class Release:
    """Who publishes this export, under which terms, and what changed (export's --author/--license/--note)."""

    authors: tuple[str, ...] = ()
    license: str = DEFAULT_LICENSE
    copyright: str | None = None
    note: str | None = None


def framework_versions() -> dict[str, str]:
    import importlib.metadata

    import keras
    import tensorflow as tf

    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"
    return {"tfbonemet": version("tfbonemet"), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def interface(card: dict) -> str:
    """What a caller depends on: inputs, outputs, preprocessing and classes (a change is a major version)."""
    return json.dumps([card.get(k) for k in ("network_data_format", "preprocessing", "classes", "task")],
                      sort_keys=True, default=str)


def release_version(card: dict, previous: dict | None, note: str | None) -> tuple[str, dict]:
    """(semantic version, changelog): major when the interface changed, minor for new weights, patch for a
    re-export of the same model file; the previous version's changelog carried over."""
    if not previous or "version" not in previous:
        return "1.0.0", {"1.0.0": note or f"first export of run {card['source_run']}"}
    major, minor, patch = (int(v) for v in previous["version"].split("."))
    if interface(card) != interface(previous):
        version, what = f"{major + 1}.0.0", "inputs, outputs, preprocessing or classes changed"
    elif card["model_sha256"] != previous.get("model_sha256"):
        version, what = f"{major}.{minor + 1}.0", f"new weights (run {card['source_run']})"
    else:
        version, what = f"{major}.{minor}.{patch + 1}", "same weights, exported again"
    return version, {version: note or what, **previous.get("changelog", {})}


def model_card_metadata(run, info, release: Release = Release(), previous: dict | None = None) -> dict:
    """A MONAI-bundle-style description a machine can read; counts and settings only, no identifiers."""
    p = info.preprocessor
    names = p.input_names
    raw = {"type": "image", "format": "counts", "modality": "NM", "num_channels": 1, "spatial_shape": ["*", "*"],
           "dtype": "float32", "value_range": [0, 65535], "is_patch_data": False, "channel_def": {"0": "counts"}}
    classes = {str(i): c for i, c in enumerate(info.classes)}
    source = "phantom" if run.config.data == "phantom" else "tfds"
    today = dt.date.today()
    card = {
        "schema": SCHEMA,
        "name": run.model.name,
        "task": run.config.task,
        "description": "Bone-metastasis classifier for whole-body bone scintigraphy (anterior + posterior views)"
                       if p.views == "two_view" else "Bone-metastasis classifier for a single planar bone-scan view",
        "source_run": run.path.name if run.path else Path(run.model_path).name,
        "model_sha256": digest(run.model_path),
        "exported": today.isoformat(),
        "framework_versions": framework_versions(),
        "authors": list(release.authors) or ["not stated: pass --author to `tfbonemet export`"],
        "copyright": release.copyright or f"Copyright (c) {today.year} "
                                          + (", ".join(release.authors) or "the model's authors"),
        "license": release.license,
        "references": list(REFERENCES),
        "network_data_format": {
            "inputs": {n: {**raw, "view": view, "mirrored_inside": p.mirrors(view)}
                       for n, view in zip(names, info.data_views)},
            "outputs": {
                "probabilities": {"type": "probabilities", "format": "classes", "num_channels": len(info.classes),
                                  "spatial_shape": [], "dtype": "float32", "value_range": [0, 1],
                                  "channel_def": classes},
                "uncertainty": {"type": "spread", "dtype": "float32", "value_range": [0, 1],
                                "definition": "largest change of any class probability when the scan is shifted by "
                                              f"{run.config.uncertainty_shift:g} of its height or width "
                                              "(tfbonemet.models.tta)"},
                "label": {"type": "class_index", "dtype": "int64",
                          "channel_def": {str(i): c for i, c in enumerate(info.label_names)}}},
            "tflite_inputs": {n: {"dtype": "float32 (int8 in tflite/int8.tflite)", "value_range": [0, 1],
                                  "spatial_shape": list(p.image_size), "num_channels": 1}
                              for n in names},
        },
        **info.to_json(),
        "operating_point": run.metrics.get("operating_point", {"threshold": info.threshold}),
        "referral": run.metrics.get("referral"),
        "calibration": run.metrics.get("calibration"),
        "training_data": {"source": DATA_SOURCES[source][0], "labels": DATA_SOURCES[source][1],
                          **training_summary(run)},
        "training": {k: v for k, v in dataclasses.asdict(run.config).items() if k not in SHIPPED_NOT},
        "precision": precision_entry(run),
        "metrics": run_metrics(run.path, digest(run.model_path)),
        "intended_use": INTENDED_USE,
        "out_of_scope_use": list(OUT_OF_SCOPE),
        "limitations": [PHANTOM_LIMITATION] * (source == "phantom") + list(LIMITATIONS),
        "how_to_load": {
            "keras": "import tfbonemet; model = tfbonemet.load_model('model.keras')  (plain keras.models.load_model "
                     "needs `import tfbonemet.models.layers` first: the custom layers register on import)",
            "savedmodel": "tf.saved_model.load(VERSION_DIR).signatures['serving_default'](anterior=..., posterior=...)",
            "tflite": "ai_edge_litert.interpreter.Interpreter(model_path=...).get_signature_runner('preprocessed'); "
                      "the preprocessing to apply first is in this file and inside each .tflite (metadata "
                      "'tfbonemet')"},
    }
    card["version"], card["changelog"] = release_version(card, previous, release.note)
    return card


def precision_entry(run) -> dict:
    """The precision the weights were trained in, the one every artefact computes in, and the one the stored
    threshold and validation figures were computed in (metrics.json; runs before it was recorded: training's)."""
    training, serving = run.training_precision, run.serving_precision
    chosen = run.metrics.get("inference_precision", training)
    if training == serving:
        note = f"Trained and served in {serving}"
    else:
        note = (f"Trained in {training} (float32 weights, {training.split('_')[-1]} computation); every artefact "
                f"computes in {serving} with those weights, and the parity below is against those {serving} outputs")
        note += ("; the operating threshold and the validation figures were computed on them too"
                 if chosen == serving else f"; the stored operating threshold was chosen on {chosen} outputs (a run "
                 f"from an earlier version): re-choose it with `tfbonemet evaluate --target-sensitivity`")
    return {"training": training, "serving": serving, "threshold_chosen_in": chosen, "note": note}


def training_summary(run) -> dict:
    out = {"split": "by patient (keyed pseudonym), stratified by label", "splits": {}}
    for split in SPLITS:
        studies = datasets.open_split(run.config, split)
        counts = np.bincount(studies.task_labels(run.config.task), minlength=len(run.classes))
        out["splits"][split] = {"studies": len(studies), "patients": int(len(np.unique(studies.patients))),
                                "per_class": dict(zip(run.classes, counts.tolist()))}
    return out


def run_metrics(run_dir: Path | None, model_sha256: str | None = None) -> dict:
    """Test figures with 95% CIs from RUN/eval-test/metrics.json when it evaluated this model file; else an
    explicit statement that there is none; and the validation figures from training, labelled as such."""
    out = {}
    if run_dir is None:
        return {"statement": NO_TEST}
    path = Path(run_dir) / "eval-test" / "metrics.json"
    if path.is_file():
        m = json.loads(path.read_text())
        if model_sha256 is None or m.get("model_sha256") == model_sha256:
            point = m.get("thresholds", {}).get("operating_point")
            figures = point["figures"] if point else m.get("averages", {})
            out["test"] = {"split": "test", "n": m.get("n_studies"), "patients": m.get("n_patients"),
                           "threshold": point["threshold"] if point else None,
                           "ci": "95% percentile bootstrap over patients", "figures": figures}
            if "band" in m.get("referral", {}):
                out["test"]["referral_band"] = m["referral"]["band"]["figures"]
    if "test" not in out:
        out["statement"] = NO_TEST
    path = Path(run_dir) / "metrics.json"
    if path.is_file():
        m = json.loads(path.read_text())
        out["validation"] = {"split": "validation", "n": m.get("n"),
                             "note": "also chose the best epoch and the operating threshold: optimistic",
                             "figures": {k: m[k] for k in ("accuracy", "precision", "recall", "specificity", "f1",
                                                           "auc") if k in m}}
    return out


def figure_text(value) -> str:
    if isinstance(value, dict) and "value" in value:
        low, high = value.get("ci95", (None, None))
        return f"{value['value']:.3f}" + (f" (95% CI {low:.3f}–{high:.3f})" if low is not None else "")
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _metrics_lines(metrics: dict) -> list[str]:
    lines = []
    if "statement" in metrics:
        lines += [f"**{metrics['statement']}**", ""]
    for key in ("test", "validation"):
        if key in metrics:
            m = metrics[key]
            extra = f", threshold {m['threshold']:.3f}" if m.get("threshold") is not None else ""
            lines.append(f"- {key} split (n = {m['n']}{extra}{'; ' + m['note'] if m.get('note') else ''}"
                         f"{'; ' + m['ci'] if m.get('ci') else ''}): "
                         + (", ".join(f"{k} {figure_text(v)}" for k, v in m["figures"].items()) or "none recorded"))
    return lines


def _referral_lines(card: dict) -> list[str]:
    """The referral band with its validation (and test, if evaluated) figures, and the fitted temperature."""
    chosen, lines = card.get("referral"), []
    if not chosen or not chosen.get("band"):
        lines.append("No referral band: every study is answered (fit with --refer-coverage or --refer-sensitivity to "
                     "choose one on validation).")
    else:
        low, high = chosen["band"]
        f = chosen["figures"]
        lines.append(f"Studies with {low:.3f} < P(metastasis) < {high:.3f} are labelled refer (band chosen on "
                     f"{chosen['chosen_on']} for {chosen['rule']} {chosen['target']:g}). On validation it answers "
                     f"{f['coverage']:.0%} of studies: sensitivity {f['sensitivity_answered']:.3f} among answered vs "
                     f"{f['sensitivity_all']:.3f} among all, specificity {f['specificity_answered']:.3f} vs "
                     f"{f['specificity_all']:.3f}.")
        test = card.get("metrics", {}).get("test", {}).get("referral_band")
        if test:
            lines.append(f"On the test split: answers {figure_text(test['coverage'])}; sensitivity "
                         f"{figure_text(test['sensitivity_answered'])} among answered vs "
                         f"{figure_text(test['sensitivity_all'])} among all; specificity "
                         f"{figure_text(test['specificity_answered'])} vs {figure_text(test['specificity_all'])}.")
    cal = card.get("calibration")
    if cal:
        lines.append(f"Calibration on validation: ECE {cal['ece']:.3f}; {cal['ece_scaled']:.3f} after temperature "
                     f"scaling (T = {cal['temperature']:.2f}), which the model does not apply: it serves the "
                     "unscaled probability its threshold was chosen on.")
    return lines


def render_model_card(card: dict) -> str:
    """MODEL_CARD.md from the metadata."""
    lines = [f"# Model card: {card['name']} {card['version']}", "", card["description"] + ".", "",
             f"Exported {card['exported']} from run `{card['source_run']}`. Authors: {', '.join(card['authors'])}. "
             f"{card['copyright']}. License: {card['license']}.", "",
             "## Intended use", "", card["intended_use"], "", "## Out-of-scope use", ""]
    lines += [f"- {item}" for item in card["out_of_scope_use"]] + ["", "## Inputs", ""]
    for name, spec in card["network_data_format"]["inputs"].items():
        lines.append(f"- `{name}`: {spec['modality']} {spec['view']} view, {spec['num_channels']} channel, any "
                     f"height x width, {spec['dtype']} counts in [0, 65535]"
                     + (" (as acquired; mirrored inside the model)" if spec["mirrored_inside"] else ""))
    pre = card["preprocessing"]
    mirrored = "posterior mirrored, " if pre["mirror_posterior"] else ""
    lines += ["", f"Inside the SavedModel: {mirrored}resized with padding to {pre['image_size'][0]}x"
              f"{pre['image_size'][1]}, {pre['steps'][-1]} (to [0, 1]). TFLite files take that preprocessed "
              "tensor; each "
              "carries this description in its metadata (`tfbonemet`).",
              "", "## Outputs", "",
              f"- `probabilities`: float32, one per class ({', '.join(card['classes'])})",
              "- `label`: int64 class index" + (f": metastasis when P(metastasis) >= {card['threshold']:.3f}, the "
                                                 f"operating threshold chosen on validation "
                                                 f"({card['operating_point'].get('rule', 'default')})"
                                                 if card.get("threshold") is not None else " of the most probable class")
              + (f"; 2 (refer) when {card['referral_band'][0]:.3f} < P(metastasis) < {card['referral_band'][1]:.3f}"
                 if card.get("referral_band") else ""),
              f"- `uncertainty`: float32, the {card['network_data_format']['outputs']['uncertainty']['definition']}",
              "", "## Referral and calibration", ""] + _referral_lines(card) + [
              "", "## Precision", "",
              f"Training: {card['precision']['training']}. Serving: {card['precision']['serving']}. "
              f"{card['precision']['note']}. The float16 and int8 TFLite "
              "files quantise these weights further (see the parity table).",
              "", "## Training data", ""]
    data = card["training_data"]
    lines += [f"Source: {data['source']}. Labels: {data['labels']}. Split {data['split']}.", "",
              "| split | studies | patients | " + " | ".join(card["classes"]) + " |",
              "|---|---|---|" + "---|" * len(card["classes"])]
    for split, s in data["splits"].items():
        lines.append(f"| {split} | {s['studies']} | {s['patients']} | "
                     + " | ".join(str(s["per_class"][c]) for c in card["classes"]) + " |")
    lines += ["", "## Metrics", ""] + _metrics_lines(card["metrics"])
    lines += ["", "## Export parity (validation split, against the Keras model)", "",
              "| artefact | n | max abs Δp | ΔAUC | tolerance (Δp / ΔAUC) | verdict |", "|---|---|---|---|---|---|"]
    for name, r in card.get("parity", {}).items():
        lines.append(f"| {name} | {r['n']} | {r['max_abs_diff']:.2e} | {r['auc_diff']:+.4f} | "
                     f"{r['tolerance']['max_abs_diff']:g} / {r['tolerance']['auc_diff']:.3g} | {r['verdict']} |")
    lines += ["", "## Limitations", ""] + [f"- {item}" for item in card["limitations"]]
    lines += ["", "## How to load", ""] + [f"- {k}: `{v}`" for k, v in card["how_to_load"].items()]
    lines += ["", "## Framework versions", "", ", ".join(f"{k} {v}" for k, v in card["framework_versions"].items())]
    lines += ["", "## References", ""] + [f"- {r}" for r in card["references"]]
    lines += ["", "## Changelog", ""] + [f"- {v}: {note}" for v, note in card["changelog"].items()] + [""]
    return "\n".join(lines)
